"""The log event registry: every event privproc may emit, declared once.

Code never logs free-form strings. Each event is a frozen dataclass declared
here, one class per event: its name and level as class keywords, its
description as the docstring, and its fields annotated with their type and
bound (``Annotated[int, Int(255)]``, ``Annotated[str, Choice(...)]``). Call
sites build the object, ``emit(GatewayKeyRotated(key_id=3, accepted_keys=2))``,
so mypy refuses a misspelt event, a missing or unknown field, or a field of
the wrong type. :data:`REGISTRY` (name -> :class:`EventSpec`) is derived from
these classes, and :func:`emit` checks every value against it at run time
(bounds and choices are not types): anything outside is refused and counted.
The allow-list log sidecar of the CVM reads this same registry and applies
the same :func:`rejection`, so what can leave a service is exactly what is
declared below.

Field values are deliberately poor: small integers, booleans, and strings
drawn from a declared set of choices or matching a short identifier
pattern. There is no field type that can carry message content, a token, a
key or an address — by construction, not by review.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import re
import sys
import threading
import time
import typing
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Annotated, Any, ClassVar, Literal, dataclass_transform

from opentelemetry import metrics

from privproc.wire.refusal import RefusalCode

_LOGGER = logging.getLogger("privproc.events")

#: Strings that are not from a choice set must look like identifiers.
_IDENTIFIER = re.compile(r"^[a-z0-9][a-z0-9_.:/-]{0,63}$")
#: A server's address as a service dials it (a predictor pod's ``IP:PORT``; never a client's):
#: an IPv4 address, a bracketed IPv6 one or a DNS name, then a port.
_TARGET = re.compile(
    r"^(([0-9]{1,3}\.){3}[0-9]{1,3}|\[[0-9a-f:.]{2,45}\]|[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?):[0-9]{1,5}\Z"
)
#: Field names: lower-case Python identifiers.
_FIELD_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
#: Keys of the JSON line that are not fields.
_RECORD_KEYS = frozenset({"ts", "event"})


class Level(IntEnum):
    """An event's severity: the :mod:`logging` level its line is written at."""

    DEBUG = logging.DEBUG
    INFO = logging.INFO
    WARNING = logging.WARNING
    ERROR = logging.ERROR


@dataclass(frozen=True)
class FieldSpec:
    """One field of an event: its type and its bound."""

    kind: type[int] | type[str] | type[bool]
    #: For ``int``: inclusive upper bound of the absolute value.
    max_value: int = 2**53
    #: For ``str``: the allowed values; ``None`` means "matching :attr:`pattern`".
    choices: frozenset[str] | None = None
    #: For ``str`` without choices: the pattern values match (the identifier pattern by default).
    pattern: re.Pattern[str] = _IDENTIFIER

    def accepts(self, value: object) -> bool:
        if self.kind is bool:
            return isinstance(value, bool)
        if self.kind is int:
            return isinstance(value, int) and not isinstance(value, bool) and abs(value) <= self.max_value
        if not isinstance(value, str):
            return False
        if self.choices is not None:
            return value in self.choices
        return bool(self.pattern.match(value))


def Int(max_value: int = 2**53) -> FieldSpec:
    """An integer field whose absolute value is at most ``max_value``."""
    return FieldSpec(int, max_value=max_value)


def Choice(*values: str) -> FieldSpec:
    """A string field that takes one of ``values``."""
    return FieldSpec(str, choices=frozenset(values))


IDENT = FieldSpec(str)
#: A server's ``host:port`` as a service dials it (see :data:`_TARGET`).
TARGET = FieldSpec(str, pattern=_TARGET)
BOOL = FieldSpec(bool)
SERVICES = Choice(
    "cdn",
    "gateway",
    "relay",
    "stack",
    "acs",
    "ledger",
    "verifier",
    "predictor",
    "witness",
    "log-sidecar",
    "gateway-identity",
    "release",
)
TRANSPORTS = Choice("grpc", "http")

