"""The log event registry: every event privproc may emit, declared once.

Code never logs free-form strings. It calls :func:`emit` with the name of an
event declared here and typed, bounded fields; anything else is refused and
counted. The allow-list log sidecar of the CVM reads this same registry, so
what can leave a service is exactly what is declared below.

Field values are deliberately poor: small integers, booleans, and strings
drawn from a declared set of choices or matching a short identifier
pattern. There is no field type that can carry message content, a token, a
key or an address — by construction, not by review.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum

from opentelemetry import metrics

from privproc.wire.refusal import RefusalCode

_LOGGER = logging.getLogger("privproc.events")

#: Strings that are not from a choice set must look like identifiers.
_IDENTIFIER = re.compile(r"^[a-z0-9][a-z0-9_.:/-]{0,63}$")


class Level(IntEnum):
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
    #: For ``str``: the allowed values; ``None`` means "identifier pattern".
    choices: frozenset[str] | None = None

    def accepts(self, value: object) -> bool:
        if self.kind is bool:
            return isinstance(value, bool)
        if self.kind is int:
            return isinstance(value, int) and not isinstance(value, bool) and abs(value) <= self.max_value
        if not isinstance(value, str):
            return False
        if self.choices is not None:
            return value in self.choices
        return bool(_IDENTIFIER.match(value))


def Int(max_value: int = 2**53) -> FieldSpec:
    return FieldSpec(int, max_value=max_value)


def Choice(*values: str) -> FieldSpec:
    return FieldSpec(str, choices=frozenset(values))


IDENT = FieldSpec(str)
BOOL = FieldSpec(bool)
MILLIS = Int(10**9)
PORT = Int(65535)


@dataclass(frozen=True)
class Event:
    name: str
    level: Level
    description: str
    fields: Mapping[str, FieldSpec] = field(default_factory=dict)
    #: Granularity of the event's timestamp (seconds; see :func:`timestamp_resolution`).
    time_resolution: float = 0.001


REGISTRY: dict[str, Event] = {}

#: Timestamp granularity of the CVM's events. A per-request event of the predictor with a
#: millisecond timestamp lines up with the gateway's and relay's events for that request.
CVM_TIME_RESOLUTION = 60.0
#: This process's floor for every event's timestamp granularity (set by configure_logging).
_PROCESS_TIME_RESOLUTION = [0.001]


def timestamp_resolution(event: Event) -> float:
    """The granularity of ``event``'s timestamp: its own, coarsened for the whole process when the
    process is the CVM (:func:`configure_logging` with ``predictor``)."""
    return max(event.time_resolution, _PROCESS_TIME_RESOLUTION[0])


def _timestamp(resolution: float) -> float | int:
    now = time.time()
    if resolution >= 1:
        return int(now // resolution * resolution)
    return round(now, 3)


def declare(name: str, level: Level, description: str, **fields: FieldSpec) -> Event:
    """Declare an event; each name exactly once. ``predictor.*`` events carry coarse time."""
    if name in REGISTRY:
        raise ValueError("event declared twice")
    if not _IDENTIFIER.match(name):
        raise ValueError("event names are identifiers")
    resolution = CVM_TIME_RESOLUTION if name.startswith("predictor.") else 0.001
    event = Event(name, level, description, dict(fields), resolution)
    REGISTRY[name] = event
    return event


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


def emit(name: str, **values: object) -> bool:
    """Emit a declared event. Returns False (and counts it) if refused.

    A refused event is dropped whole: an undeclared name, an undeclared or
    missing field, or a value outside its bound. Nothing of the refused
    values is written anywhere.
    """
    event = REGISTRY.get(name)
    if event is None or set(values) != set(event.fields):
        STATS.count(STATS.refused, name if event is not None else "<undeclared>")
        return False
    for key, value in values.items():
        if not event.fields[key].accepts(value):
            STATS.count(STATS.refused, name)
            return False
    STATS.count(STATS.emitted, name)
    if _LOGGER.isEnabledFor(event.level):
        record = {"ts": _timestamp(timestamp_resolution(event)), "event": name, **values}
        _LOGGER.log(event.level, json.dumps(record, separators=(",", ":"), sort_keys=True))
    return True


def configure_logging(service: str, level: int | None = None) -> None:
    """Send events as JSON lines to stderr, tagged with the service name.

    The level comes from ``PRIVPROC_LOG_LEVEL`` (debug, info, warning, error)
    unless given. The CVM's process (``predictor``) stamps every event, not only its own, with
    :data:`CVM_TIME_RESOLUTION`.
    """
    _PROCESS_TIME_RESOLUTION[0] = CVM_TIME_RESOLUTION if service == "predictor" else 0.001
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


SERVICES = Choice("cdn", "gateway", "relay", "stack", "acs", "ledger", "verifier", "predictor", "witness")
TRANSPORTS = Choice("grpc", "http")

# --- lifecycle -------------------------------------------------------------
SERVICE_STARTED = declare(
    "service.started",
    Level.INFO,
    "A service is listening.",
    service=SERVICES,
    transport=TRANSPORTS,
    port=PORT,
)
SERVICE_STOPPING = declare(
    "service.stopping", Level.INFO, "A service began graceful shutdown.", service=SERVICES
)
SERVICE_STOPPED = declare("service.stopped", Level.INFO, "A service stopped.", service=SERVICES)
STACK_IDENTITY_RENEWED = declare(
    "stack.identity_renewed",
    Level.INFO,
    "privproc up issued a service a fresh mTLS certificate from the verifier's CA.",
    service=SERVICES,
)
STACK_IDENTITY_RENEWAL_FAILED = declare(
    "stack.identity_renewal_failed",
    Level.WARNING,
    "privproc up could not write a service's renewed certificate; it tries again shortly.",
    service=SERVICES,
)
STACK_READY = declare("stack.ready", Level.INFO, "privproc up: every service is healthy.", services=Int(64))
STACK_CHILD_EXITED = declare(
    "stack.child_exited",
    Level.ERROR,
    "A stack child process exited unexpectedly.",
    service=SERVICES,
    code=Int(255),
)
TASK_FAILED = declare(
    "task.failed",
    Level.WARNING,
    "A supervised background task raised; it starts again after the backoff.",
    task=IDENT,
    reason=IDENT,
    exception=IDENT,
    attempt=Int(10**6),
    backoff_millis=MILLIS,
)
TASK_FATAL = declare(
    "task.fatal",
    Level.ERROR,
    "A supervised background task cannot go on (configuration): the service stops, exit status 1.",
    task=IDENT,
    reason=IDENT,
    exception=IDENT,
)
SERVICE_FAILED = declare(
    "service.failed",
    Level.ERROR,
    "A service stopped because one of its background tasks could not go on.",
    service=SERVICES,
    task=IDENT,
)

# --- errors ----------------------------------------------------------------
REQUEST_FAILED = declare(
    "request.failed",
    Level.INFO,
    "A request was refused with a typed error (reason only).",
    service=SERVICES,
    transport=TRANSPORTS,
    reason=IDENT,
)
INTERNAL_ERROR = declare(
    "request.internal_error",
    Level.ERROR,
    "An unexpected exception; its type name only, never its text.",
    service=SERVICES,
    transport=TRANSPORTS,
    exception=IDENT,
)

# --- HTTP fronts (connection guard) ---------------------------------------
HTTP_CONNECTION_REFUSED = declare(
    "http.connection_refused",
    Level.DEBUG,
    "A connection was refused at accept: its address's cap or the global cap was reached.",
    service=SERVICES,
    reason=Choice("per_address", "global"),
)
HTTP_CONNECTION_TIMEOUT = declare(
    "http.connection_timeout",
    Level.DEBUG,
    "A connection was closed by a read deadline: nothing sent, a head or a body not complete in time.",
    service=SERVICES,
    phase=Choice("idle", "head", "body"),
)

# --- gateway ---------------------------------------------------------------
GATEWAY_KEY_ROTATED = declare(
    "gateway.key_rotated",
    Level.INFO,
    "A new OHTTP key became current.",
    key_id=Int(255),
    accepted_keys=Int(256),
)
GATEWAY_KEY_RETIRED = declare(
    "gateway.key_retired", Level.INFO, "An OHTTP key left its grace period.", key_id=Int(255)
)
GATEWAY_KEYS_PUBLISHED = declare(
    "gateway.keys_published", Level.INFO, "Key configurations published to the CDN.", key_id=Int(255)
)
GATEWAY_PUBLISH_FAILED = declare(
    "gateway.publish_failed",
    Level.WARNING,
    "Publishing key configurations to the CDN failed.",
    attempt=Int(10**6),
)
GATEWAY_INNER_REQUEST = declare(
    "gateway.inner_request",
    Level.DEBUG,
    "An inner request was answered (route class and status only).",
    route=Choice(
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
    ),
    status=Int(599),
)

# --- relay -----------------------------------------------------------------
RELAY_FORWARDED = declare(
    "relay.forwarded",
    Level.DEBUG,
    "An encapsulated request was forwarded.",
    transport=TRANSPORTS,
    millis=MILLIS,
)
RELAY_RATE_LIMITED = declare(
    "relay.rate_limited", Level.INFO, "A client was rate limited.", transport=TRANSPORTS
)

# --- cdn -------------------------------------------------------------------
CDN_PUBLISHED = declare(
    "cdn.published",
    Level.INFO,
    "A document was published.",
    document=Choice("ohttp_keys", "issuer_directory", "checkpoint", "proof"),
)
CDN_PUBLISH_FAILED = declare(
    "cdn.publish_failed",
    Level.WARNING,
    "Publishing to the key CDN failed.",
    service=SERVICES,
    attempt=Int(10**6),
)
CDN_PUBLISH_REFUSED = declare("cdn.publish_refused", Level.WARNING, "A publish without a valid credential.")
CDN_PUBLISH_OUT_OF_SCOPE = declare(
    "cdn.publish_out_of_scope",
    Level.WARNING,
    "A publisher tried to write a document outside its credential's scope (its configured name only).",
    publisher=IDENT,
)

# --- acs -------------------------------------------------------------------
ACS_ISSUED = declare(
    "acs.issued",
    Level.INFO,
    "Tokens issued (type and count; never the account).",
    token_type=Int(0xFFFF),
    count=Int(128),
)
ACS_KEY_CREATED = declare(
    "acs.key_created", Level.INFO, "An issuer key was created.", token_type=Int(0xFFFF), epoch=Int(2**40)
)
ACS_KEY_RETIRED = declare(
    "acs.key_retired", Level.INFO, "An issuer key was retired.", token_type=Int(0xFFFF), epoch=Int(2**40)
)
ACS_DIRECTORY_PUBLISHED = declare(
    "acs.directory_published", Level.INFO, "Issuer directory published to the CDN.", keys=Int(64)
)
ACS_PUBLISH_FAILED = declare(
    "acs.publish_failed", Level.WARNING, "Publishing the issuer directory failed.", attempt=Int(10**6)
)

# --- client token wallet (on the device) -----------------------------------
CLIENT_WALLET_REFILLED = declare(
    "client.wallet_refilled",
    Level.INFO,
    "The token wallet bought a batch in the background, outside any request.",
    bought=Int(1024),
    held=Int(10**6),
)
CLIENT_LINKABLE_PURCHASE = declare(
    "client.linkable_purchase",
    Level.WARNING,
    "Tokens were bought inside a request (explicit opt-in): the issuer can link the account to it.",
    tokens=Int(1024),
)

# --- redemption (gateway) --------------------------------------------------
TOKEN_REDEEMED = declare(
    "gateway.token_redeemed", Level.DEBUG, "A token was accepted.", token_type=Int(0xFFFF)
)
TOKEN_REFUSED = declare(
    "gateway.token_refused",
    Level.INFO,
    "A token was refused (reason only).",
    reason=Choice(
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
)
GATEWAY_KEYS_REFRESHED = declare(
    "gateway.issuer_keys_refreshed", Level.DEBUG, "Issuer keys reloaded.", keys=Int(64)
)
GATEWAY_IDENTITY_RELOADED = declare(
    "gateway.identity_reloaded",
    Level.INFO,
    "The gateway's mTLS certificate changed on disk; new connections to predictors use it.",
)
GATEWAY_IDENTITY_REFUSED = declare(
    "gateway.identity_refused",
    Level.WARNING,
    "A changed mTLS certificate was not taken (the current one stays).",
    reason=Choice("unreadable", "key_mismatch"),
)

# --- ledger and witness ----------------------------------------------------
LEDGER_APPENDED = declare(
    "ledger.appended",
    Level.INFO,
    "A batch was appended and checkpointed.",
    entries=Int(1 << 20),
    size=Int(2**53),
)
LEDGER_APPEND_REFUSED = declare(
    "ledger.append_refused",
    Level.WARNING,
    "An append was refused.",
    reason=Choice("publisher", "entry", "scope"),
)
LEDGER_WITNESS_FAILED = declare(
    "ledger.witness_failed", Level.WARNING, "A witness did not cosign.", status=Int(599)
)
WITNESS_COSIGNED = declare("witness.cosigned", Level.INFO, "A checkpoint was cosigned.", size=Int(2**53))
WITNESS_REFUSED = declare(
    "witness.refused",
    Level.WARNING,
    "A checkpoint was refused.",
    reason=Choice("bad_signature", "stale_old_size"),
)
WITNESS_INCONSISTENCY = declare(
    "witness.inconsistency",
    Level.ERROR,
    "A log showed a checkpoint that does not extend the one cosigned before: evidence kept.",
    reason=Choice("split_view", "inconsistent"),
)

# --- verifier --------------------------------------------------------------
VERIFIER_APPRAISED = declare(
    "verifier.appraised",
    Level.INFO,
    "Evidence was appraised (verdict and reason count).",
    verified=BOOL,
    reasons=Int(32),
)
VERIFIER_SYNC_FAILED = declare(
    "verifier.ledger_sync_failed", Level.WARNING, "Reading releases from the ledger failed.", reason=IDENT
)
CLIENT_ENTRY_IGNORED = declare(
    "client.entry_ignored",
    Level.WARNING,
    "A log entry the client cannot read (malformed or of an older format) was skipped.",
    index=Int(2**53),
)
VERIFIER_ENTRY_IGNORED = declare(
    "verifier.entry_ignored",
    Level.WARNING,
    "A log entry the verifier cannot read (malformed or of an older format) was skipped.",
    index=Int(2**53),
)

# --- predictor -------------------------------------------------------------
PREDICTOR_SESSION_OPENED = declare(
    "predictor.session_opened", Level.DEBUG, "An RA-TLS session began (count only).", sessions=Int(1 << 16)
)
# Nothing per request that depends on content (refusal code, refused or not, sizes, token
# counts, timings) leaves the CVM: requests are only counted (privproc.predictor.telemetry).
PREDICTOR_SESSION_ANSWERED = declare(
    "predictor.session_answered",
    Level.INFO,
    "A session got its one request answered (refused or not: nothing of the outcome) and was dropped.",
)
PREDICTOR_SESSION_TOTALS = declare(
    "predictor.session_totals",
    Level.INFO,
    "Sessions since the last report, by outcome (emitted on a timer).",
    opened=Int(1 << 32),
    completed=Int(1 << 32),
    expired=Int(1 << 32),
    evicted=Int(1 << 32),
    busy=Int(1 << 32),
    failed=Int(1 << 32),
)
PREDICTOR_TASK_TOTALS = declare(
    "predictor.task_totals",
    Level.INFO,
    "Requests since the last report, by task and outcome; only once enough requests were counted.",
    requests=Int(1 << 32),
    answered=Int(1 << 32),
    summarize=Int(1 << 32),
    suggest_rewrite=Int(1 << 32),
    other=Int(1 << 32),
    **{f"refused_{code.value}": Int(1 << 32) for code in RefusalCode},
)
PREDICTOR_WRITE_REFUSED = declare(
    "predictor.write_refused",
    Level.WARNING,
    "The write guard refused a file-system write (the audit event only, never the path).",
    operation=Choice(
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
)
PREDICTOR_IDENTITY_RENEWED = declare(
    "predictor.identity_renewed",
    Level.INFO,
    "The CVM attested again and now presents a new workload certificate.",
    valid_seconds=Int(1 << 24),
)
PREDICTOR_IDENTITY_RENEWAL_FAILED = declare(
    "predictor.identity_renewal_failed",
    Level.WARNING,
    "Renewing the workload certificate failed; the current one serves until it expires.",
    reason=IDENT,
    seconds_left=Int(1 << 24),
)
PREDICTOR_STAPLE_REFRESHED = declare(
    "predictor.staple_refreshed",
    Level.INFO,
    "The CVM's release staple now proves its release at the log's newest checkpoint.",
    log_size=Int(1 << 40),
)
PREDICTOR_STAPLE_FAILED = declare(
    "predictor.staple_failed",
    Level.WARNING,
    "Refreshing the release staple failed; the previous staple (if any) is still presented.",
    reason=IDENT,
    stapled=BOOL,
)
CLIENT_CHECKPOINT_REFRESHED = declare(
    "client.checkpoint_refreshed",
    Level.DEBUG,
    "The client moved its stored checkpoint forward outside any session and ran its audits.",
    log_size=Int(1 << 40),
    audits=Int(1 << 16),
)
CLIENT_SPLIT_VIEW = declare(
    "client.split_view",
    Level.ERROR,
    "A consistency audit failed: the log showed this client two histories. It refuses every request.",
    origin=IDENT,
)
PREDICTOR_HARDENED = declare(
    "predictor.hardened",
    Level.INFO,
    "The predictor is about to serve: its write guard and core-dump settings, read back.",
    write_guard=BOOL,
    core_dumps_off=BOOL,
)
