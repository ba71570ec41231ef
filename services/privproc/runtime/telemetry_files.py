"""The telemetry directory's layout and the metric names its readers look for.

Written by :mod:`privproc.runtime.telemetry` (each service's metrics and spans), the log
sidecar (what it let out of the predictor) and ``privproc up`` (which puts them all under
``STATE_DIR/telemetry``); read by ``privproc stats``. Declared here, once, without importing
the OpenTelemetry SDK, so that a command that only reads the files does not load it.
"""

from __future__ import annotations

#: Under ``privproc up``'s state directory: where the services' files go without a collector.
STATE_SUBDIR = "telemetry"
#: ``<service>.metrics.jsonl``: one line per data point per export (cumulative values).
METRICS_SUFFIX = ".metrics.jsonl"
#: ``<service>.spans.jsonl``: one line per span.
SPANS_SUFFIX = ".spans.jsonl"
#: What the predictor's log sidecar let out, as JSON lines.
PREDICTOR_EVENTS_FILE = "predictor-events.jsonl"

#: Request duration histograms (OpenTelemetry semantic conventions).
RPC_SERVER_DURATION = "rpc.server.duration"
HTTP_SERVER_DURATION = "http.server.request.duration"
#: Requests refused or failed, by ``error.type``.
REQUEST_ERRORS = "privproc.server.errors"
#: The log sidecar's records let out and dropped, by ``privproc.field``.
SIDECAR_RECORDS = "privproc.sidecar.records"
