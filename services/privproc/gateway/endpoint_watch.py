"""The predictor Service's endpoints, read from the Kubernetes API: list, then watch, in a thread.

The I/O half of :mod:`privproc.gateway.discovery`. With the pod's service
account (in-cluster configuration), it lists the Service's EndpointSlices
(``discovery.k8s.io/v1``; a 404 there — Kubernetes 1.20 — and it uses the
core Endpoints object instead), then watches them from the list's
``resourceVersion``, with bookmarks, for up to ``watch_seconds`` at a time,
resuming from the last version seen. An ``ERROR`` event (``410 Gone``) or a
410 reply lists afresh. Any other failure raises out of :meth:`run`, whose
caller supervises it (``task.failed``, then a backoff before the next list).

The client is blocking, so each list-and-watch runs in a daemon thread and
hands every changed target set to the event loop with
``call_soon_threadsafe``: the loop never waits on the API, and a watch
blocked in a read never holds up the process's exit. The ``kubernetes``
package is imported here only, when discovery is on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

from privproc import events
from privproc.gateway.discovery import HTTP_GONE, Api, EndpointState, WatchExpired

#: A watch's server-side length; it is then resumed from the last version seen.
WATCH_SECONDS = 240
#: Connect and read deadlines of one request (a watch's read deadline adds its length).
CONNECT_SECONDS = 10.0
READ_SECONDS = 30.0
#: Largest watch event line accepted (a slice holds at most 1000 endpoints).
MAX_LINE_BYTES = 4 << 20


def in_cluster_client() -> Any:
    """An API client with the pod's service account (token and CA mounted by the kubelet)."""
    from kubernetes import client, config

    configuration = client.Configuration()
    load: Any = config.load_incluster_config  # untyped in the package
    load(client_configuration=configuration)
    return client.ApiClient(configuration)


def _lines(response: Any) -> Iterator[bytes]:
    """The lines of a streamed watch response, as they arrive."""
    buffer = b""
    for chunk in response.stream(64 << 10, decode_content=True):
        buffer += chunk
        while (end := buffer.find(b"\n")) >= 0:
            line, buffer = buffer[:end], buffer[end + 1 :]
            if line.strip():
                yield line
        if len(buffer) > MAX_LINE_BYTES:
            raise ValueError("a watch event too large")
    if buffer.strip():
        yield buffer


class EndpointWatcher:
    """Reports the predictor Service's ready targets to ``on_change`` (called on the event loop).

    ``api_client`` makes the Kubernetes API client (default: in-cluster).
    """

    def __init__(
        self,
        namespace: str,
        service: str,
        port_name: str,
        on_change: Callable[[frozenset[str]], None],
        *,
        api_client: Callable[[], Any] = in_cluster_client,
        watch_seconds: int = WATCH_SECONDS,
    ) -> None:
        self.namespace = namespace
        self.service = service
        self.port_name = port_name
        self._on_change = on_change
        self._make_client = api_client
        self._watch_seconds = watch_seconds
        self._client: Any = None
        #: Which API the cluster serves (found by the first list), and what it said so far.
        self._state: EndpointState | None = None
        self._reported: frozenset[str] | None = None
        self._stopping = threading.Event()
        self._response: Any = None

    async def run(self) -> None:
        """List and watch until the watch ends, again and again; raises on a failure (supervise it)."""
        while True:
            await self._in_thread()

    def stop(self) -> None:
        """Make a running list-and-watch end soon (its thread is a daemon: it never holds the exit).

        Never blocks: closing the response here would wait for the reading thread's lock (up to
        its read deadline); shutting its socket down wakes that read at once instead.
        """
        self._stopping.set()
        connection = getattr(self._response, "connection", None)
        sock = getattr(connection, "sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    async def _in_thread(self) -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def report(targets: frozenset[str]) -> None:
            loop.call_soon_threadsafe(self._report, targets)

        def finish(error: BaseException | None) -> None:
            if done.done():
                return
            if error is None:
                done.set_result(None)
            else:
                done.set_exception(error)

        def body() -> None:
            try:
                self._session(report)
            except BaseException as err:  # handed to the loop: the supervisor sees it
                if self._state is not None:
                    self._state.resource_version = None  # after a failure, list afresh
                loop.call_soon_threadsafe(finish, err)
            else:
                loop.call_soon_threadsafe(finish, None)

        threading.Thread(target=body, name="privproc-discovery", daemon=True).start()
        try:
            await done
        except asyncio.CancelledError:
            self.stop()
            raise

    def _report(self, targets: frozenset[str]) -> None:
        if targets != self._reported:
            self._reported = targets
            self._on_change(targets)

    # --- in the thread ----------------------------------------------------------------------

    def _api(self) -> Any:
        if self._client is None:
            self._client = self._make_client()
        return self._client

    def _call(self, api: Api, **options: Any) -> Any:
        """One list (or watch, with ``watch=True``) of the predictor Service's objects, unread."""
        from kubernetes import client

        if api == "endpointslices":
            return client.DiscoveryV1Api(self._api()).list_namespaced_endpoint_slice(
                self.namespace,
                label_selector=f"kubernetes.io/service-name={self.service}",
                _preload_content=False,
                **options,
            )
        return client.CoreV1Api(self._api()).list_namespaced_endpoints(
            self.namespace, field_selector=f"metadata.name={self.service}", _preload_content=False, **options
        )

    def _relist(self) -> EndpointState:
        from kubernetes.client.exceptions import ApiException

        apis: tuple[Api, ...] = (
            (self._state.api,) if self._state is not None else ("endpointslices", "endpoints")
        )
        for api in apis:
            try:
                response = self._call(api, _request_timeout=(CONNECT_SECONDS, READ_SECONDS))
            except ApiException as err:
                if err.status == 404 and api == "endpointslices" and len(apis) > 1:
                    continue  # discovery.k8s.io/v1 is not served (Kubernetes 1.20): Endpoints
                raise
            try:
                reply = json.loads(response.data)
            finally:
                response.release_conn()
            state = EndpointState(api, self.service, self.port_name)
            targets = state.relist(reply)
            self._state = state
            events.emit(events.GatewayDiscoverySynced(api=api, targets=len(targets)))
            return state
        raise AssertionError("unreachable: the Endpoints API is always tried last")

    def _session(self, report: Callable[[frozenset[str]], None]) -> None:
        """List if there is nothing to resume from, then watch until the watch ends."""
        from kubernetes.client.exceptions import ApiException

        state = self._state
        if state is None or state.resource_version is None:
            state = self._relist()
            report(state.targets())
        try:
            response = self._call(
                state.api,
                watch=True,
                resource_version=state.resource_version,
                allow_watch_bookmarks=True,
                timeout_seconds=self._watch_seconds,
                _request_timeout=(CONNECT_SECONDS, self._watch_seconds + READ_SECONDS),
            )
        except ApiException as err:
            if err.status == HTTP_GONE:
                state.resource_version = None  # too old: the next session lists afresh
                return
            raise
        self._response = response
        try:
            for line in _lines(response):
                if self._stopping.is_set():
                    return
                try:
                    report(state.apply(json.loads(line)))
                except WatchExpired:
                    state.resource_version = None
                    return
        finally:
            self._response = None
            response.release_conn()
