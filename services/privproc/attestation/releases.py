"""Which logged CVM releases a device (or the operator's verifier) admits — sans-I/O.

A ``cvm-release`` entry (:mod:`privproc.wire.entries`) admits a CVM only
when all of these hold, each refusal its own typed error:

- it is a release of the CVM's measurement (:class:`ReleaseMismatchError`);
- it is signed, inside the entry, by a release key this reader pins — the
  log's publisher authorisation is not enough (:class:`ReleaseNotPinnedError`);
- the VCEK certificate's TCB is at least the release's ``min_tcb``, per
  component (:class:`ReleaseTcbError`);
- the report's HOST_DATA is the release's ``host_data`` (:class:`ReleaseHostDataError`);
- now is before its ``not_after`` (:class:`ReleaseExpiredError`);
- no ``cvm-revocation`` signed by a pinned key names its log index or one of
  its measurements (:class:`ReleaseRevokedError`);
- no release signed by a pinned key supersedes it: same track, higher
  version, its ``supersedes_at`` reached (:class:`ReleaseSupersededError`).

:class:`ReleaseRegistry` learns revocations and releases from every log
entry, in log order (:meth:`ReleaseRegistry.observe`, fed by whatever
follows the log outside any session), and answers :meth:`~ReleaseRegistry.admit`
from memory: no I/O, no clock of its own. It also keeps the log's key
configurations (:attr:`ReleaseRegistry.key_configs`) for the key-consistency
check of :mod:`privproc.ledger.keyconsistency`, so one feed serves both.
"""

from __future__ import annotations

import hmac
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from privproc.attestation.abi import TcbVersion
from privproc.attestation.appraisal import Claims, tcb_at_least
from privproc.errors import ConfigError, CryptoError, WireError
from privproc.ledger.keyconsistency import KeyConfigHistory
from privproc.stackfile import StackFile
from privproc.wire import note
from privproc.wire.entries import (
    CvmReleaseEntry,
    CvmRevocationEntry,
    Entry,
    ReleaseSignatureError,
    SignedEntry,
    parse_entry,
    parse_version,
    release_key_name,
    verify_release_signature,
)

#: Release signatures a registry remembers as verified (see ``ReleaseRegistry._verified_signer``).
SIGNED_ENTRIES = 64


class ReleaseRefusedError(CryptoError):
    """A logged release that does not admit this CVM (a subclass names why)."""

    reason = "release_refused"


class ReleaseMismatchError(ReleaseRefusedError):
    """The entry is not a well-formed ``cvm-release`` of this CVM's measurement."""

    reason = "release_not_for_measurement"


class ReleaseNotPinnedError(ReleaseRefusedError):
    """The release is not signed by a release key this client pins."""

    reason = "release_key_not_pinned"


class ReleaseTcbError(ReleaseRefusedError):
    """The platform's TCB (from its VCEK certificate) is below the release's minimum."""

    reason = "release_tcb_below_minimum"


class ReleaseHostDataError(ReleaseRefusedError):
    """The CVM was launched with another configuration (HOST_DATA) than the release's."""

    reason = "release_host_data"


class ReleaseExpiredError(ReleaseRefusedError):
    reason = "release_expired"


class ReleaseRevokedError(ReleaseRefusedError):
    reason = "release_revoked"


class ReleaseSupersededError(ReleaseRefusedError):
    """A higher version of the same release track is logged and in effect."""

    reason = "release_superseded"


@dataclass(frozen=True)
class AdmittedRelease:
    """The release that admitted a CVM: what a receipt shows."""

    index: int
    #: The pinned release key that signed it (``<name>+<hex key ID>``).
    release_key: str
    track: str
    version: str
    not_after: int
    host_data: str
    min_tcb: tuple[tuple[str, int], ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "release_key": self.release_key,
            "track": self.track,
            "version": self.version,
            "not_after": self.not_after,
            "host_data": self.host_data,
            "min_tcb": dict(self.min_tcb),
        }


def _pinned(release_keys: Iterable[str]) -> dict[str, note.Ed25519Verifier]:
    pinned: dict[str, note.Ed25519Verifier] = {}
    for vkey in release_keys:
        try:
            verifier = note.parse_verifier_key(vkey)
        except WireError:
            raise ConfigError("a pinned release key does not parse") from None
        if verifier.alg != note.ALG_ED25519:
            raise ConfigError("a release key is an Ed25519 signed-note verifier key")
        pinned[release_key_name(verifier)] = verifier
    return pinned