# The field types events use most. Every field is ``Annotated[<type>, <FieldSpec>]``.
#: A string matching the identifier pattern (a reason, an exception's type name, a task's name).
Ident = Annotated[str, IDENT]
Flag = Annotated[bool, BOOL]
Millis = Annotated[int, Int(10**9)]
Port = Annotated[int, Int(65535)]
Attempt = Annotated[int, Int(10**6)]
Status = Annotated[int, Int(599)]
TokenType = Annotated[int, Int(0xFFFF)]
Service = Annotated[str, SERVICES]
Transport = Annotated[str, TRANSPORTS]
#: A predictor's address as the gateway dials it (a pod's ``IP:PORT``: not a client's address).
Target = Annotated[str, TARGET]
#: A count of a periodic report.
Total = Annotated[int, Int(1 << 32)]


@dataclass(frozen=True)
class EventSpec:
    """What the registry allows of one event: derived from its :class:`Event` class."""

    name: str
    level: Level
    description: str
    fields: Mapping[str, FieldSpec]
    #: Granularity of the event's timestamp (seconds; see :func:`timestamp_resolution`).
    time_resolution: float = 0.001


#: Every declared event, by name: the allow-list (filled by the :class:`Event` classes below).
REGISTRY: dict[str, EventSpec] = {}

#: Timestamp granularity of the CVM's events. A per-request event of the predictor with a
#: millisecond timestamp lines up with the gateway's and relay's events for that request.
CVM_TIME_RESOLUTION = 60.0
#: This process's floor for every event's timestamp granularity (set by configure_logging).
_PROCESS_TIME_RESOLUTION = [0.001]


def _field_spec(owner: str, field: str, hint: object) -> FieldSpec:
    """The :class:`FieldSpec` of a field annotated ``Annotated[<type>, <FieldSpec>]``."""
    args = typing.get_args(hint) if typing.get_origin(hint) is Annotated else ()
    specs = [arg for arg in args[1:] if isinstance(arg, FieldSpec)]
    if len(specs) != 1 or args[0] is not specs[0].kind:
        raise TypeError(f"{owner}.{field} must be Annotated[<int|str|bool>, <FieldSpec of that type>]")
    return specs[0]


