"""The device's token wallet: fetch tokens ahead of need, spend one per session.

Tokens are bought in batches from the ACS (the only moment the account is
shown), for the gateway's stable challenge, and kept until spent. Before
blinding anything, the wallet checks that the key the gateway challenges
with is one the issuer publishes to everyone through the key CDN: a gateway
that handed one user a key of its own could recognise that user's tokens.
"""

from __future__ import annotations

import secrets
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from typing import Any

import aiohttp
from grpc import aio

from privproc.client.transparency import (
    EntryMismatchError,
    TransparencyVerifier,
    Verified,
    check_validity,
    fetch_proof,
)
from privproc.errors import ConfigError, CryptoError, PrivprocError, UpstreamError, error_from_status
from privproc.ledger.entries import KIND_TOKEN_ISSUER_KEY
from privproc.runtime.cdn_publisher import token_key_proof_name
from privproc.runtime.http import anonymous_client_session
from privproc.runtime.rpc import channel_options
from privproc.stackfile import StackFile
from privproc.v1 import acs_pb2, acs_pb2_grpc
from privproc.wire import blindrsa, voprf
from privproc.wire import privacypass as pp

TOKEN_VARIANT = blindrsa.Variant.SHA384_PSS_DETERMINISTIC
MAX_DIRECTORY_BYTES = 64 << 10


class KeyConsistencyError(CryptoError):
    """The gateway challenged with a key the issuer does not publish to everyone."""

    reason = "key_consistency"


class ChallengeMismatchError(CryptoError):
    """The challenge names another issuer or origin than the client expects."""

    reason = "challenge_mismatch"


@dataclass(frozen=True)
class SpentToken:
    token: pp.Token
    header: str


