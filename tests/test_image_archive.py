"""tools/image_archive.py: a loadable ``docker save`` archive, byte-identical for the same content."""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from pathlib import Path

import pytest

from tools.image_archive import ImageConfig, main, write_image

CONFIG = ImageConfig(
    entrypoint=("/opt/app/bin/privproc",),
    cmd=("--help",),
    env=("PYTHONUNBUFFERED=1",),
    user="10001:10001",
)


def make_tree(root: Path, mtime: int, order: list[str]) -> None:
    """The same files, created in ``order`` with every mtime at ``mtime``."""
    contents = {
        "etc/passwd": b"root:x:0:0::/root:/bin/sh\n",
        "opt/app/bin/privproc": b"#!/x\n",
        "opt/app/lib/a.py": b"A = 1\n",
    }
    for name in order:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(contents[name])
    (root / "opt/app/bin/privproc").chmod(0o755)
    os.link(root / "opt/app/lib/a.py", root / "opt/app/lib/b.py")
    (root / "opt/app/bin/python3").symlink_to("/usr/bin/python3")
    for path in [root, *root.rglob("*")]:
        os.utime(path, (mtime, mtime), follow_symlinks=False)


def test_same_content_same_bytes_whatever_the_mtimes_and_creation_order(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    make_tree(first, 1_700_000_000, ["etc/passwd", "opt/app/bin/privproc", "opt/app/lib/a.py"])
    make_tree(second, 1_800_000_000, ["opt/app/lib/a.py", "opt/app/bin/privproc", "etc/passwd"])

    one = write_image(tmp_path / "one.tar", "localhost/privproc:t", [first], CONFIG)
    two = write_image(tmp_path / "two.tar", "localhost/privproc:t", [second], CONFIG)

    assert one == two
    assert (tmp_path / "one.tar").read_bytes() == (tmp_path / "two.tar").read_bytes()


def test_a_changed_file_changes_the_image_id(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    make_tree(tree, 1_700_000_000, ["etc/passwd", "opt/app/bin/privproc", "opt/app/lib/a.py"])
    before = write_image(tmp_path / "a.tar", "localhost/privproc:t", [tree], CONFIG)
    (tree / "etc/passwd").write_bytes(b"root:x:0:0::/root:/usr/sbin/nologin\n")
    after = write_image(tmp_path / "b.tar", "localhost/privproc:t", [tree], CONFIG)
    assert before.image_id != after.image_id
    assert before.diff_ids != after.diff_ids


def test_archive_layout_is_what_docker_load_and_ctr_import_read(tmp_path: Path) -> None:
    base, app = tmp_path / "base", tmp_path / "app"
    make_tree(base, 1_700_000_000, ["etc/passwd", "opt/app/bin/privproc", "opt/app/lib/a.py"])
    (app / "srv").mkdir(parents=True)
    (app / "srv/data").write_bytes(b"x")
    written = write_image(tmp_path / "img.tar", "localhost/privproc:0.1.0", [base, app], CONFIG, epoch=42)

    with tarfile.open(tmp_path / "img.tar") as archive:
        manifest = json.loads(archive.extractfile("manifest.json").read())  # type: ignore[union-attr]
        config_bytes = archive.extractfile(manifest[0]["Config"]).read()  # type: ignore[union-attr]
        assert manifest[0]["RepoTags"] == ["localhost/privproc:0.1.0"]
        assert "sha256:" + hashlib.sha256(config_bytes).hexdigest() == written.image_id
        config = json.loads(config_bytes)
        assert config["rootfs"]["diff_ids"] == list(written.diff_ids)
        assert config["config"]["User"] == "10001:10001"
        assert config["config"]["Entrypoint"] == ["/opt/app/bin/privproc"]
        assert config["created"] == "1970-01-01T00:00:42Z"
        for layer_name, diff_id in zip(manifest[0]["Layers"], written.diff_ids, strict=True):
            layer_bytes = archive.extractfile(layer_name).read()  # type: ignore[union-attr]
            assert "sha256:" + hashlib.sha256(layer_bytes).hexdigest() == diff_id

        first_layer = archive.extractfile(manifest[0]["Layers"][0])
        assert first_layer is not None
        with tarfile.open(fileobj=first_layer) as layer:
            members = layer.getmembers()
    names = [member.name for member in members]
    assert names == sorted(names, key=lambda name: name.split("/"))
    assert {member.mtime for member in members} == {42}
    assert {member.uname for member in members} == {""}
    by_name = {member.name: member for member in members}
    assert by_name["opt/app/lib/b.py"].islnk() and by_name["opt/app/lib/b.py"].linkname == "opt/app/lib/a.py"
    assert by_name["opt/app/bin/python3"].issym()
    assert by_name["opt/app/bin/privproc"].mode & 0o777 == 0o755


def test_cli_prints_the_ids_and_refuses_a_reference_without_tag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tree = tmp_path / "tree"
    make_tree(tree, 1, ["etc/passwd", "opt/app/bin/privproc", "opt/app/lib/a.py"])
    assert (
        main(
            [
                str(tmp_path / "x.tar"),
                "--ref",
                "localhost/x:1",
                "--layer",
                str(tree),
                "--cmd",
                '["--help"]',
                "--env",
                "A=1",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out.split()
    assert len(printed) == 2 and all(line.startswith("sha256:") for line in printed)
    with pytest.raises(ValueError, match="NAME:TAG"):
        write_image(tmp_path / "y.tar", "localhost/x", [tree], CONFIG)
