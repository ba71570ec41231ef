"""Attack: hold gateway session routes forever by talking without finishing.

Every lookup of a handle pushed its route's expiry 30 s further, so a client
that kept sending records (empty, or handshake-only) held its slot as long
as it liked. Routes now carry absolute deadlines from creation, and when a
predictor's share of the table is full the oldest idle route gives way.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privproc.errors import NotFoundError, UnavailableError
from privproc.gateway.sessions import SessionTable


class Admitted:
    def __init__(self, *targets: str) -> None:
        self.targets = targets

    def admitted(self) -> tuple[str, ...]:
        return self.targets


def test_looking_a_route_up_never_extends_it() -> None:
    now = [0.0]
    table = SessionTable(clock=lambda: now[0])
    handle = table.create("p1", b"s1")
    held = True
    while now[0] < 300:  # the attacker touches the handle every 5 s for 5 minutes
        now[0] += 5
        try:
            table.lookup(handle)
        except NotFoundError:
            held = False
            break
    assert not held and now[0] <= 120  # gone by its deadline at the latest


def test_handshake_and_session_deadlines_are_absolute() -> None:
    now = [0.0]
    table = SessionTable(handshake_seconds=10, session_seconds=120, clock=lambda: now[0])
    idle = table.create("p1", b"idle")
    talking = table.create("p1", b"talking")
    now[0] = 9.0
    table.begin(talking)  # its first continuation, within the handshake deadline
    table.end(talking)
    now[0] = 10.0
    with pytest.raises(NotFoundError):
        table.lookup(idle)  # no continuation within 10 s
    for t in (20.0, 60.0, 119.0):
        now[0] = t
        table.begin(talking)
        table.end(talking)
    now[0] = 120.0
    with pytest.raises(NotFoundError):
        table.begin(talking)
    assert len(table) == 0


def test_admission_is_fair_bounded_and_evicts_only_old_idle_routes() -> None:
    now = [0.0]
    table = SessionTable(max_per_predictor=2, evict_after_seconds=1.0, clock=lambda: now[0])
    pool = Admitted("a", "b")
    first = [table.reserve(pool) for _ in range(4)]
    assert sorted(r.target for r in first) == ["a", "a", "b", "b"]  # spread, not piled up
    with pytest.raises(UnavailableError):
        table.reserve(pool)  # both full; pending slots are never evicted
    handles = [table.commit(r, b"s%d" % i) for i, r in enumerate(first)]
    with pytest.raises(UnavailableError):
        table.reserve(pool)  # all younger than the eviction age
    now[0] = 1.5
    for handle in handles:
        table.begin(handle)  # a continuation in flight on each: none may be evicted
    with pytest.raises(UnavailableError):
        table.reserve(pool)
    table.end(handles[0])
    taken = table.reserve(pool)  # the oldest idle route gave its slot up
    assert taken.target == first[0].target
    with pytest.raises(NotFoundError):
        table.lookup(handles[0])
    table.release(taken)
    assert table.load("a") + table.load("b") == 3


def test_no_admitted_predictor_fails_closed() -> None:
    table = SessionTable()
    with pytest.raises(UnavailableError):
        table.reserve(Admitted())
    with pytest.raises(UnavailableError):
        table.reserve(Admitted("a"), exclude=("a",))


_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("open"), st.integers(0, 2)),
        st.tuples(st.just("continue"), st.integers(0, 40)),
        st.tuples(st.just("wait"), st.integers(0, 30)),
    ),
    max_size=80,
)


@settings(max_examples=150, deadline=None)
@given(_OPS)
def test_no_client_behaviour_outlives_a_deadline_or_a_bound(ops: list[tuple[str, int]]) -> None:
    now = [0.0]
    table = SessionTable(
        handshake_seconds=10,
        session_seconds=60,
        max_per_predictor=3,
        evict_after_seconds=1,
        clock=lambda: now[0],
    )
    pool = Admitted("a", "b")
    created: dict[str, tuple[float, bool]] = {}  # handle -> (created, continued)
    for op, arg in ops:
        if op == "open":
            try:
                reservation = table.reserve(pool)
            except UnavailableError:
                continue
            if arg == 0:
                table.release(reservation)  # the predictor could not open it
            else:
                created[table.commit(reservation, b"s")] = (now[0], False)
        elif op == "continue" and created:
            handle = sorted(created)[arg % len(created)]
            born, _ = created[handle]
            try:
                table.begin(handle)
            except NotFoundError:
                continue
            table.end(handle)
            assert now[0] < born + 60  # never past the session deadline
            created[handle] = (born, True)
        else:
            now[0] += arg
        assert all(table.load(t) <= 3 for t in pool.admitted())
        for handle, (born, continued) in created.items():
            deadline = born + (60 if continued else 10)
            if now[0] >= deadline:
                with pytest.raises(NotFoundError):
                    table.lookup(handle)
