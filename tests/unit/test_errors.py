"""One mapping from typed errors to gRPC and HTTP status; peer errors rebuilt from their reason."""

from __future__ import annotations

import grpc

from privproc import errors
from privproc.wire import bhttp, ohttp


def test_mapping() -> None:
    assert errors.grpc_status(ohttp.KeyConfigRejectedError("key configuration not acceptable")) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "ohttp_key: key configuration not acceptable",
    )
    assert errors.http_status(ohttp.KeyConfigRejectedError()) == 400
    assert errors.http_status(errors.LimitExceededError()) == 413
    assert errors.http_status(errors.RateLimitedError()) == 429
    assert errors.http_status(bhttp.BhttpLimitError()) == 413


def test_foreign_exceptions_hide_their_text() -> None:
    code, message = errors.grpc_status(ValueError("secret user text"))
    assert code == grpc.StatusCode.INTERNAL and "secret" not in message
    assert errors.http_status(KeyError("x")) == 500


def test_error_from_status_round_trip() -> None:
    for error in (
        ohttp.KeyConfigRejectedError("key configuration not acceptable"),
        errors.RateLimitedError("slow"),
    ):
        _, message = errors.grpc_status(error)
        rebuilt = errors.error_from_status(message)
        assert type(rebuilt) is type(error) and errors.public_message(rebuilt) == message
    assert isinstance(errors.error_from_status("nonsense"), errors.UpstreamError)
    assert "\n" not in str(errors.error_from_status("rate_limited: a\nb" + "x" * 500))
    assert len(str(errors.error_from_status("rate_limited: " + "x" * 500))) <= 200