class TokenWallet:
    """Tokens per (challenge, key), fetched from the ACS over gRPC in batches."""

    def __init__(
        self,
        *,
        acs_target: str,
        credential: str,
        directory_url: str,
        issuer_name: str,
        origin: str,
        batch_size: int = 8,
        proofs_url: str | None = None,
        transparency: TransparencyVerifier | None = None,
    ) -> None:
        """With ``transparency``, a token key is used only with a proof that it is logged."""
        self.proofs_url = proofs_url
        self.transparency = transparency
        #: Token key id → where the key sits in the log (filled when transparency is on).
        self.logged: dict[bytes, Verified] = {}
        self.issuer_name = issuer_name
        self.origin = origin
        self.batch_size = batch_size
        self._credential = credential
        self._directory_url = directory_url
        self._channel = aio.insecure_channel(acs_target, options=channel_options())
        self._tokens: dict[tuple[bytes, bytes], deque[pp.Token]] = defaultdict(deque)
        self._session = anonymous_client_session(10)

    @classmethod
    def from_stack(
        cls, stack: StackFile, *, transparency: TransparencyVerifier | None = None, **kw: Any
    ) -> TokenWallet:
        """A wallet for a local stack's demo account."""
        if stack.acs is None or stack.demo_account is None:
            raise ConfigError("stack.json has no ACS or demo account")
        return cls(
            acs_target=stack.acs.grpc,
            credential=kw.pop("credential", stack.demo_account.credential),
            directory_url=stack.cdn.issuer_directory_url,
            issuer_name=stack.acs.issuer_name,
            origin=stack.gateway.origin,
            proofs_url=stack.cdn.proofs_url,
            transparency=transparency,
            **kw,
        )

    async def close(self) -> None:
        await self._channel.close(None)
        await self._session.close()

    def available(self, challenge: pp.Challenge) -> int:
        return len(self._tokens[(challenge.challenge.encode(), challenge.token_key)])

    async def published_keys(self) -> set[tuple[int, bytes]]:
        """(token type, key) pairs the issuer publishes, as the key CDN serves them."""
        try:
            async with self._session.get(
                self._directory_url, headers={"Accept": pp.MEDIA_TYPE_ISSUER_DIRECTORY}
            ) as resp:
                body = await resp.content.read(MAX_DIRECTORY_BYTES + 1)
                status = resp.status
        except (aiohttp.ClientError, TimeoutError):
            raise UpstreamError("key CDN unavailable") from None
        if status != 200 or len(body) > MAX_DIRECTORY_BYTES:
            raise UpstreamError("key CDN gave no issuer directory")
        directory = pp.IssuerDirectory.decode(body)
        return {(k.token_type, k.token_key) for k in directory.token_keys}

    async def check(self, challenge: pp.Challenge) -> None:
        """Refuse a challenge for another issuer/origin or with an unpublished key."""
        tc = challenge.challenge
        if tc.issuer_name != self.issuer_name or tc.origin_info != (self.origin,) or tc.redemption_context:
            raise ChallengeMismatchError("challenge does not match the expected issuer and origin")
        if (tc.token_type, challenge.token_key) not in await self.published_keys():
            raise KeyConsistencyError("token key is not the one the issuer publishes")
        if self.transparency is not None:
            assert self.proofs_url is not None
            key_id = pp.token_key_id(challenge.token_key)
            proof = await fetch_proof(
                self._session, self.proofs_url, token_key_proof_name(key_id), "issuer key"
            )
            verified = await self.transparency.verify_proof(proof)
            entry = verified.entry
            if (
                entry["kind"] != KIND_TOKEN_ISSUER_KEY
                or entry["sha256"] != key_id.hex()
                or entry["token_type"] != tc.token_type
            ):
                raise EntryMismatchError("logged entry is not this token key")
            check_validity(entry, time.time())
            self.logged[key_id] = verified

    async def spend(self, challenge: pp.Challenge) -> SpentToken:
        """A fresh token for ``challenge`` (fetching a batch if none is left)."""
        slot = (challenge.challenge.encode(), challenge.token_key)
        if not self._tokens[slot]:
            await self.check(challenge)
            self._tokens[slot].extend(await self._fetch(challenge, self.batch_size))
        token = self._tokens[slot].popleft()
        return SpentToken(token, pp.authorization_header(token))

    async def _fetch(self, challenge: pp.Challenge, count: int) -> list[pp.Token]:
        token_type = challenge.challenge.token_type
        key_id = pp.token_key_id(challenge.token_key)
        digest = challenge.challenge.digest()
        inputs = [
            pp.token_authenticator_input(token_type, secrets.token_bytes(pp.NONCE_LEN), digest, key_id)
            for _ in range(count)
        ]
        states: list[Any] = []
        requests: list[bytes] = []
        if token_type == pp.TOKEN_TYPE_BLIND_RSA:
            public = blindrsa.public_key_from_spki_pss(challenge.token_key)
            for token_input in inputs:
                blinded, state = blindrsa.blind(public, token_input, TOKEN_VARIANT)
                states.append(state)
                requests.append(pp.TokenRequest(token_type, pp.truncated_key_id(key_id), blinded).encode())
        elif token_type == pp.TOKEN_TYPE_VOPRF:
            for token_input in inputs:
                blinded, vstate = voprf.blind(token_input)
                states.append(vstate)
                requests.append(pp.TokenRequest(token_type, pp.truncated_key_id(key_id), blinded).encode())
        else:
            raise ChallengeMismatchError("unsupported token type")
        try:
            reply = await acs_pb2_grpc.AcsStub(self._channel).IssueTokens(
                acs_pb2.IssueTokensRequest(token_type=token_type, token_requests=requests),
                metadata=(("authorization", f"Bearer {self._credential}"),),
                timeout=30.0,
            )
        except aio.AioRpcError as err:
            raise _as_error(err) from None
        if len(reply.token_responses) != count:
            raise UpstreamError("issuer answered with the wrong number of tokens")
        tokens = []
        for token_input, state, response in zip(inputs, states, reply.token_responses, strict=True):
            pp.decode_token_response(token_type, response)
            if token_type == pp.TOKEN_TYPE_BLIND_RSA:
                authenticator = blindrsa.finalize(public, token_input, response, state, TOKEN_VARIANT)
            else:
                authenticator = voprf.finalize(state, response, challenge.token_key)
            tokens.append(pp.Token.decode(token_input + authenticator))
        return tokens


def _as_error(err: aio.AioRpcError) -> PrivprocError:
    return error_from_status(err.details() or "")
