"""The predictor Service's endpoints as the Kubernetes API gives them -> ready targets (sans-I/O)."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privproc import events
from privproc.gateway import discovery
from privproc.gateway.discovery import (
    DiscoveryError,
    EndpointState,
    WatchExpired,
    endpoints_targets,
    parse_service,
    slice_targets,
)


def _slice(
    name: str,
    endpoints: list[dict[str, Any]],
    *,
    port: int = 8443,
    port_name: str = "grpc",
    address_type: str = "IPv4",
    service: str = "predictor",
    version: str = "1",
) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": "pp",
            "labels": {discovery.SERVICE_NAME_LABEL: service},
            "resourceVersion": version,
        },
        "addressType": address_type,
        "endpoints": endpoints,
        "ports": [{"name": port_name, "port": port, "protocol": "TCP"}],
    }


def _endpoint(*addresses: str, ready: bool | None = True) -> dict[str, Any]:
    conditions = {} if ready is None else {"ready": ready}
    return {"addresses": list(addresses), "conditions": conditions}


def test_slice_ready_semantics_follow_the_api() -> None:
    objects = _slice(
        "s1",
        [
            _endpoint("10.0.0.1", ready=True),
            _endpoint("10.0.0.2", ready=None),  # unknown: ready, as the API documents
            _endpoint("10.0.0.3", ready=False),  # not ready, or terminating
            {"addresses": ["10.0.0.4"]},  # no conditions at all: unknown, ready
        ],
    )
    assert slice_targets(objects, "grpc") == {"10.0.0.1:8443", "10.0.0.2:8443", "10.0.0.4:8443"}
    assert slice_targets(objects, "metrics") == frozenset()  # no such port


def test_ipv6_targets_are_bracketed_and_other_address_types_ignored() -> None:
    v6 = _slice("s6", [_endpoint("fd00:0:0::a")], address_type="IPv6")
    assert slice_targets(v6, "grpc") == {"[fd00::a]:8443"}
    fqdn = _slice("sf", [_endpoint("predictor-0.example")], address_type="FQDN")
    assert slice_targets(fqdn, "grpc") == frozenset()
    garbage = _slice("sg", [_endpoint("not an ip", "fe80::1%eth0", "10.0.0.9")])
    assert slice_targets(garbage, "grpc") == {"10.0.0.9:8443"}
    udp = {**_slice("su", [_endpoint("10.0.0.1")]), "ports": [{"name": "grpc", "port": 1, "protocol": "UDP"}]}
    assert slice_targets(udp, "grpc") == frozenset()
    unnamed = _slice("sn", [_endpoint("10.0.0.1")], port_name="")
    assert slice_targets(unnamed, "") == {"10.0.0.1:8443"}


def test_endpoints_objects_count_only_ready_addresses() -> None:
    endpoints = {
        "kind": "Endpoints",
        "metadata": {"name": "predictor", "resourceVersion": "5"},
        "subsets": [
            {
                "addresses": [{"ip": "10.0.0.1"}, {"ip": "fd00::2"}],
                "notReadyAddresses": [{"ip": "10.0.0.3"}],
                "ports": [{"name": "grpc", "port": 8443}, {"name": "other", "port": 9}],
            },
            {"addresses": [{"ip": "10.0.0.4"}], "ports": [{"name": "other", "port": 9}]},
        ],
    }
    assert endpoints_targets(endpoints, "grpc") == {"10.0.0.1:8443", "[fd00::2]:8443"}
    assert endpoints_targets({"metadata": {"name": "predictor"}}, "grpc") == frozenset()


def test_list_then_watch_events() -> None:
    state = EndpointState("endpointslices", "predictor", "grpc")
    listed = state.relist(
        {
            "metadata": {"resourceVersion": "10"},
            "items": [
                _slice("a", [_endpoint("10.0.0.1")]),
                _slice("other", [_endpoint("10.9.9.9")], service="another-service"),
            ],
        }
    )
    assert listed == {"10.0.0.1:8443"} and state.resource_version == "10"
    added = state.apply({"type": "ADDED", "object": _slice("b", [_endpoint("10.0.0.2")], version="11")})
    assert added == {"10.0.0.1:8443", "10.0.0.2:8443"} and state.resource_version == "11"
    # A pod going unready, then the same address in two slices (it counts once).
    state.apply(
        {"type": "MODIFIED", "object": _slice("a", [_endpoint("10.0.0.1", ready=False)], version="12")}
    )
    assert state.targets() == {"10.0.0.2:8443"}
    state.apply({"type": "MODIFIED", "object": _slice("a", [_endpoint("10.0.0.2")], version="13")})
    assert state.targets() == {"10.0.0.2:8443"}
    state.apply({"type": "DELETED", "object": _slice("b", [], version="14")})
    assert state.targets() == {"10.0.0.2:8443"}
    # A bookmark moves the version on and changes nothing.
    state.apply(
        {"type": "BOOKMARK", "object": {"kind": "EndpointSlice", "metadata": {"resourceVersion": "20"}}}
    )
    assert state.resource_version == "20" and state.targets() == {"10.0.0.2:8443"}
    # A slice relabelled away from the Service is gone.
    state.apply(
        {"type": "MODIFIED", "object": _slice("a", [_endpoint("10.0.0.2")], service="x", version="21")}
    )
    assert state.targets() == frozenset()
    # 410 Gone: the caller lists again.
    gone = {"kind": "Status", "status": "Failure", "reason": "Expired", "code": 410}
    with pytest.raises(WatchExpired) as expired:
        state.apply({"type": "ERROR", "object": gone})
    assert expired.value.code == discovery.HTTP_GONE
    with pytest.raises(DiscoveryError):
        state.apply({"type": "RENAMED", "object": _slice("a", [])})


def test_endpoints_state_watches_only_the_named_object() -> None:
    state = EndpointState("endpoints", "predictor", "grpc")
    subset = {"addresses": [{"ip": "10.0.0.1"}], "ports": [{"name": "grpc", "port": 50051}]}
    state.relist({"metadata": {"resourceVersion": "1"}, "items": []})
    state.apply({"type": "ADDED", "object": {"metadata": {"name": "other"}, "subsets": [subset]}})
    assert state.targets() == frozenset()
    state.apply(
        {
            "type": "ADDED",
            "object": {"metadata": {"name": "predictor", "resourceVersion": "2"}, "subsets": [subset]},
        }
    )
    assert state.targets() == {"10.0.0.1:50051"}
    state.apply({"type": "MODIFIED", "object": {"metadata": {"name": "predictor"}, "subsets": []}})
    assert state.targets() == frozenset()


def test_service_names() -> None:
    assert parse_service("privproc/pp-predictor") == "privproc/pp-predictor"
    for bad in ("pp-predictor", "a/b/c", "A/b", "a/", "/b", "a/b\n", "a_b/c"):
        with pytest.raises(ValueError):
            parse_service(bad)


# --- properties ------------------------------------------------------------------------------

_ADDRESSES = st.one_of(
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(str),
    st.sampled_from(["", "host.example", "10.0.0.256"]),
)
_ENDPOINTS = st.lists(
    st.fixed_dictionaries(
        {"addresses": st.lists(_ADDRESSES, max_size=3)},
        optional={"conditions": st.fixed_dictionaries({}, optional={"ready": st.booleans()})},
    ),
    max_size=5,
)


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(st.sampled_from(["a", "b", "c"]), st.tuples(_ENDPOINTS, st.booleans()), max_size=3),
    st.lists(
        st.tuples(st.sampled_from(["a", "b", "c"]), _ENDPOINTS, st.booleans(), st.booleans()), max_size=8
    ),
)
def test_watch_events_end_where_a_fresh_list_would(
    initial: dict[str, tuple[list[dict[str, Any]], bool]],
    changes: list[tuple[str, list[dict[str, Any]], bool, bool]],
) -> None:
    """Whatever the events, the targets are those a list of the final objects gives, each one a
    ready IP address of the named port, formatted as the gateway and the events take it."""

    def make(name: str, endpoints: list[dict[str, Any]], ours: bool) -> dict[str, Any]:
        return _slice(name, endpoints, service="predictor" if ours else "other")

    objects = {name: make(name, eps, ours) for name, (eps, ours) in initial.items()}
    state = EndpointState("endpointslices", "predictor", "grpc")
    state.relist({"metadata": {"resourceVersion": "1"}, "items": list(objects.values())})
    for name, eps, ours, delete in changes:
        if delete:
            objects.pop(name, None)
            state.apply({"type": "DELETED", "object": make(name, [], ours)})
        else:
            objects[name] = make(name, eps, ours)
            state.apply({"type": "MODIFIED", "object": objects[name]})
    fresh = EndpointState("endpointslices", "predictor", "grpc")
    assert state.targets() == fresh.relist(
        {"metadata": {"resourceVersion": "2"}, "items": list(objects.values())}
    )
    for made in state.targets():
        assert events.TARGET.accepts(made) and made.endswith(":8443")


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 70000) | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
_KEYS = st.sampled_from(
    ["type", "object", "metadata", "name", "labels", "addressType", "endpoints", "ports", "addresses",
     "conditions", "ready", "subsets", "ip", "port", "protocol", "code", "resourceVersion", "items"]
)  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(["endpointslices", "endpoints"]),
    st.recursive(
        _JSON,
        lambda children: st.dictionaries(_KEYS, children, max_size=6),
        max_leaves=30,
    ),
)
def test_any_json_is_a_clear_error_or_a_state(api: discovery.Api, value: Any) -> None:
    state = EndpointState(api, "predictor", "grpc")
    for step in (state.relist, state.apply):
        with contextlib.suppress(DiscoveryError, WatchExpired):
            targets = step(value)
            assert all(events.TARGET.accepts(t) for t in targets)
