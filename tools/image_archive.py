"""Write a container image as a ``docker save`` archive from root-filesystem directories, reproducibly.

``k8s/local/build-image.sh`` builds the image's file trees without Docker
(a debootstrapped Debian base and the service's virtualenv) and hands them
here; the archive this writes loads with ``ctr images import``,
``docker load`` and ``podman load``. No registry is involved.

Same trees and options, same bytes: every layer lists its entries in
sorted path order, with every modification time set to ``--epoch`` (the
``SOURCE_DATE_EPOCH`` convention), numeric owners and no user or group
names, and the JSON documents are written with sorted keys. So the
image's ID (its config's SHA-256) and the digest containerd gives it
depend on the content alone.

Usage::

    python tools/image_archive.py OUT.tar --ref NAME:TAG --layer DIR [--layer DIR ...]
        [--entrypoint JSON] [--cmd JSON] [--env K=V ...] [--user UID:GID]
        [--workdir DIR] [--label K=V ...] [--epoch SECONDS]

It prints the image ID, then each layer's diff ID.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import stat
import sys
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

#: The default image creation time and entry mtime: 2000-01-01T00:00:00Z (any fixed value would do).
DEFAULT_EPOCH = 946684800
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class ImageConfig:
    """What the image runs, as the OCI image config's ``config`` object holds it."""

    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    user: str = ""
    workdir: str = "/"
    labels: dict[str, str] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        env = list(self.env)
        if not any(entry.startswith("PATH=") for entry in env):
            env.insert(0, f"PATH={DEFAULT_PATH}")
        document: dict[str, Any] = {"Env": env, "WorkingDir": self.workdir}
        if self.entrypoint:
            document["Entrypoint"] = list(self.entrypoint)
        if self.cmd:
            document["Cmd"] = list(self.cmd)
        if self.user:
            document["User"] = self.user
        if self.labels:
            document["Labels"] = dict(self.labels)
        return document


@dataclass(frozen=True)
class WrittenImage:
    """The identities of a written archive."""

    image_id: str
    diff_ids: tuple[str, ...]


def _walk(root: Path) -> Iterator[Path]:
    """Every path under ``root`` (not ``root`` itself), a directory before its entries, names sorted."""
    with os.scandir(root) as entries:
        names = sorted(entry.name for entry in entries)
    for name in names:
        path = root / name
        yield path
        if path.is_dir() and not path.is_symlink():
            yield from _walk(path)


def _normalized(info: tarfile.TarInfo, epoch: int) -> tarfile.TarInfo:
    info.mtime = epoch
    info.uname = ""
    info.gname = ""
    info.pax_headers = {}
    return info