@dataclass_transform(frozen_default=True, kw_only_default=True)
class Event:
    """Base of every event: a subclass is one declared event, frozen, built with keyword arguments.

    ``class GatewayKeyRetired(Event, name="gateway.key_retired", level=Level.INFO)`` with a
    docstring (the description) and annotated fields registers ``gateway.key_retired`` in
    :data:`REGISTRY`; each name exactly once. ``predictor.*`` events carry coarse time.

    The type checker sees each subclass as a frozen keyword-only dataclass. At run time one
    generic ``__init__`` serves them all: generating a dataclass per event would cost every
    process ~0.1 s at import for nothing the registry does not already check.
    """

    #: This event's entry in :data:`REGISTRY`.
    spec: ClassVar[EventSpec]

    def __init_subclass__(cls, *, name: str, level: Level, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__bases__ != (Event,):
            raise TypeError("an event class derives from Event only")
        if name in REGISTRY:
            raise ValueError("event declared twice")
        if not _IDENTIFIER.match(name):
            raise ValueError("event names are identifiers")
        description = cls.__dict__.get("__doc__")
        if not description:
            raise TypeError(f"{cls.__name__} needs a docstring: the event's description")
        hints = typing.get_type_hints(cls, include_extras=True)
        # This class's own annotations, in declaration order (not the base's ``spec``).
        declared = inspect.get_annotations(cls)
        fields = {field: _field_spec(cls.__name__, field, hints[field]) for field in declared}
        for field in fields:
            if not _FIELD_NAME.match(field) or field in _RECORD_KEYS:
                raise ValueError(f"{cls.__name__}.{field}: not a field name an event may use")
        resolution = CVM_TIME_RESOLUTION if name.startswith("predictor.") else 0.001
        cls.spec = EventSpec(name, level, inspect.cleandoc(description), fields, resolution)
        REGISTRY[name] = cls.spec

    if not typing.TYPE_CHECKING:
        # The type checker sees each event's own keyword-only __init__ (dataclass_transform),
        # which this one must not widen: an event without fields takes no arguments.
        def __init__(self, **values: object) -> None:
            if values.keys() != self.spec.fields.keys():
                raise TypeError(f"{type(self).__name__} takes exactly: {', '.join(self.spec.fields)}")
            self.__dict__.update(values)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen")

    def __repr__(self) -> str:
        values = ", ".join(f"{field}={value!r}" for field, value in vars(self).items())
        return f"{type(self).__name__}({values})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and vars(other) == vars(self)

    def __hash__(self) -> int:
        return hash((type(self), *vars(self).items()))


def timestamp_resolution(event: EventSpec) -> float:
    """The granularity of ``event``'s timestamp: its own, coarsened for the whole process when the
    process is the CVM (:func:`configure_logging` with ``predictor``)."""
    return max(event.time_resolution, _PROCESS_TIME_RESOLUTION[0])


def timestamp(resolution: float) -> float | int:
    """Now, as an event's ``ts``: whole multiples of ``resolution`` (seconds), or milliseconds."""
    now = time.time()
    if resolution >= 1:
        return int(now // resolution * resolution)
    return round(now, 3)


#: Why a record is not allowed: no such event, not exactly its fields, a value out of bounds.
Rejection = Literal["undeclared", "fields", "value"]


def rejection(name: str, values: Mapping[str, object]) -> Rejection | None:
    """Why the record ``name`` with ``values`` is not allowed by :data:`REGISTRY`, or ``None``.

    The one allow-list check: :func:`emit` applies it to every event, and a reader of records
    that crossed a process boundary (the log sidecar) applies it again.
    """
    spec = REGISTRY.get(name)
    if spec is None:
        return "undeclared"
    if values.keys() != spec.fields.keys():
        return "fields"
    for key, value in values.items():
        if not spec.fields[key].accepts(value):
            return "value"
    return None


def allowlist_digest() -> str:
    """The SHA-256 (hex) of :data:`REGISTRY`'s canonical form: what may leave a process.

    Names, levels, timestamp granularity, and each field's type and bound (the integer bound,
    or the sorted choices, or the identifier pattern) as JSON with sorted keys and no spaces;
    descriptions are not part of it. A log sidecar built with one digest refuses to start with
    a registry of another (a changed allow-list is a new release).
    """
    canonical = [
        {
            "name": spec.name,
            "level": spec.level.name,
            "time_resolution_millis": round(spec.time_resolution * 1000),
            "fields": [
                {
                    "name": field,
                    "kind": field_spec.kind.__name__,
                    "max_value": field_spec.max_value if field_spec.kind is int else None,
                    "choices": sorted(field_spec.choices) if field_spec.choices is not None else None,
                    "pattern": field_spec.pattern.pattern
                    if field_spec.kind is str and field_spec.choices is None
                    else None,
                }
                for field, field_spec in sorted(spec.fields.items())
            ],
        }
        for spec in sorted(REGISTRY.values(), key=lambda spec: spec.name)
    ]
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


#: Takes an allowed event (its spec and values) instead of the log; returns False to leave it
#: to the log (see :func:`install_sink`).
Sink = Callable[[EventSpec, Mapping[str, object]], bool]
_SINK: list[Sink | None] = [None]


def install_sink(sink: Sink | None) -> None:
    """Send every allowed event of this process to ``sink`` instead of the log (``None``: the log).

    Events are still checked (and counted) by :func:`emit` first, and still filtered by the
    log level. A sink that returns False for an event leaves it to the log: the fallback a
    log sink uses to report, once, that it cannot reach its sidecar.
    """
    _SINK[0] = sink


_METER = metrics.get_meter("privproc.events")
#: OpenTelemetry counters (no-ops until an operator installs a MeterProvider).
#: Their only attribute is the event name, a value from this registry.
_EMITTED_METRIC = _METER.create_counter("privproc.events.emitted", description="Events emitted, by name")
_REFUSED_METRIC = _METER.create_counter("privproc.events.refused", description="Events refused, by name")


class _Stats:
    """Counts of emitted and refused events, for tests and metrics."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.emitted: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()

    def count(self, bucket: Counter[str], name: str) -> None:
        with self._lock:
            bucket[name] += 1
        metric = _EMITTED_METRIC if bucket is self.emitted else _REFUSED_METRIC
        metric.add(1, {"event": name})


STATS = _Stats()


def emit(event: Event) -> bool:
    """Emit a declared event. Returns False (and counts it) if refused.

    A refused event is dropped whole: a value outside its field's bound or
    choices (or, from an object built around the type checker, an undeclared
    event or field set). Nothing of the refused values is written anywhere.
    """
    name = event.spec.name
    values = vars(event)
    refused = rejection(name, values)
    if refused is not None:
        STATS.count(STATS.refused, "<undeclared>" if refused == "undeclared" else name)
        return False
    STATS.count(STATS.emitted, name)
    if _LOGGER.isEnabledFor(event.spec.level):
        sink = _SINK[0]
        if sink is not None and sink(event.spec, values):
            return True
        record = {"ts": timestamp(timestamp_resolution(event.spec)), "event": name, **values}
        _LOGGER.log(event.spec.level, json.dumps(record, separators=(",", ":"), sort_keys=True))
    return True


def configure_logging(service: str, level: int | None = None) -> None:
    """Send events as JSON lines to stderr, tagged with the service name.

    The level comes from ``PRIVPROC_LOG_LEVEL`` (debug, info, warning, error)
    unless given. The CVM's processes (``predictor`` and its ``log-sidecar``) stamp every
    event, not only their own, with :data:`CVM_TIME_RESOLUTION`.
    """
    in_cvm = service in ("predictor", "log-sidecar")
    _PROCESS_TIME_RESOLUTION[0] = CVM_TIME_RESOLUTION if in_cvm else 0.001
    if level is None:
        name = os.environ.get("PRIVPROC_LOG_LEVEL", "info").upper()
        level = Level[name].value if name in Level.__members__ else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f'{{"service":"{service}","line":%(message)s}}'))
    root = logging.getLogger("privproc")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    # Libraries log free text (aiohttp access logs carry client addresses):
    # keep them quiet; our own events are the only log output.
    for noisy in ("aiohttp.access", "aiohttp.server", "aiohttp.web", "grpc", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)


# --- lifecycle -------------------------------------------------------------
class ServiceStarted(Event, name="service.started", level=Level.INFO):
    """A service is listening."""

    service: Service
    transport: Transport
    port: Port


class ServiceStopping(Event, name="service.stopping", level=Level.INFO):
    """A service began graceful shutdown."""

    service: Service


class ServiceStopped(Event, name="service.stopped", level=Level.INFO):
    """A service stopped."""

    service: Service


class IdentityIssued(Event, name="identity.issued", level=Level.INFO):
    """The gateway's mTLS certificate was issued from the verifier's CA and written (key first)."""

    #: False for the first pair a process writes, True for each renewal.
    renewal: Flag


class IdentityIssueFailed(Event, name="identity.issue_failed", level=Level.WARNING):
    """A renewed gateway certificate could not be issued or written; it is tried again shortly."""

    reason: Annotated[str, Choice("ca_unreadable", "unwritable")]


class StackReady(Event, name="stack.ready", level=Level.INFO):
    """privproc up: every service is healthy."""

    services: Annotated[int, Int(64)]


class StackChildExited(Event, name="stack.child_exited", level=Level.ERROR):
    """A stack child process exited unexpectedly."""

    service: Service
    code: Annotated[int, Int(255)]


class TaskFailed(Event, name="task.failed", level=Level.WARNING):
    """A supervised background task raised; it starts again after the backoff."""

    task: Ident
    reason: Ident
    exception: Ident
    attempt: Attempt
    backoff_millis: Millis


class TaskFatal(Event, name="task.fatal", level=Level.ERROR):
    """A supervised background task cannot go on (configuration): the service stops, exit status 1."""

    task: Ident
    reason: Ident
    exception: Ident


class ServiceFailed(Event, name="service.failed", level=Level.ERROR):
    """A service stopped because one of its background tasks could not go on."""

    service: Service
    task: Ident


class ServiceStartFailed(Event, name="service.start_failed", level=Level.ERROR):
    """A service whose stderr is closed (the CVM's predictor) could not start: the error's reason only."""

    service: Service
    reason: Ident


# --- errors ----------------------------------------------------------------
class RequestFailed(Event, name="request.failed", level=Level.INFO):
    """A request was refused with a typed error (reason only)."""

    service: Service
    transport: Transport
    reason: Ident


class RequestInternalError(Event, name="request.internal_error", level=Level.ERROR):
    """An unexpected exception; its type name only, never its text."""

    service: Service
    transport: Transport
    exception: Ident


class StreamCut(Event, name="stream.cut", level=Level.INFO):
    """A streamed answer was cut after it started (reason only): its reader sees it truncated."""

    service: Service
    transport: Transport
    reason: Ident


class TelemetryExportFailed(Event, name="telemetry.export_failed", level=Level.WARNING):
    """A process could not export its metrics, spans or logs to its collector (once per outage)."""

    signal: Annotated[str, Choice("metrics", "spans", "logs")]


# --- HTTP fronts (connection guard) ---------------------------------------
class HttpConnectionRefused(Event, name="http.connection_refused", level=Level.DEBUG):
    """A connection was refused at accept: its address's cap or the global cap was reached."""

    service: Service
    reason: Annotated[str, Choice("per_address", "global")]


class HttpConnectionTimeout(Event, name="http.connection_timeout", level=Level.DEBUG):
    """A connection was closed by a read deadline: nothing sent, a head or a body not complete in time."""

    service: Service
    phase: Annotated[str, Choice("idle", "head", "body")]


# --- gateway ---------------------------------------------------------------
class GatewayKeyRotated(Event, name="gateway.key_rotated", level=Level.INFO):
    """A new OHTTP key became current."""

    key_id: Annotated[int, Int(255)]
    accepted_keys: Annotated[int, Int(256)]


class GatewayKeyRetired(Event, name="gateway.key_retired", level=Level.INFO):
    """An OHTTP key left its grace period."""

    key_id: Annotated[int, Int(255)]


class GatewayKeysPublished(Event, name="gateway.keys_published", level=Level.INFO):
    """Key configurations published to the CDN."""

    key_id: Annotated[int, Int(255)]


class GatewayInnerRequest(Event, name="gateway.inner_request", level=Level.DEBUG):
    """An inner request was answered (route class and status only)."""

    route: Annotated[
        str,
        Choice(
            "health",
            "not_found",
            "misdirected",
            "malformed",
            "method_not_allowed",
            "token_required",
            "unavailable",
            "no_predictor",
            "session_opened",
            "session_continued",
            "bad_request",
            "failed",
            "deadline_exceeded",
        ),
    ]
    status: Status


class GatewaySessionStream(Event, name="gateway.session_stream", level=Level.DEBUG):
    """A session's stream of records from its predictor ended (how, only)."""

    # closed: the predictor closed the session; open: its stream ended with the session open;
    # deadline: the request's deadline passed; idle: the predictor sent nothing for the idle
    # timeout; lost: the predictor failed; cancelled: the reader (client or relay) went away.
    outcome: Annotated[str, Choice("closed", "open", "deadline", "idle", "lost", "cancelled")]


# --- relay -----------------------------------------------------------------
class RelayForwarded(Event, name="relay.forwarded", level=Level.DEBUG):
    """An encapsulated request was forwarded."""

    transport: Transport
    millis: Millis


class RelayRateLimited(Event, name="relay.rate_limited", level=Level.INFO):
    """A client was rate limited."""

    transport: Transport


# --- cdn -------------------------------------------------------------------
class CdnPublished(Event, name="cdn.published", level=Level.INFO):
    """A document was published."""

    document: Annotated[str, Choice("ohttp_keys", "issuer_directory", "checkpoint", "proof")]


class CdnPublishFailed(Event, name="cdn.publish_failed", level=Level.WARNING):
    """Publishing to the key CDN failed."""

    service: Service
    attempt: Attempt


class CdnPublishRefused(Event, name="cdn.publish_refused", level=Level.WARNING):
    """A publish without a valid credential."""


class CdnPublishOutOfScope(Event, name="cdn.publish_out_of_scope", level=Level.WARNING):
    """A publisher tried to write a document outside its credential's scope (its configured name only)."""

    publisher: Ident


# --- acs -------------------------------------------------------------------
class AcsIssued(Event, name="acs.issued", level=Level.INFO):
    """Tokens issued (type and count; never the account)."""

    token_type: TokenType
    count: Annotated[int, Int(128)]


class AcsKeyCreated(Event, name="acs.key_created", level=Level.INFO):
    """An issuer key was created."""

    token_type: TokenType
    epoch: Annotated[int, Int(2**40)]


class AcsKeyRetired(Event, name="acs.key_retired", level=Level.INFO):
    """An issuer key was retired."""

    token_type: TokenType
    epoch: Annotated[int, Int(2**40)]


class AcsDirectoryPublished(Event, name="acs.directory_published", level=Level.INFO):
    """Issuer directory published to the CDN."""

    keys: Annotated[int, Int(64)]


# --- client token wallet (on the device) -----------------------------------
class ClientWalletRefilled(Event, name="client.wallet_refilled", level=Level.INFO):
    """The token wallet bought a batch in the background, outside any request."""

    bought: Annotated[int, Int(1024)]
    held: Annotated[int, Int(10**6)]


class ClientLinkablePurchase(Event, name="client.linkable_purchase", level=Level.WARNING):
    """Tokens were bought inside a request (explicit opt-in): the issuer can link the account to it."""

    tokens: Annotated[int, Int(1024)]


# --- redemption (gateway) --------------------------------------------------
class GatewayTokenRedeemed(Event, name="gateway.token_redeemed", level=Level.DEBUG):
    """A token was accepted."""

    token_type: TokenType


class GatewayTokenRefused(Event, name="gateway.token_refused", level=Level.INFO):
    """A token was refused (reason only)."""

    reason: Annotated[
        str,
        Choice(
            "missing",
            "malformed",
            "unknown_key",
            "expired_key",
            "wrong_challenge",
            "invalid",
            "double_spend",
            "in_flight",
            "unavailable",
        ),
    ]


class GatewayIssuerKeysRefreshed(Event, name="gateway.issuer_keys_refreshed", level=Level.DEBUG):
    """Issuer keys reloaded."""

    keys: Annotated[int, Int(64)]


class GatewayPredictorDiscovered(Event, name="gateway.predictor_discovered", level=Level.INFO):
    """A predictor endpoint appeared in the predictor Service's endpoints (not yet admitted)."""

    target: Target


class GatewayPredictorAdmitted(Event, name="gateway.predictor_admitted", level=Level.INFO):
    """A predictor passed the mutually authenticated health check: sessions may be routed to it."""

    target: Target


class GatewayPredictorRefused(Event, name="gateway.predictor_refused", level=Level.WARNING):
    """A predictor failed the mutually authenticated health check (certificate or health): not routed."""

    target: Target


class GatewayPredictorDropped(Event, name="gateway.predictor_dropped", level=Level.INFO):
    """A predictor endpoint left the predictor Service's endpoints: no new session goes to it."""

    target: Target


class GatewayDiscoverySynced(Event, name="gateway.discovery_synced", level=Level.INFO):
    """The predictor Service's endpoints were listed afresh (at start, after an error or a 410)."""

    api: Annotated[str, Choice("endpointslices", "endpoints")]
    targets: Annotated[int, Int(4096)]


class GatewayIdentityReloaded(Event, name="gateway.identity_reloaded", level=Level.INFO):
    """The gateway's mTLS certificate changed on disk; new connections to predictors use it."""


class GatewayIdentityRefused(Event, name="gateway.identity_refused", level=Level.WARNING):
    """A changed mTLS certificate was not taken (the current one stays)."""

    reason: Annotated[str, Choice("unreadable", "key_mismatch")]


# --- ledger and witness ----------------------------------------------------
class LedgerAppended(Event, name="ledger.appended", level=Level.INFO):
    """A batch was appended and checkpointed."""

    entries: Annotated[int, Int(1 << 20)]
    size: Annotated[int, Int(2**53)]


class LedgerAppendRefused(Event, name="ledger.append_refused", level=Level.WARNING):
    """An append was refused."""

    reason: Annotated[str, Choice("publisher", "entry", "scope")]


class LedgerWitnessFailed(Event, name="ledger.witness_failed", level=Level.WARNING):
    """A witness did not cosign."""

    status: Status


class WitnessCosigned(Event, name="witness.cosigned", level=Level.INFO):
    """A checkpoint was cosigned."""

    size: Annotated[int, Int(2**53)]


class WitnessRefused(Event, name="witness.refused", level=Level.WARNING):
    """A checkpoint was refused."""

    reason: Annotated[str, Choice("bad_signature", "stale_old_size")]


class WitnessInconsistency(Event, name="witness.inconsistency", level=Level.ERROR):
    """A log showed a checkpoint that does not extend the one cosigned before: evidence kept."""

    reason: Annotated[str, Choice("split_view", "inconsistent")]


# --- verifier --------------------------------------------------------------
class VerifierAppraised(Event, name="verifier.appraised", level=Level.INFO):
    """Evidence was appraised (verdict and reason count)."""

    verified: Flag
    reasons: Annotated[int, Int(32)]


class VerifierLedgerSyncFailed(Event, name="verifier.ledger_sync_failed", level=Level.WARNING):
    """Reading releases from the ledger failed."""

    reason: Ident


class ClientEntryIgnored(Event, name="client.entry_ignored", level=Level.WARNING):
    """A log entry the client cannot read (malformed or of an older format) was skipped."""

    index: Annotated[int, Int(2**53)]


class VerifierEntryIgnored(Event, name="verifier.entry_ignored", level=Level.WARNING):
    """A log entry the verifier cannot read (malformed or of an older format) was skipped."""

    index: Annotated[int, Int(2**53)]


# --- predictor -------------------------------------------------------------
class PredictorSessionOpened(Event, name="predictor.session_opened", level=Level.DEBUG):
    """An RA-TLS session began (count only)."""

    sessions: Annotated[int, Int(1 << 16)]


# Nothing per request that depends on content (refusal code, refused or not, sizes, token
# counts, timings) leaves the CVM: requests are only counted (privproc.predictor.telemetry).
class PredictorSessionAnswered(Event, name="predictor.session_answered", level=Level.INFO):
    """A session got its one request answered (refused or not: nothing of the outcome) and was dropped."""


class PredictorSessionTotals(Event, name="predictor.session_totals", level=Level.INFO):
    """Sessions since the last report, by outcome (emitted on a timer)."""

    opened: Total
    completed: Total
    expired: Total
    evicted: Total
    busy: Total
    failed: Total


class PredictorTaskTotals(Event, name="predictor.task_totals", level=Level.INFO):
    """Requests since the last report, by task and outcome; only once enough requests were counted."""

    requests: Total
    answered: Total
    summarize: Total
    suggest_rewrite: Total
    other: Total
    # One count per RefusalCode, ``refused_<code>`` (checked below).
    refused_violence: Total
    refused_weapons: Total
    refused_self_harm: Total
    refused_sexual_minors: Total
    refused_illegal_drugs: Total
    refused_malware: Total
    refused_hate: Total
    refused_output_blocked: Total
    refused_unsupported_task: Total
    refused_unsupported_style: Total
    refused_empty_input: Total
    refused_input_too_large: Total
    refused_no_output: Total


if {f for f in PredictorTaskTotals.spec.fields if f.startswith("refused_")} != {
    f"refused_{code.value}" for code in RefusalCode
}:
    raise TypeError("PredictorTaskTotals must count each RefusalCode in a refused_<code> field")


class PredictorGenerationTotals(Event, name="predictor.generation_totals", level=Level.INFO):
    """Tokens generated and processing times (coarse buckets) since the last report; with task_totals."""

    # Emitted with predictor.task_totals, under its threshold: only once enough requests were counted.

    requests: Total
    tokens_generated: Total
    # One count per bucket of privproc.predictor.telemetry.LATENCY_BUCKETS (checked there).
    latency_under_1s: Total
    latency_under_5s: Total
    latency_under_30s: Total
    latency_30s_or_more: Total


class PredictorWriteRefused(Event, name="predictor.write_refused", level=Level.WARNING):
    """The write guard refused a file-system write (the audit event only, never the path)."""

    operation: Annotated[
        str,
        Choice(
            "open",
            "os.mkdir",
            "os.rename",
            "os.remove",
            "os.rmdir",
            "os.link",
            "os.symlink",
            "os.truncate",
            "os.chmod",
            "os.chown",
            "os.utime",
            "os.setxattr",
            "os.removexattr",
            "os.chflags",
            "shutil.copyfile",
            "shutil.copymode",
            "shutil.copystat",
            "shutil.copytree",
            "shutil.rmtree",
            "shutil.move",
            "shutil.chown",
            "shutil.make_archive",
            "shutil.unpack_archive",
            "sqlite3.connect",
            "tempfile.mkstemp",
            "tempfile.mkdtemp",
        ),
    ]


class PredictorIdentityRenewed(Event, name="predictor.identity_renewed", level=Level.INFO):
    """The CVM attested again and now presents a new workload certificate."""

    valid_seconds: Annotated[int, Int(1 << 24)]


class PredictorIdentityRenewalFailed(Event, name="predictor.identity_renewal_failed", level=Level.WARNING):
    """Renewing the workload certificate failed; the current one serves until it expires."""

    reason: Ident
    seconds_left: Annotated[int, Int(1 << 24)]


class PredictorStapleRefreshed(Event, name="predictor.staple_refreshed", level=Level.INFO):
    """The CVM's release staple now proves its release at the log's newest checkpoint."""

    log_size: Annotated[int, Int(1 << 40)]


class PredictorStapleFailed(Event, name="predictor.staple_failed", level=Level.WARNING):
    """Refreshing the release staple failed; the previous staple (if any) is still presented."""

    reason: Ident
    stapled: Flag


class ClientCheckpointRefreshed(Event, name="client.checkpoint_refreshed", level=Level.DEBUG):
    """The client moved its stored checkpoint forward outside any session and ran its audits."""

    log_size: Annotated[int, Int(1 << 40)]
    audits: Annotated[int, Int(1 << 16)]


class ClientSplitView(Event, name="client.split_view", level=Level.ERROR):
    """A consistency audit failed: the log showed this client two histories. It refuses every request."""

    origin: Ident


class PredictorHardened(Event, name="predictor.hardened", level=Level.INFO):
    """The predictor is about to serve: its write guard and core-dump settings, read back."""

    write_guard: Flag
    core_dumps_off: Flag


class PredictorGenerationStopped(Event, name="predictor.generation_stopped", level=Level.INFO):
    """A request's model work stopped unfinished: its deadline passed, or its caller went away."""

    # stage: still queued (it never ran) or generating (the model loop stopped at its next
    # token). Nothing of the request: the reason is the caller's, not its content.

    reason: Annotated[str, Choice("deadline", "cancelled")]
    stage: Annotated[str, Choice("queued", "generating")]


class PredictorGenerationWorkerFailed(Event, name="predictor.generation_worker_failed", level=Level.ERROR):
    """The generation worker thread failed outside any job (a bug): a new one is started."""

    exception: Ident
    restarts: Attempt


# --- log sidecar (in the CVM) and the processes writing to it ---------------
class SidecarDropped(Event, name="sidecar.dropped", level=Level.INFO):
    """The log sidecar's totals since it started, on a fixed interval: records let out, drops by reason."""

    # The reasons: over the size bound, not a well-formed record, an undeclared event, not
    # exactly the event's fields, a value outside its field's bound.
    accepted: Total
    oversize: Total
    malformed: Total
    undeclared: Total
    fields: Total
    value: Total


class LogSinkTotals(Event, name="log_sink.totals", level=Level.INFO):
    """A process logging through its sidecar, since it started: its sink's events, other output silenced."""

    # Offered to the sink, sent, dropped (queue full), lost (connection failed, or closed first);
    # silenced: stderr writes, library log records, warnings, uncaught exceptions (runtime.quiet).

    offered: Total
    sent: Total
    dropped: Total
    lost: Total
    silenced: Total


class LogSinkUnavailable(Event, name="log_sink.unavailable", level=Level.WARNING):
    """A process cannot reach its log sidecar (once per outage): its events are dropped, counted."""

    reason: Ident
