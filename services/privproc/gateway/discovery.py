"""Which predictors the Kubernetes API says exist: the predictor Service's ready endpoints — sans-I/O.

The gateway watches the predictor Service's EndpointSlices
(``discovery.k8s.io/v1``), or its Endpoints object where that API is not
served (Kubernetes 1.20). This module turns what the API returns — list
replies and watch events, as parsed JSON — into the set of ready targets
``IP:PORT`` for the named port (IPv6 addresses in brackets); the adapter
(:mod:`privproc.gateway.kubernetes`) does the I/O. Being listed is not
being admitted: the gateway routes to a target only once its mutually
authenticated health check passes (:mod:`privproc.gateway.predictors`).

Readiness follows the API's documentation. An EndpointSlice endpoint's
``conditions.ready`` true or absent ("unknown state ... should be
interpreted as ready") counts; false (not ready, or terminating) does not.
An Endpoints subset's ``addresses`` are the ready ones, ``notReadyAddresses``
are not. Only TCP ports (the default protocol) and IP addresses count: a
slice of ``addressType`` FQDN names no pod.

A watch is resumed from the last ``resourceVersion`` seen (a ``BOOKMARK``
moves it on without a change). An ``ERROR`` event — above all ``410 Gone``,
the version being too old — ends the watch: the adapter lists afresh
(:meth:`EndpointState.relist`) and watches from the list's version.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from privproc.errors import WireError

#: The two APIs: EndpointSlices (``discovery.k8s.io/v1``), or Endpoints (core ``v1``).
Api = Literal["endpointslices", "endpoints"]
#: The label every EndpointSlice of a Service carries (its value: the Service's name).
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
HTTP_GONE = 410
#: More targets than this in one Service is a misconfiguration, not a fleet to dial.
MAX_TARGETS = 4096


class DiscoveryError(WireError):
    """An object or event the API would not send: its shape is not the documented one."""


class WatchExpired(Exception):
    """The watch ended with an ERROR event (``410 Gone``: its resourceVersion is too old): list again."""

    def __init__(self, code: int | None) -> None:
        super().__init__("the watch expired; list again")
        self.code = code


_DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\Z")


def parse_service(text: str) -> str:
    """``NAMESPACE/NAME`` of a Service (each a DNS label), as ``--predictor-service`` takes it."""
    namespace, _, name = text.partition("/")
    if not (_DNS_LABEL.match(namespace) and _DNS_LABEL.match(name)):
        raise ValueError("a Service is NAMESPACE/NAME, each a lowercase DNS label")
    return text


def target(address: str, port: int) -> str | None:
    """``IP:PORT`` (``[IPv6]:PORT``) of an endpoint address, or None if it is not an IP address."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if not 0 < port < 65536 or (ip.version == 6 and ip.scope_id is not None):
        return None  # a link-local zone names an interface of some node, not a pod's address
    return f"[{ip.compressed}]:{port}" if ip.version == 6 else f"{ip.compressed}:{port}"