def write_layer(root: Path, out: BinaryIO, epoch: int) -> None:
    """Write the tree under ``root`` to ``out`` as an uncompressed layer tar, reproducibly.

    Owners and permission bits are kept as they are on disk (numerically);
    hard links stay hard links; sockets are left out (they cannot be archived).
    """
    hardlinks: dict[tuple[int, int], str] = {}
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as layer:
        for path in _walk(root):
            st = path.lstat()
            if stat.S_ISSOCK(st.st_mode):
                continue
            name = path.relative_to(root).as_posix()
            info = layer.gettarinfo(str(path), arcname=name)
            info = _normalized(info, epoch)
            if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                key = (st.st_dev, st.st_ino)
                if key in hardlinks:
                    info.type = tarfile.LNKTYPE
                    info.linkname = hardlinks[key]
                    info.size = 0
                    layer.addfile(info)
                    continue
                hardlinks[key] = name
            if info.isreg():
                with path.open("rb") as content:
                    layer.addfile(info, content)
            else:
                layer.addfile(info)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as content:
        for chunk in iter(lambda: content.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _json_bytes(document: object) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def _add_member(
    archive: tarfile.TarFile, name: str, epoch: int, data: bytes | None = None, path: Path | None = None
) -> None:
    info = tarfile.TarInfo(name)
    info.mtime = epoch
    info.mode = 0o644
    if data is not None:
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    else:
        assert path is not None
        info.size = path.stat().st_size
        with path.open("rb") as content:
            archive.addfile(info, content)


def write_image(
    out: Path,
    ref: str,
    layers: Sequence[Path],
    config: ImageConfig,
    *,
    epoch: int = DEFAULT_EPOCH,
    architecture: str = "amd64",
) -> WrittenImage:
    """Write a ``docker save`` archive of ``layers`` (lowest first) named ``ref`` to ``out``."""
    repository, sep, tag = ref.rpartition(":")
    if not sep or not repository or "/" in tag:
        raise ValueError("an image reference is NAME:TAG")
    with tempfile.TemporaryDirectory(prefix="image-archive-") as scratch:
        layer_files: list[tuple[str, Path]] = []
        for index, root in enumerate(layers):
            layer_path = Path(scratch) / f"layer{index}.tar"
            with layer_path.open("wb") as layer_out:
                write_layer(root, layer_out, epoch)
            layer_files.append((_sha256_file(layer_path), layer_path))
        created = datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        image_config = {
            "architecture": architecture,
            "os": "linux",
            "created": created,
            "config": config.as_json(),
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{digest}" for digest, _ in layer_files]},
            "history": [{"created": created, "created_by": "tools/image_archive.py"} for _ in layer_files],
        }
        config_bytes = _json_bytes(image_config)
        image_id = hashlib.sha256(config_bytes).hexdigest()
        manifest = [
            {
                "Config": f"{image_id}.json",
                "RepoTags": [ref],
                "Layers": [f"{digest}/layer.tar" for digest, _ in layer_files],
            }
        ]
        top_layer = layer_files[-1][0]
        repositories = {repository: {tag: top_layer}}
        partial = out.with_name(out.name + ".partial")
        with tarfile.open(partial, mode="w", format=tarfile.PAX_FORMAT) as archive:
            _add_member(archive, f"{image_id}.json", epoch, data=config_bytes)
            for digest, layer_path in layer_files:
                _add_member(archive, f"{digest}/layer.tar", epoch, path=layer_path)
            _add_member(archive, "manifest.json", epoch, data=_json_bytes(manifest))
            _add_member(archive, "repositories", epoch, data=_json_bytes(repositories))
        partial.replace(out)
    return WrittenImage(f"sha256:{image_id}", tuple(f"sha256:{digest}" for digest, _ in layer_files))


def _pairs(values: Sequence[str], what: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep or not key:
            raise SystemExit(f"a {what} is KEY=VALUE")
        pairs[key] = rest
    return pairs


def _json_list(text: str | None) -> tuple[str, ...]:
    if text is None:
        return ()
    value = json.loads(text)
    if not (isinstance(value, list) and all(isinstance(item, str) for item in value)):
        raise SystemExit("--entrypoint and --cmd take a JSON list of strings")
    return tuple(value)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("out", type=Path, help="the archive to write")
    parser.add_argument("--ref", required=True, help="the image's NAME:TAG")
    parser.add_argument(
        "--layer",
        action="append",
        type=Path,
        required=True,
        help="a layer's root directory (lowest first; repeat)",
    )
    parser.add_argument("--entrypoint", help="JSON list")
    parser.add_argument("--cmd", help="JSON list")
    parser.add_argument("--env", action="append", default=[], help="K=V (repeat)")
    parser.add_argument("--user", default="", help="UID:GID the image runs as")
    parser.add_argument("--workdir", default="/")
    parser.add_argument("--label", action="append", default=[], help="K=V (repeat)")
    parser.add_argument(
        "--epoch",
        type=int,
        default=int(os.environ.get("SOURCE_DATE_EPOCH", DEFAULT_EPOCH)),
        help="entry mtimes and creation time (default: $SOURCE_DATE_EPOCH or 2000-01-01)",
    )
    args = parser.parse_args(argv)
    _pairs(args.env, "--env")
    config = ImageConfig(
        entrypoint=_json_list(args.entrypoint),
        cmd=_json_list(args.cmd),
        env=tuple(args.env),
        user=args.user,
        workdir=args.workdir,
        labels=_pairs(args.label, "--label"),
    )
    written = write_image(args.out, args.ref, args.layer, config, epoch=args.epoch)
    print(written.image_id)
    for diff_id in written.diff_ids:
        print(diff_id)
    return 0


if __name__ == "__main__":
    sys.exit(main())
