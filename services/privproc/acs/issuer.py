"""Issuance and verification, independent of transport.

Order of checks on issuance: authenticate the account, parse every token
request, find the key each names, count the batch against the account's
limit (durably, all or nothing), then sign. The account is known here and
nowhere after: nothing of it goes into the token, and nothing of the token
request is stored or logged.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from opentelemetry import metrics

from privproc import events
from privproc.acs.accounts import Authenticator
from privproc.acs.keys import IssuerKey, IssuerKeyring
from privproc.acs.ratelimit import IssuanceLimiter
from privproc.crypto import blindrsa
from privproc.errors import BadRequestError, CryptoError
from privproc.wire.privacypass import (
    TOKEN_TYPE_BLIND_RSA,
    IssuerDirectory,
    Token,
    TokenRequest,
)

#: Most token requests one call may carry.
MAX_BATCH = 128
TOKEN_VARIANT = blindrsa.Variant.SHA384_PSS_DETERMINISTIC


def _sign(key: IssuerKey, blinded_msg: bytes) -> bytes:
    if key.token_type == TOKEN_TYPE_BLIND_RSA:
        return bytes(key.signer.blind_sign(blinded_msg))
    return bytes(key.signer.blind_evaluate(blinded_msg))


#: Tokens signed, by token type (never by account).
_ISSUED = metrics.get_meter("privproc.acs").create_counter("privproc.acs.tokens.issued", unit="{token}")


class Issuer:
    def __init__(
        self,
        *,
        keyring: IssuerKeyring,
        limiter: IssuanceLimiter,
        authenticator: Authenticator,
        issuer_name: str,
    ) -> None:
        self.keyring = keyring
        self.limiter = limiter
        self.authenticator = authenticator
        self.issuer_name = issuer_name

    def issue(self, credential: str, token_requests: Sequence[bytes], now: float) -> list[bytes]:
        """TokenResponses for ``token_requests``, in order, for an authenticated account."""
        account = self.authenticator.authenticate(credential)
        if not 1 <= len(token_requests) <= MAX_BATCH:
            raise BadRequestError("batch size out of range")
        requests = [TokenRequest.decode(raw) for raw in token_requests]
        keys: list[IssuerKey] = []
        for request in requests:
            key = self.keyring.for_issuance(request.token_type, request.truncated_token_key_id, now)
            if key is None:
                raise BadRequestError("unknown or retired token key")
            keys.append(key)
        self.limiter.consume(account, len(requests), now)
        responses = [_sign(key, request.blinded_msg) for key, request in zip(keys, requests, strict=True)]
        events.emit(events.AcsIssued(token_type=requests[0].token_type, count=len(responses)))
        _ISSUED.add(len(responses), {"privproc.token_type": requests[0].token_type})
        return responses

    def verify(self, token_bytes: bytes, now: float) -> bool:
        """Whether a redeemed token carries a genuine authenticator under a live key."""
        token = Token.decode(token_bytes)
        key = self.keyring.for_redemption(token.token_type, token.token_key_id, now)
        if key is None:
            return False
        if token.token_type == TOKEN_TYPE_BLIND_RSA:
            try:
                blindrsa.verify(
                    key.signer.public_key, token.authenticator_input(), token.authenticator, TOKEN_VARIANT
                )
            except CryptoError:
                return False
            return True
        expected = key.signer.evaluate(token.authenticator_input())
        return hmac.compare_digest(expected, token.authenticator)

    def directory(self, request_uri: str, now: float) -> IssuerDirectory:
        return IssuerDirectory(request_uri, self.keyring.directory_keys(now))
