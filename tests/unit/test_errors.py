"""One mapping from typed errors to gRPC and HTTP status (runtime.status); peers rebuilt by reason.

Reconstruction must not depend on what happens to be imported: every error
class of every privproc module is walked, in this process and in fresh
interpreters that import the modules in other orders.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from grpc import aio

import privproc
from privproc import errors, events
from privproc.runtime import status
from privproc.runtime.rpc import GrpcServer
from privproc.wire import bhttp, ohttp

ROOT = Path(__file__).resolve().parents[2]


def test_mapping() -> None:
    assert status.grpc_status(ohttp.KeyConfigRejectedError("key configuration not acceptable")) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "ohttp_key: key configuration not acceptable",
    )
    assert status.http_status(ohttp.KeyConfigRejectedError()) == 400
    assert status.http_status(errors.LimitExceededError()) == 413
    assert status.http_status(errors.RateLimitedError()) == 429
    assert status.http_status(bhttp.BhttpLimitError()) == 413


def test_every_mapped_reason_is_declared_by_an_error_class() -> None:
    _every_error_class()
    assert {reason for reason in status.STATUS if errors.registered(reason) is None} == {"internal"}
    assert errors.registered("internal") is None  # PrivprocError's own reason is never a peer's class
    assert status.http_status(errors.ConfigError()) == 500  # no entry: PrivprocError's "internal"
    assert status.report(errors.TokenRefusedError()).grpc_code == grpc.StatusCode.UNAUTHENTICATED


def test_foreign_exceptions_hide_their_text() -> None:
    code, message = status.grpc_status(ValueError("secret user text"))
    assert code == grpc.StatusCode.INTERNAL and "secret" not in message
    assert status.http_status(KeyError("x")) == 500


def test_error_from_status_round_trip() -> None:
    for error in (
        ohttp.KeyConfigRejectedError("key configuration not acceptable"),
        errors.RateLimitedError("slow"),
    ):
        _, message = status.grpc_status(error)
        rebuilt = errors.error_from_status(message)
        assert type(rebuilt) is type(error) and errors.public_message(rebuilt) == message
    assert isinstance(errors.error_from_status("nonsense"), errors.UpstreamError)
    assert "\n" not in str(errors.error_from_status("rate_limited: a\nb" + "x" * 500))
    assert len(str(errors.error_from_status("rate_limited: " + "x" * 500))) <= 200


# --- every error class ---------------------------------------------------------------------


def _all_modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(privproc.__path__, "privproc."))


def _subclasses(cls: type[errors.PrivprocError]) -> Iterator[type[errors.PrivprocError]]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def _every_error_class() -> list[type[errors.PrivprocError]]:
    for name in _all_modules():
        importlib.import_module(name)
    # Only the stack's own classes: the tests below define (and refuse) a few of their own.
    found = {c for c in _subclasses(errors.PrivprocError) if c.__module__.startswith("privproc.")}
    return sorted(found, key=lambda c: (c.__module__, c.__qualname__))


def _declarer(cls: type[errors.PrivprocError]) -> type[errors.PrivprocError]:
    """The nearest class in ``cls``'s MRO that declares the reason ``cls`` carries."""
    return next(k for k in cls.__mro__ if "reason" in k.__dict__)


def _instance(cls: type[errors.PrivprocError]) -> errors.PrivprocError:
    return cls("fixed public text")


def test_every_error_class_round_trips_to_the_one_class_of_its_reason() -> None:
    classes = _every_error_class()
    assert len(classes) > 50  # the walk found the stack's errors, not just this module's
    for cls in classes:
        declarer = _declarer(cls)
        if declarer is errors.PrivprocError:
            continue  # "internal": a peer's internal failure is an upstream failure for us
        assert errors.registered(cls.reason) is declarer, cls
        rebuilt = errors.error_from_status(status.grpc_status(_instance(cls))[1])
        assert type(rebuilt) is declarer, cls
        assert rebuilt.reason == cls.reason and str(rebuilt) == "fixed public text"


def test_an_inherited_reason_is_not_registered() -> None:
    class QuietWireError(errors.WireError):
        """Inherits ``malformed``: must not take it over from WireError."""

    assert errors.registered("malformed") is errors.WireError
    assert type(errors.error_from_status("malformed: x")) is errors.WireError
    assert QuietWireError.reason == "malformed"


def test_a_second_class_for_a_taken_reason_is_refused() -> None:
    with pytest.raises(TypeError):

        class Impostor(errors.PrivprocError):
            reason = "malformed"

    with pytest.raises(TypeError):

        class Shouting(errors.PrivprocError):
            reason = "Not An Identifier"

    assert errors.registered("malformed") is errors.WireError


