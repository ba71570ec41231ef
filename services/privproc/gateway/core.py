"""The gateway's request path, independent of transport.

``handle`` takes the bytes of a ``message/ohttp-req`` body and returns the
bytes of the ``message/ohttp-res`` body. Failures before the request is
decapsulated raise typed errors the adapters map to a status in the clear;
from the moment it is decapsulated, every answer — errors included — goes
back encapsulated, so the relay learns nothing from it — not even its
length: every answer is padded to one of
:data:`~privproc.wire.padding.MESSAGE_BUCKETS` (RFC 9292, Section 3.8), so a
summary, a refusal, an error and a 401 challenge of the same bucket are the
same size on the wire.
"""

from __future__ import annotations

from opentelemetry import metrics

from privproc.errors import LimitExceededError, WireError
from privproc.gateway.keys import KeySchedule
from privproc.gateway.routes import Router, problem
from privproc.runtime import telemetry
from privproc.wire import bhttp, padding

#: Largest encapsulated request the gateway reads (bytes).
DEFAULT_MAX_REQUEST_BYTES = 256 << 10

INNER_LIMITS = bhttp.Limits(
    max_message_bytes=DEFAULT_MAX_REQUEST_BYTES,
    max_fields=64,
    max_field_section_bytes=16 << 10,
    max_content_bytes=DEFAULT_MAX_REQUEST_BYTES,
    max_informational=0,
)

#: Inner requests answered, by their (encapsulated) status: what the ``gateway.inner_request``
#: events count, without the route.
_INNER_REQUESTS = metrics.get_meter("privproc.gateway").create_counter(
    "privproc.gateway.inner_requests", unit="{request}"
)


class GatewayCore:
    """Decapsulate, route, encapsulate."""

    def __init__(
        self,
        schedule: KeySchedule,
        router: Router,
        *,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    ) -> None:
        self.schedule = schedule
        self.router = router
        self.max_request_bytes = max_request_bytes

    async def handle(self, encapsulated: bytes) -> bytes:
        if len(encapsulated) > self.max_request_bytes:
            raise LimitExceededError("encapsulated request too large")
        # Steps of this one request, inside the front's server span (fixed names, no attributes).
        with telemetry.span("gateway.decapsulate"):
            inner, context = self.schedule.keyring.decapsulate_request(encapsulated)
        try:
            request = bhttp.decode_request(inner, INNER_LIMITS)
        except WireError:
            response = problem(400, "malformed inner request")
        else:
            with telemetry.span("gateway.route"):
                response = await self.router.dispatch(request)
        _INNER_REQUESTS.add(1, {"http.response.status_code": response.status})
        with telemetry.span("gateway.encapsulate"):
            return context.encapsulate_response(padded_response(response))


def padded_response(response: bhttp.Response) -> bytes:
    """``response`` as Binary HTTP, zero-padded to its size bucket.

    An answer too large for every bucket (the routes never make one) becomes
    a padded 500: nothing leaves at its own length.
    """
    try:
        return padding.pad_with_zeros(bhttp.encode_response(response), padding.MESSAGE_BUCKETS)
    except LimitExceededError:
        fallback = bhttp.encode_response(problem(500, "answer too large"))
        return padding.pad_with_zeros(fallback, padding.MESSAGE_BUCKETS)