def _mapping(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise DiscoveryError(f"{what} is not an object")
    return value


def _list(value: Any, what: str) -> list[Any]:
    if value is None:  # the API omits empty lists
        return []
    if not isinstance(value, list):
        raise DiscoveryError(f"{what} is not a list")
    return value


def _port(ports: Any, port_name: str) -> int | None:
    """The number of the TCP port named ``port_name`` among ``ports``, or None."""
    for item in _list(ports, "ports"):
        port = _mapping(item, "a port")
        name = port.get("name") or ""
        protocol = port.get("protocol") or "TCP"
        number = port.get("port")
        if (
            name == port_name
            and protocol == "TCP"
            and isinstance(number, int)
            and not isinstance(number, bool)
        ):
            return number
    return None


def slice_targets(endpoint_slice: Mapping[str, Any], port_name: str) -> frozenset[str]:
    """The ready targets of one ``discovery.k8s.io/v1`` EndpointSlice for the port ``port_name``."""
    endpoint_slice = _mapping(endpoint_slice, "an EndpointSlice")
    if endpoint_slice.get("addressType") not in ("IPv4", "IPv6"):
        return frozenset()
    port = _port(endpoint_slice.get("ports"), port_name)
    if port is None:
        return frozenset()
    targets = set()
    for item in _list(endpoint_slice.get("endpoints"), "endpoints"):
        endpoint = _mapping(item, "an endpoint")
        conditions = _mapping(endpoint.get("conditions") or {}, "conditions")
        # Absent (unknown) is ready, as the API documents; false is not ready (or terminating).
        if conditions.get("ready") is False:
            continue
        for address in _list(endpoint.get("addresses"), "addresses"):
            if isinstance(address, str) and (made := target(address, port)) is not None:
                targets.add(made)
    return frozenset(targets)


def endpoints_targets(endpoints: Mapping[str, Any], port_name: str) -> frozenset[str]:
    """The ready targets of a core ``v1`` Endpoints object for the port ``port_name``."""
    endpoints = _mapping(endpoints, "an Endpoints object")
    targets = set()
    for item in _list(endpoints.get("subsets"), "subsets"):
        subset = _mapping(item, "a subset")
        port = _port(subset.get("ports"), port_name)
        if port is None:
            continue
        for entry in _list(subset.get("addresses"), "addresses"):  # notReadyAddresses: not ready
            ip = _mapping(entry, "an address").get("ip")
            if isinstance(ip, str) and (made := target(ip, port)) is not None:
                targets.add(made)
    return frozenset(targets)


def _metadata(item: Mapping[str, Any]) -> Mapping[str, Any]:
    return _mapping(_mapping(item, "an object").get("metadata"), "metadata")


@dataclass
class EndpointState:
    """The predictor Service's objects as last listed and watched, and their ready targets.

    ``api`` says how objects are read; with Endpoints only the object named
    ``service`` counts (a watch on a field selector sends no other, but a
    reader does not rely on it).
    """

    api: Api
    service: str
    port_name: str
    #: The version to watch from (the list's, then each event's).
    resource_version: str | None = None
    _objects: dict[str, frozenset[str]] = field(default_factory=dict)

    def _targets_of(self, item: Mapping[str, Any]) -> tuple[str, frozenset[str] | None]:
        """The object's name, and its targets (None: not an object of the predictor Service)."""
        metadata = _metadata(item)
        name = metadata.get("name")
        if not isinstance(name, str) or not name:
            raise DiscoveryError("an object has no name")
        if self.api == "endpoints":
            return name, endpoints_targets(item, self.port_name) if name == self.service else None
        labels = _mapping(metadata.get("labels") or {}, "labels")
        if labels.get(SERVICE_NAME_LABEL) != self.service:
            return name, None
        return name, slice_targets(item, self.port_name)

    def relist(self, reply: Mapping[str, Any]) -> frozenset[str]:
        """Replace everything with a list reply (``items``, ``metadata.resourceVersion``)."""
        reply = _mapping(reply, "a list reply")
        objects = {}
        for item in _list(reply.get("items"), "items"):
            name, targets = self._targets_of(item)
            if targets is not None:
                objects[name] = targets
        version = _metadata(reply).get("resourceVersion")
        if not isinstance(version, str):
            raise DiscoveryError("a list reply has no resourceVersion")
        self._objects, self.resource_version = objects, version
        return self.targets()

    def apply(self, event: Mapping[str, Any]) -> frozenset[str]:
        """Apply one watch event; returns the ready targets after it.

        Raises :class:`WatchExpired` on an ``ERROR`` event (the caller lists again).
        """
        event = _mapping(event, "a watch event")
        kind, item = event.get("type"), event.get("object")
        if kind == "ERROR":
            status = item if isinstance(item, Mapping) else {}
            code = status.get("code")
            raise WatchExpired(code if isinstance(code, int) else None)
        if kind not in ("ADDED", "MODIFIED", "DELETED", "BOOKMARK"):
            raise DiscoveryError("a watch event of an unknown type")
        version = _metadata(_mapping(item, "an event's object")).get("resourceVersion")
        if kind != "BOOKMARK":
            name, targets = self._targets_of(_mapping(item, "an event's object"))
            # Deleted, or no longer the predictor Service's (its label changed): gone.
            if kind == "DELETED" or targets is None:
                self._objects.pop(name, None)
            else:
                self._objects[name] = targets
        if isinstance(version, str) and version:
            self.resource_version = version
        return self.targets()

    def targets(self) -> frozenset[str]:
        """Every ready target of every object (a target in two slices counts once)."""
        union: set[str] = set()
        for targets in self._objects.values():
            union |= targets
        if len(union) > MAX_TARGETS:
            raise DiscoveryError("more predictor endpoints than a gateway dials")
        return frozenset(union)


def changes(before: Iterable[str], after: Iterable[str]) -> tuple[list[str], list[str]]:
    """Targets ``after`` adds to ``before`` and those it drops, each sorted."""
    old, new = set(before), set(after)
    return sorted(new - old), sorted(old - new)
