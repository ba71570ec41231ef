"""What the simulated CVM measures: a digest of the predictor image.

The image is the ``privproc`` package's code (every ``.py`` file, by path
and SHA-256), the digest of the container image it runs from (``""`` outside
one, as under ``privproc up``), the model weights' digest, the digest of the event allow-list
its log sidecar lets out of the CVM (:func:`privproc.events.allowlist_digest`:
what may leave is measured as its own field, so a reader of the manifest or
of the release sees it without re-deriving it from the code) and the
predictor configuration.
The launch measurement is SHA-384 over the canonical JSON of that manifest
(48 bytes, the size of an SNP MEASUREMENT), and ``host_data`` is SHA-256 of
the canonical configuration (32 bytes, the size of HOST_DATA). Change one
byte of code, image, weights, allow-list or configuration and the measurement changes, so a
client refuses the CVM until the new release is logged.

For a real SNP launch the measurement comes from ``sev-snp-measure`` over
the firmware, kernel, initrd and command line (docs/attestation.md).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from privproc import events
from privproc.attestation.abi import TcbVersion
from privproc.errors import ConfigError
from privproc.wire import note
from privproc.wire.entries import CvmReleaseEntry, is_image_digest
from privproc.wire.jcs import canonicalize

MANIFEST_DOMAIN = "privproc-image/v1"
NO_MODEL = "sha256:" + "0" * 64


@dataclass(frozen=True)
class ImageManifest:
    files: tuple[tuple[str, str], ...]  # (path relative to the package, sha256 hex), sorted
    model_digest: str  # "sha256:<hex>"
    config: dict[str, Any]
    #: "sha256:<hex>" of the event allow-list (what the log sidecar lets out of the CVM).
    allowlist_digest: str
    #: The container image's digest ("sha256:<hex>"), or "" when the predictor runs from none.
    image_digest: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "domain": MANIFEST_DOMAIN,
            "files": [[path, digest] for path, digest in self.files],
            "image_digest": self.image_digest,
            "model_digest": self.model_digest,
            "allowlist_digest": self.allowlist_digest,
            "config": self.config,
        }

    @property
    def measurement(self) -> bytes:
        """The 48-byte launch measurement the simulator reports."""
        return hashlib.sha384(canonicalize(self.to_json())).digest()

    @property
    def host_data(self) -> bytes:
        """The 32-byte HOST_DATA: the configuration's digest."""
        return config_digest(self.config)

    @property
    def sidecar_allowlist_digest(self) -> str:
        """The allow-list digest as ``privproc serve log-sidecar --allowlist-digest`` takes it (hex)."""
        return self.allowlist_digest.removeprefix("sha256:")

    @property
    def files_digest(self) -> str:
        """``sha256:`` over the code files' paths and digests (the ``files`` list, canonical)."""
        code = canonicalize([[path, digest] for path, digest in self.files])
        return "sha256:" + hashlib.sha256(code).hexdigest()


def parse_image_digest(text: str) -> str:
    """A container image's digest as a flag gives it: ``sha256:`` + 64 lowercase hex, or ""."""
    if not is_image_digest(text):
        raise ValueError("an image digest is sha256: and 64 lowercase hex digits")
    return text


def config_digest(config: dict[str, Any]) -> bytes:
    return hashlib.sha256(canonicalize(config)).digest()


def package_root() -> Path:
    return Path(__file__).resolve().parents[1]


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def measure_image(
    *,
    root: Path | None = None,
    model: Path | None = None,
    model_digest: str | None = None,
    config: dict[str, Any] | None = None,
    image_digest: str = "",
) -> ImageManifest:
    """The manifest of the image rooted at ``root`` (default: the installed package).

    The model is named by its weights file (``model``) or by a digest already
    computed (``model_digest``, as :meth:`privproc.predictor.loading.ModelSpec.digest`).
    ``image_digest`` is the container image's digest (``sha256:<hex>``; "" outside one).
    """
    if model is not None and model_digest is not None:
        raise ValueError("give the model file or its digest, not both")
    if not is_image_digest(image_digest):
        raise ConfigError("an image digest is sha256: and 64 lowercase hex digits")
    root = root or package_root()
    files = tuple(
        sorted(
            (path.relative_to(root).as_posix(), file_digest(path))
            for path in root.rglob("*.py")
            if "__pycache__" not in path.parts
        )
    )
    if model is not None:
        model_digest = "sha256:" + file_digest(model)
    return ImageManifest(
        files,
        model_digest or NO_MODEL,
        dict(config or {}),
        "sha256:" + events.allowlist_digest(),
        image_digest,
    )


#: The release track of the predictor image (a later, higher version on it supersedes a release).
PREDICTOR_TRACK = "predictor"
#: How long a release admits its CVMs unless told otherwise.
DEFAULT_RELEASE_DAYS = 30


def tcb_json(tcb: TcbVersion) -> dict[str, int]:
    """A TCB as an entry's ``min_tcb``: the four components, and ``fmc`` where the product has it."""
    value = {"bootloader": tcb.bootloader, "tee": tcb.tee, "snp": tcb.snp, "microcode": tcb.microcode}
    if tcb.fmc is not None:
        value["fmc"] = tcb.fmc
    return value


def release_entry(
    manifest: ImageManifest,
    *,
    version: str,
    signer: note.Ed25519Signer,
    min_tcb: TcbVersion,
    not_after: int,
    supersedes_at: int,
    track: str = PREDICTOR_TRACK,
    host_data: bytes | None = None,
    provenance: dict[str, Any] | None = None,
) -> bytes:
    """The ``cvm-release`` ledger entry that admits an image with this manifest, signed by ``signer``.

    ``host_data`` defaults to the manifest's (its configuration digest): the
    value the CVM must launch with.
    """
    return CvmReleaseEntry.sign(
        track=track,
        version=version,
        measurements=[manifest.measurement.hex()],
        files_digest=manifest.files_digest,
        image_digest=manifest.image_digest,
        model_digest=manifest.model_digest,
        allowlist_digest=manifest.allowlist_digest,
        host_data=(host_data if host_data is not None else manifest.host_data).hex(),
        min_tcb=tcb_json(min_tcb),
        supersedes_at=supersedes_at,
        not_after=not_after,
        provenance={
            "measured_by": "privproc image measure",
            "files": len(manifest.files),
            **(provenance or {}),
        },
        signer=signer,
    ).encode()


def release_proof_name(measurement: bytes) -> str:
    """The key CDN name of the proof that ``measurement`` is released (clients fetch it by this)."""
    # The "release-" proof family: only the release publisher's CDN credential may write it.
    return "release-" + hashlib.sha256(measurement).hexdigest()