class ReleaseRegistry:
    """The releases, revocations and supersessions a reader of the log knows, checked against pins."""

    def __init__(self, release_keys: Iterable[str]) -> None:
        """``release_keys``: the pinned release keys, as signed-note verifier key strings."""
        self._keys = _pinned(release_keys)
        #: Releases signed by a pinned key, by log index.
        self._releases: dict[int, CvmReleaseEntry] = {}
        self._revoked_indexes: set[int] = set()
        self._revoked_measurements: set[str] = set()
        #: Entries seen so far (the next index expected) and entries ignored as not pinned.
        self.observed = 0
        self.ignored = 0
        self.key_configs = KeyConfigHistory()
        #: Canonical bytes of entries whose release signature verified -> the pinned key's name.
        self._signed_by: OrderedDict[bytes, str] = OrderedDict()

    def _verified_signer(self, data: bytes, entry: SignedEntry) -> str:
        """:func:`verify_release_signature` of ``entry`` (whose canonical bytes are ``data``), remembered.

        Safe to remember: whether a signature verifies is a pure function of the
        entry's canonical bytes (what the release key signed is derived from
        them) and of the pinned keys, which never change in a registry. Only
        successes are kept, the least recently used dropped first. Every CVM
        staples the same release, so a device verified the same signature
        once per session otherwise (~0.2 ms); the rest of :meth:`admit` (TCB,
        HOST_DATA, expiry, revocation, supersession) runs every time.
        """
        known = self._signed_by.get(data)
        if known is not None:
            self._signed_by.move_to_end(data)
            return known
        key = verify_release_signature(entry, self._keys)
        self._signed_by[data] = key
        while len(self._signed_by) > SIGNED_ENTRIES:
            self._signed_by.popitem(last=False)
        return key

    @classmethod
    def from_stack(cls, stack: StackFile) -> ReleaseRegistry:
        """The registry of a stack's clients: the release keys ``stack.json`` pins."""
        if not stack.release_keys:
            raise ConfigError("stack.json pins no release key: no CVM release can be admitted")
        return cls(stack.release_keys)

    @property
    def release_keys(self) -> tuple[str, ...]:
        """The pinned keys (``<name>+<hex key ID>``)."""
        return tuple(sorted(self._keys))

    def observe(self, index: int, entry: Entry) -> None:
        """Learn one parsed log entry; call for every entry, in log order."""
        self.observed = max(self.observed, index + 1)
        self.key_configs.observe(index, entry)
        if not isinstance(entry, CvmReleaseEntry | CvmRevocationEntry):
            return
        try:
            parsed = parse_entry(entry.encode())  # well formed, whoever handed it over
            assert isinstance(parsed, CvmReleaseEntry | CvmRevocationEntry)  # encode keeps the kind
            verify_release_signature(parsed, self._keys)
        except (ReleaseSignatureError, WireError):
            self.ignored += 1  # anyone's publisher may log; only pinned keys count
            return
        if isinstance(parsed, CvmReleaseEntry):
            self._releases[index] = parsed
        elif parsed.release_index is not None:
            self._revoked_indexes.add(parsed.release_index)
        elif parsed.measurement is not None:
            self._revoked_measurements.add(parsed.measurement)

    def measurements(self) -> dict[bytes, int]:
        """Every measurement of an observed pinned release → the newest such release's log index."""
        latest: dict[bytes, int] = {}
        for index, entry in self._releases.items():
            for measurement in entry.measurements:
                key = bytes.fromhex(measurement)
                latest[key] = max(index, latest.get(key, index))
        return latest

    def releases_of(self, measurement: bytes) -> list[tuple[int, CvmReleaseEntry]]:
        """The pinned releases observed that list ``measurement``, newest (highest index) first."""
        wanted = measurement.hex()
        found = [(i, e) for i, e in self._releases.items() if wanted in e.measurements]
        return sorted(found, key=lambda item: -item[0])

    def admit(self, index: int, entry: Entry, claims: Claims, now: float) -> AdmittedRelease:
        """Check that the release logged at ``index`` admits the CVM of ``claims`` at ``now``.

        ``claims`` must come from a verified appraisal (the VCEK TCB read from
        the VCEK certificate). Raises a :class:`ReleaseRefusedError` subclass.
        """
        try:
            data = entry.encode()
            parsed = parse_entry(data)
        except WireError:
            raise ReleaseMismatchError("logged entry is not a well-formed release") from None
        if not isinstance(parsed, CvmReleaseEntry) or claims.measurement.hex() not in parsed.measurements:
            raise ReleaseMismatchError("logged entry is not a release of this measurement")
        try:
            key = self._verified_signer(data, parsed)
        except ReleaseSignatureError:
            raise ReleaseNotPinnedError("release is not signed by a pinned release key") from None
        minimum = TcbVersion(**parsed.min_tcb)
        if not tcb_at_least(claims.vcek_tcb, minimum):
            raise ReleaseTcbError("platform TCB is below the release's minimum")
        if not hmac.compare_digest(bytes.fromhex(parsed.host_data), claims.host_data):
            raise ReleaseHostDataError("CVM configuration (HOST_DATA) is not the release's")
        if not now < parsed.not_after:
            raise ReleaseExpiredError("release has expired")
        if index in self._revoked_indexes or self._revoked_measurements & set(parsed.measurements):
            raise ReleaseRevokedError("release has been revoked")
        if any(newer.supersedes(parsed, now) for newer in self._releases.values()):
            raise ReleaseSupersededError("a later version of this release track is in effect")
        return AdmittedRelease(
            index=index,
            release_key=key,
            track=parsed.track,
            version=parsed.version,
            not_after=parsed.not_after,
            host_data=parsed.host_data,
            min_tcb=tuple(sorted(parsed.min_tcb.items())),
        )

    def admit_measurement(self, claims: Claims, now: float) -> AdmittedRelease:
        """Admit the CVM of ``claims`` by any observed release of its measurement, newest first.

        For a reader that follows the whole log (the operator's verifier).
        With no such release: :class:`ReleaseMismatchError`; when every one
        refuses, the newest one's refusal.
        """
        candidates = self.releases_of(claims.measurement)
        first: ReleaseRefusedError | None = None
        for index, entry in candidates:
            try:
                return self.admit(index, entry, claims, now)
            except ReleaseRefusedError as err:
                first = first or err
        raise first or ReleaseMismatchError("no logged release of this measurement")


__all__ = [
    "AdmittedRelease",
    "ReleaseExpiredError",
    "ReleaseHostDataError",
    "ReleaseMismatchError",
    "ReleaseNotPinnedError",
    "ReleaseRefusedError",
    "ReleaseRegistry",
    "ReleaseRevokedError",
    "ReleaseSupersededError",
    "ReleaseTcbError",
    "parse_version",
]