_PROBE = """
import importlib, json, sys
import privproc.errors as errors
for name in json.loads(sys.argv[1]):
    importlib.import_module(name)
def walk(c):
    for s in c.__subclasses__():
        yield s
        yield from walk(s)
out = {}
for cls in set(walk(errors.PrivprocError)):
    text = errors.public_message(cls("x"))
    rebuilt = errors.error_from_status(text)
    out[f"{cls.__module__}.{cls.__qualname__}"] = f"{type(rebuilt).__module__}.{type(rebuilt).__qualname__}"
print(json.dumps(out, sort_keys=True))
"""


def test_reconstruction_does_not_depend_on_import_order() -> None:
    modules = _all_modules()
    orders = [modules, modules[::-1]]
    results = []
    for order in orders:
        done = subprocess.run(
            [sys.executable, "-c", _PROBE, json.dumps(order)],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
            timeout=300,
        )
        results.append(json.loads(done.stdout))
    assert results[0] == results[1]
    assert len(results[0]) > 50


# --- internal errors are logged, whatever their class name ---------------------------------


def _inactive_rpc_error() -> grpc.RpcError:
    """A real ``grpc._channel._InactiveRpcError``: a sync call to a port nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary("/x.Y/Z", request_serializer=None, response_deserializer=None)
        try:
            call(b"", timeout=2)
        except grpc.RpcError as err:
            return err
    raise AssertionError("the call to a closed port succeeded")


def _foreign() -> list[BaseException]:
    return [
        _inactive_rpc_error(),
        aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, aio.Metadata(), aio.Metadata(), "secret detail"),
        OSError(5, "secret path"),
        ValueError("secret user text"),
        KeyError("secret"),
        type("_9Weird-Name", (Exception,), {})("x"),
    ]


def test_every_failure_gives_an_accepted_event_and_one_status() -> None:
    failures: list[BaseException] = [_instance(cls) for cls in _every_error_class()] + _foreign()
    assert type(failures[-6]).__name__ == "_InactiveRpcError"
    refused_before = sum(events.STATS.refused.values())
    for failure in failures:
        found = status.report(failure)
        if isinstance(failure, errors.PrivprocError):
            assert found.typed and found.reason == failure.reason
            assert (found.grpc_code, found.message) == status.grpc_status(failure)
            assert events.emit(events.RequestFailed(service="gateway", transport="grpc", reason=found.reason))
        else:
            assert not found.typed and found.reason == "internal"
            assert (found.grpc_code, found.message, found.http_status) == (
                grpc.StatusCode.INTERNAL,
                "internal error",
                500,
            )
            assert "secret" not in found.message + found.exception
            assert events.emit(
                events.RequestInternalError(service="gateway", transport="grpc", exception=found.exception)
            ), type(failure).__name__
        assert found.http_status == status.http_status(failure)
    assert sum(events.STATS.refused.values()) == refused_before
    assert errors.exception_token(failures[-6]) == "inactiverpcerror"


# --- the gRPC interceptor, live ------------------------------------------------------------


_RAISE = {
    b"inactive": _inactive_rpc_error,
    b"oserror": lambda: OSError(5, "secret path"),
    b"rate": lambda: errors.RateLimitedError("slow down"),
}


@pytest.fixture
async def raising_server() -> AsyncIterator[str]:
    server = GrpcServer("gateway")

    async def handler(request: bytes, context: aio.ServicerContext[bytes, bytes]) -> bytes:
        raise _RAISE[request]()

    server.server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "test.Raise", {"Raise": grpc.unary_unary_rpc_method_handler(handler)}
            ),
        )
    )
    port = await server.start("127.0.0.1", 0)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(0)


async def test_interceptor_logs_internal_errors_of_any_class_name(raising_server: str) -> None:
    expected = {
        b"inactive": (grpc.StatusCode.INTERNAL, "internal error", "request.internal_error"),
        b"oserror": (grpc.StatusCode.INTERNAL, "internal error", "request.internal_error"),
        b"rate": (grpc.StatusCode.RESOURCE_EXHAUSTED, "rate_limited: slow down", "request.failed"),
    }
    async with aio.insecure_channel(raising_server) as channel:
        call = channel.unary_unary("/test.Raise/Raise")
        for request, (code, details, event) in expected.items():
            emitted = events.STATS.emitted[event]
            refused = sum(events.STATS.refused.values())
            with pytest.raises(aio.AioRpcError) as info:
                await call(request, timeout=10)
            assert (info.value.code(), info.value.details()) == (code, details)
            assert events.STATS.emitted[event] == emitted + 1, request
            assert sum(events.STATS.refused.values()) == refused
