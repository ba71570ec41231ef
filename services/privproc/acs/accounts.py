"""Who may obtain tokens: account credentials and pluggable authenticators.

The default :class:`SignedCredentialAuthenticator` verifies credentials the
ACS minted itself: ``pp1.<account id>.<HMAC-SHA256(key, account id)>``
(base64url), checked in constant time, for an account that exists and is
not disabled in the ACS's own store. A deployment with an identity provider
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

    def create(self, account_id: str) -> str:
        """Create (or re-enable) an account; returns its credential."""
        if not _ACCOUNT_ID.match(account_id):
            raise ValueError("account ids are short lowercase identifiers")
        with self._db.lock:
            self._db.conn.execute(
                "INSERT INTO accounts (id, created, disabled) VALUES (?, ?, 0) "
                "ON CONFLICT(id) DO UPDATE SET disabled = 0",
                (account_id, time.time()),
            )
        return self.credential(account_id)

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

    def verify(self, credential: str) -> str | None:
        """The account id the credential proves, or None."""
        prefix, _, rest = credential.partition(".")
        account_id, _, mac = rest.rpartition(".")
        if prefix != _PREFIX or not _ACCOUNT_ID.match(account_id):
            return None
        try:
            presented = b64url_decode(mac)
        except WireError:  # not base64url: no account
            return None
        if not hmac.compare_digest(presented, self._mac(account_id)):
            return None
        return account_id if self.is_active(account_id) else None


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
