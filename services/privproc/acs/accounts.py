"""Who may obtain tokens: account credentials and pluggable authenticators.

The default :class:`SignedCredentialAuthenticator` verifies credentials the
ACS minted itself: ``pp1.<account id>.<HMAC-SHA256(key, account id)>``
(base64url), checked in constant time, for an account that exists and is
not disabled in the ACS's own store. An operator may also give an account a
credential of its own choosing in the same shape, ``pp1.<account id>.<secret>``
(a cluster's test account, from a Kubernetes Secret): the store keeps only its
SHA-256, compared in constant time. A deployment with an identity provider
plugs in any object with an ``authenticate(credential) -> str`` method — for
OIDC, one that verifies the ID token's signature against the provider's
JWKS, its ``iss``/``aud``/``exp``, and returns the ``sub`` claim (docs/credentials.md,
"Plugging in an identity provider").
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from typing import Protocol

from privproc.acs.store import Database
from privproc.errors import UnauthenticatedError, WireError
from privproc.wire.privacypass import b64url_decode, b64url_encode

_ACCOUNT_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_PREFIX = "pp1"


class Authenticator(Protocol):
    """Turns a bearer credential into an account id, or raises UnauthenticatedError."""

    def authenticate(self, credential: str) -> str: ...


class AccountStore:
    """Accounts in the ACS database and the key their credentials are signed with."""

    def __init__(self, db: Database) -> None:
        self._db = db
        with db.lock:
            row = db.conn.execute("SELECT value FROM secrets WHERE name = 'credential_key'").fetchone()
            if row is None:
                key = secrets.token_bytes(32)
                db.conn.execute("INSERT INTO secrets (name, value) VALUES ('credential_key', ?)", (key,))
            else:
                key = bytes(row[0])
        self._key = key

    def _mac(self, account_id: str) -> bytes:
        return hmac.new(self._key, f"{_PREFIX}:{account_id}".encode(), hashlib.sha256).digest()

    def create(self, account_id: str, credential: str | None = None) -> str:
        """Create (or re-enable) an account; returns its credential.

        ``credential``: one the operator chose (:func:`new_credential`'s shape, naming this
        account), accepted from now on besides the minted one; only its SHA-256 is stored.
        """
        if not _ACCOUNT_ID.match(account_id):
            raise ValueError("account ids are short lowercase identifiers")
        if credential is not None and _account_of(credential) != account_id:
            raise ValueError("an account's own credential is pp1.<account id>.<secret>")
        with self._db.lock:
            self._db.conn.execute(
                "INSERT INTO accounts (id, created, disabled) VALUES (?, ?, 0) "
                "ON CONFLICT(id) DO UPDATE SET disabled = 0",
                (account_id, time.time()),
            )
            if credential is not None:
                self._db.conn.execute(
                    "INSERT INTO account_credentials (account, sha256) VALUES (?, ?) "
                    "ON CONFLICT(account) DO UPDATE SET sha256 = excluded.sha256",
                    (account_id, _digest(credential)),
                )
        return credential if credential is not None else self.credential(account_id)

    def credential(self, account_id: str) -> str:
        # Our own format, not a Privacy Pass field: kept unpadded, as credentials always were.
        return f"{_PREFIX}.{account_id}.{b64url_encode(self._mac(account_id)).rstrip('=')}"

    def disable(self, account_id: str) -> None:
        with self._db.lock:
            self._db.conn.execute("UPDATE accounts SET disabled = 1 WHERE id = ?", (account_id,))

    def is_active(self, account_id: str) -> bool:
        with self._db.lock:
            row = self._db.conn.execute(
                "SELECT disabled FROM accounts WHERE id = ?", (account_id,)
            ).fetchone()
        return row is not None and row[0] == 0

    def _chosen_digest(self, account_id: str) -> bytes | None:
        with self._db.lock:
            row = self._db.conn.execute(
                "SELECT sha256 FROM account_credentials WHERE account = ?", (account_id,)
            ).fetchone()
        return bytes(row[0]) if row is not None else None

    def verify(self, credential: str) -> str | None:
        """The account id the credential proves, or None."""
        account_id = _account_of(credential)
        if account_id is None:
            return None
        mac = credential.rpartition(".")[2]
        try:
            presented = b64url_decode(mac)
        except WireError:  # not base64url: no account
            return None
        minted = hmac.compare_digest(presented, self._mac(account_id))
        chosen = self._chosen_digest(account_id)
        # Both compared whatever the first says: the time taken does not tell which one matched.
        own = chosen is not None and hmac.compare_digest(_digest(credential), chosen)
        if not (minted or own):
            return None
        return account_id if self.is_active(account_id) else None


def new_credential(account_id: str) -> str:
    """A fresh credential of the operator's choosing for ``account_id`` (256 random bits).

    Given to :meth:`AccountStore.create` (``privproc serve acs --demo-account-credential-file``).
    """
    if not _ACCOUNT_ID.match(account_id):
        raise ValueError("account ids are short lowercase identifiers")
    return f"{_PREFIX}.{account_id}.{b64url_encode(secrets.token_bytes(32)).rstrip('=')}"


def _account_of(credential: str) -> str | None:
    """The account id a credential names (``pp1.<account id>.<...>``), or None if it is not one."""
    prefix, _, rest = credential.partition(".")
    account_id, _, _ = rest.rpartition(".")
    if prefix != _PREFIX or not _ACCOUNT_ID.match(account_id):
        return None
    return account_id


def _digest(credential: str) -> bytes:
    # A credential holds 256 random bits: a fast hash is enough, nothing to stretch.
    return hashlib.sha256(credential.encode()).digest()


class SignedCredentialAuthenticator:
    """The default authenticator: credentials minted by this ACS's :class:`AccountStore`."""

    def __init__(self, accounts: AccountStore) -> None:
        self._accounts = accounts

    def authenticate(self, credential: str) -> str:
        account = self._accounts.verify(credential)
        if account is None:
            raise UnauthenticatedError("valid account credential required")
        return account


def bearer_credential(authorization: str | None) -> str:
    """The credential of an ``Authorization: Bearer <credential>`` value."""
    scheme, _, credential = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not credential.strip():
        raise UnauthenticatedError("valid account credential required")
    return credential.strip()
