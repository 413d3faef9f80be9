"""The pool state machine: tables of cases, then properties against a reference model."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from poller.endpoints import Endpoint
from poller.pool.pools import EventKind, Observation, Pool, Rules, State, step

A = Endpoint("10.0.0.5", 3000)


def ok(identity: str | None = None, key: Endpoint = A) -> Observation:
    return Observation(key, True, identity, "ok")


def fail(key: Endpoint = A) -> Observation:
    return Observation(key, False, None, "timeout")


def run(
    seq: list[Observation],
    rules: Rules = Rules(rise=2, fall=3),  # noqa: B008 (frozen)
) -> tuple[Pool, list[list[EventKind]]]:
    pool, kinds = Pool(), []
    for now, seen in enumerate(seq):
        pool, events = step(pool, [seen], float(now), rules)
        kinds.append([e.kind for e in events])
    return pool, kinds


def state(pool: Pool, key: Endpoint = A) -> State | None:
    member = pool.members.get(key)
    return member.state if member else None


def test_unknown_failure_leaves_no_trace() -> None:
    pool, kinds = run([fail(), fail()])
    assert pool.members == {}
    assert kinds == [[], []]


def test_rises_after_rise_successes() -> None:
    pool, kinds = run([ok(), ok()])
    assert state(pool) is State.UP
    assert kinds == [[EventKind.CANDIDATE], [EventKind.UP]]
    assert [m.endpoint for m in pool.serving()] == [A]


def test_rise_one_joins_at_first_success() -> None:
    pool, kinds = run([ok()], Rules(rise=1, fall=1))
    assert state(pool) is State.UP
    assert kinds == [[EventKind.CANDIDATE, EventKind.UP]]


def test_candidate_failing_is_dropped_and_must_start_again() -> None:
    pool, kinds = run([ok(), fail(), ok()])
    assert state(pool) is State.RISING
    assert kinds == [[EventKind.CANDIDATE], [EventKind.DROPPED], [EventKind.CANDIDATE]]


def test_falls_only_after_fall_failures_and_serves_while_falling() -> None:
    pool, kinds = run([ok(), ok(), fail(), fail()])
    assert state(pool) is State.FALLING
    assert pool.serving()
    pool, kinds = run([ok(), ok(), fail(), fail(), fail()])
    assert state(pool) is State.DOWN
    assert not pool.serving()
    assert kinds[-1] == [EventKind.DOWN]


def test_one_success_while_falling_resets_the_count() -> None:
    pool, _ = run([ok(), ok(), fail(), fail(), ok(), fail(), fail()])
    assert state(pool) is State.FALLING


def test_down_member_must_rise_again() -> None:
    pool, kinds = run([ok(), ok(), fail(), fail(), fail(), ok()])
    assert state(pool) is State.RISING
    pool, kinds = run([ok(), ok(), fail(), fail(), fail(), ok(), ok()])
    assert state(pool) is State.UP
    assert kinds[-1] == [EventKind.UP]


def test_identity_change_is_a_leave_and_a_new_candidate() -> None:
    pool, kinds = run([ok("a"), ok("a"), ok("b")])
    assert state(pool) is State.RISING
    assert pool.members[A].identity == "b"
    assert kinds[-1] == [EventKind.IDENTITY_CHANGED, EventKind.DOWN, EventKind.CANDIDATE]
    assert not pool.serving()


def test_missing_identity_proves_nothing() -> None:
    pool, kinds = run([ok("a"), ok("a"), ok(None), ok("a")])
    assert state(pool) is State.UP
    assert pool.members[A].identity == "a"
    assert kinds[2:] == [[], []]


def test_identity_learned_late_is_kept() -> None:
    pool, _ = run([ok(None), ok("a")])
    assert pool.members[A].identity == "a"
    assert state(pool) is State.UP


def test_down_members_are_forgotten_after_a_while() -> None:
    rules = Rules(rise=1, fall=1, forget_after_seconds=10)
    pool, _ = step(Pool(), [ok()], 0.0, rules)
    pool, _ = step(pool, [fail()], 1.0, rules)
    assert state(pool) is State.DOWN
    pool, events = step(pool, [], 10.5, rules)
    assert state(pool) is State.DOWN
    pool, events = step(pool, [], 11.0, rules)
    assert state(pool) is None
    assert [e.kind for e in events] == [EventKind.FORGOTTEN]


def test_serving_order_is_numeric_and_stable() -> None:
    keys = [("10.0.0.10", 80), ("10.0.0.9", 81), ("10.0.0.9", 80), ("9.1.1.1", 80)]
    pool, _ = step(Pool(), [ok(key=Endpoint(*k)) for k in keys], 0.0, Rules(rise=1, fall=1))
    assert [(m.endpoint.address, m.endpoint.port) for m in pool.serving()] == [
        ("9.1.1.1", 80),
        ("10.0.0.9", 80),
        ("10.0.0.9", 81),
        ("10.0.0.10", 80),
    ]


def test_last_probe_is_recorded() -> None:
    seen = Observation(A, True, None, "ok", 1.5, 200)
    pool, _ = step(Pool(), [seen], 7.0, Rules(rise=2, fall=2))
    last = pool.members[A].last
    assert (last.at, last.outcome, last.latency_ms, last.status) == (7.0, "ok", 1.5, 200)


# --- properties ---------------------------------------------------------------------

KEYS = [Endpoint("10.0.0.1", 80), Endpoint("10.0.0.2", 80), Endpoint("10.0.0.2", 81)]
observations = st.lists(
    st.builds(
        lambda key, healthy, identity: Observation(key, healthy, identity if healthy else None),
        st.sampled_from(KEYS),
        st.booleans(),
        st.sampled_from([None, "a", "b"]),
    ),
    max_size=60,
)
rules_strategy = st.builds(Rules, rise=st.integers(1, 4), fall=st.integers(1, 4))


def reference(seq: list[Observation], rules: Rules) -> dict[Endpoint, bool]:
    """A deliberately naive model: counters per key, replayed from the whole history."""
    serving: dict[Endpoint, bool] = {}
    for key in {o.endpoint for o in seq}:
        up, down, successes, failures, identity = False, False, 0, 0, None
        for o in (o for o in seq if o.endpoint == key):
            if o.healthy and identity and o.identity and o.identity != identity:
                up, down, successes, failures, identity = False, False, 0, 0, None
            if o.healthy:
                identity = o.identity or identity
                successes, failures, down = successes + 1, 0, False
                up = up or successes >= rules.rise
            else:
                failures, successes = failures + 1, 0
                if up and failures >= rules.fall:
                    up, down = False, True
                elif not up and not down:
                    identity = None  # a candidate that fails leaves no trace
        serving[key] = up
    return serving


@given(observations, rules_strategy)
def test_serving_set_matches_the_reference_model(seq: list[Observation], rules: Rules) -> None:
    pool = Pool()
    for now, seen in enumerate(seq):
        pool, _ = step(pool, [seen], float(now), rules)
    expected = {key for key, up in reference(seq, rules).items() if up}
    assert {m.endpoint for m in pool.serving()} == expected


@given(observations, rules_strategy)
def test_no_member_flips_faster_than_rise_and_fall_allow(
    seq: list[Observation], rules: Rules
) -> None:
    pool = Pool()
    history: dict[Endpoint, list[Observation]] = {}
    for now, seen in enumerate(seq):
        before = {m.endpoint for m in pool.serving()}
        pool, _ = step(pool, [seen], float(now), rules)
        after = {m.endpoint for m in pool.serving()}
        history.setdefault(seen.endpoint, []).append(seen)
        recent = history[seen.endpoint]
        if seen.endpoint in after - before:
            assert len(recent) >= rules.rise
            assert all(o.healthy for o in recent[-rules.rise :])
        if seen.endpoint in before - after and seen.healthy is False:
            assert len(recent) >= rules.fall
            assert not any(o.healthy for o in recent[-rules.fall :])


@given(observations, rules_strategy)
def test_same_observations_same_pool(seq: list[Observation], rules: Rules) -> None:
    def replay() -> Pool:
        pool = Pool()
        for now, seen in enumerate(seq):
            pool, _ = step(pool, [seen], float(now), rules)
        return pool

    assert replay() == replay()


@given(observations, rules_strategy)
def test_a_batch_is_the_same_as_one_by_one(seq: list[Observation], rules: Rules) -> None:
    one_by_one = Pool()
    for seen in seq:
        one_by_one, _ = step(one_by_one, [seen], 0.0, rules)
    batched, _ = step(Pool(), seq, 0.0, rules)
    assert batched == one_by_one


@pytest.mark.parametrize(
    ("probed_until", "forgotten_at"),
    [(9.0, 11.0), (10.9, 11.0), (30.0, 11.0)],
)
def test_a_down_member_is_forgotten_from_when_it_went_down_even_while_probed(
    probed_until: float, forgotten_at: float
) -> None:
    """Forgetting counts from `since` (when it went down), not from the last probe: a DOWN
    member keeps being probed every interval, and would otherwise never be forgotten."""
    rules = Rules(rise=1, fall=1, forget_after_seconds=10)
    pool, _ = step(Pool(), [ok()], 0.0, rules)
    pool, _ = step(pool, [fail()], 1.0, rules)  # down at 1.0
    now, events = 1.0, []
    while now < min(probed_until, forgotten_at - 0.5):
        now += 0.5
        pool, events = step(pool, [fail()], now, rules)
        assert state(pool) is State.DOWN, now
    pool, events = step(pool, [fail()], forgotten_at, rules)
    assert state(pool) is None
    assert [e.kind for e in events] == [EventKind.FORGOTTEN]


@pytest.mark.parametrize(
    ("identities", "changes"),
    [
        (["a", None, "b"], 1),  # the missing one keeps "a": "b" is another node
        (["a", None, None, "a"], 0),
        ([None, "a", None, "a"], 0),
        (["a", "a", None, "b", None, "b"], 1),
    ],
)
def test_a_missing_identity_keeps_the_known_one(identities: list[str | None], changes: int) -> None:
    pool, kinds = run([ok(i) for i in identities], Rules(rise=1, fall=2))
    assert sum(k.count(EventKind.IDENTITY_CHANGED) for k in kinds) == changes
    assert pool.members[A].identity == next(i for i in reversed(identities) if i)


def test_haproxy_is_only_given_members_whose_last_probe_passed() -> None:
    """A member HAProxy lacks is added only after a probe in this process passed; one it
    already serves stays while the pool serves it (falling included)."""
    from poller.pool import decisions
    from poller.pool.pools import LastProbe, Member

    up, falling, restored = (Endpoint(f"10.0.0.{i}", 80) for i in (1, 2, 3))
    never = LastProbe(float("-inf"), "restored", None, None)
    pool = Pool(
        {
            up: Member(up, None, State.UP, 2, 0, 0.0, LastProbe(1.0, "ok", 1.0, 200)),
            falling: Member(
                falling, None, State.FALLING, 0, 1, 0.0, LastProbe(1.0, "refused", None, None)
            ),
            restored: Member(restored, None, State.UP, 2, 0, 0.0, never),
        }
    )
    assert decisions.desired(pool, live=[]) == [up]
    assert decisions.desired(pool, live=[falling, restored]) == [up, falling, restored]


def _seen(healthy: bool, identity: str | None, outcome: str, ms: float | None) -> Observation:
    return Observation(A, healthy, identity, outcome, ms, 200 if healthy else None)


# One member's whole life, every field of the member and every event checked at each step
# (rise 2, fall 2, forgotten 10 s after it went down): what /pool, the status page, the
# state file and the logs show. Columns: time, observation, then the member afterwards as
# (state, successes, failures, since, identity) or None, then the events as
# (kind, identity, previous_identity, reason).
LIFE = [
    (0, _seen(True, "a", "ok", 1.5), ("rising", 1, 0, 0, "a"), [("candidate", "a", None, "")]),
    (1, _seen(True, "a", "ok", 2.5), ("up", 2, 0, 1, "a"), [("up", "a", None, "")]),
    (2, _seen(False, None, "timeout", None), ("falling", 0, 1, 1, "a"), []),
    (3, _seen(True, None, "ok", 1.0), ("up", 1, 0, 1, "a"), []),  # no identity: kept
    (4, _seen(True, "a", "ok", 1.0), ("up", 2, 0, 1, "a"), []),
    (5, _seen(False, None, "refused", None), ("falling", 0, 1, 1, "a"), []),
    (
        6,
        _seen(False, None, "refused", None),
        ("down", 0, 2, 6, "a"),
        [("down", "a", None, "refused")],
    ),
    (7, _seen(False, None, "timeout", None), ("down", 0, 3, 6, "a"), []),
    (8, _seen(True, "a", "ok", 3.0), ("rising", 1, 0, 8, "a"), []),
    (9, _seen(True, "a", "ok", 3.0), ("up", 2, 0, 9, "a"), [("up", "a", None, "")]),
    (
        10,
        _seen(True, "b", "ok", 4.0),
        ("rising", 1, 0, 10, "b"),
        [
            ("identity_changed", "b", "a", "now answered by 'b'"),
            ("down", "a", None, "identity changed"),
            ("candidate", "b", None, ""),
        ],
    ),
    (11, _seen(False, None, "http 503", None), None, [("dropped", "b", None, "http 503")]),
    (12, _seen(True, "c", "ok", 1.0), ("rising", 1, 0, 12, "c"), [("candidate", "c", None, "")]),
    (13, _seen(True, "c", "ok", 1.0), ("up", 2, 0, 13, "c"), [("up", "c", None, "")]),
    (14, _seen(False, None, "refused", None), ("falling", 0, 1, 13, "c"), []),
    (
        15,
        _seen(False, None, "refused", None),
        ("down", 0, 2, 15, "c"),
        [("down", "c", None, "refused")],
    ),
    (24, _seen(False, None, "refused", None), ("down", 0, 3, 15, "c"), []),
    (25, _seen(False, None, "refused", None), None, [("forgotten", "c", None, "")]),
]


def test_one_members_life_field_by_field() -> None:
    rules = Rules(rise=2, fall=2, forget_after_seconds=10)
    pool = Pool()
    for now, seen, member, events in LIFE:
        pool, got = step(pool, [seen], float(now), rules)
        assert [(e.kind, e.identity, e.previous_identity, e.reason) for e in got] == events, now
        assert all(e.endpoint == A and e.at == now for e in got), now
        if member is None:
            assert A not in pool.members, now
            continue
        m = pool.members[A]
        assert (m.state, m.successes, m.failures, m.since, m.identity) == member, now
        assert (m.last.at, m.last.outcome, m.last.latency_ms, m.last.status) == (
            now,
            seen.outcome,
            seen.latency_ms,
            seen.status,
        ), now


@pytest.mark.parametrize(
    ("rise", "fall", "forget"), [(0, 1, 0.0), (1, 0, 0.0), (1, 1, -1.0), (0, 0, -1.0)]
)
def test_rules_refuse_zero_rise_or_fall_and_a_negative_forget_time(
    rise: int, fall: int, forget: float
) -> None:
    with pytest.raises(
        ValueError, match=r"^rise and fall must be >= 1, forget_after_seconds >= 0$"
    ):
        Rules(rise, fall, forget)


def test_rules_accept_the_smallest_values() -> None:
    rules = Rules(rise=1, fall=1, forget_after_seconds=0.0)
    pool, _ = step(Pool(), [ok()], 0.0, rules)
    pool, events = step(pool, [fail()], 1.0, rules)
    assert [e.kind for e in events] == [EventKind.DOWN, EventKind.FORGOTTEN]  # forgotten at once
    assert pool.members == {}


def test_rise_one_from_down_is_up_at_once_and_a_late_identity_is_learned_anywhere() -> None:
    """With rise 1, a DOWN member answering again is UP in the same step, since then; an
    identity first reported while falling or down is kept."""
    rules = Rules(rise=1, fall=2, forget_after_seconds=100)
    pool, _ = step(Pool(), [ok(None)], 0.0, rules)
    pool, _ = step(pool, [fail()], 1.0, rules)  # falling
    pool, _ = step(pool, [ok("a")], 2.0, rules)  # learned while falling
    assert (pool.members[A].state, pool.members[A].identity) == (State.UP, "a")
    pool, _ = step(pool, [fail(), fail()], 3.0, rules)  # down
    pool, events = step(pool, [ok("a")], 4.0, rules)
    member = pool.members[A]
    assert (member.state, member.since, member.successes, member.failures) == (State.UP, 4.0, 1, 0)
    assert [(e.kind, e.at) for e in events] == [(EventKind.UP, 4.0)]
    unnamed, _ = step(Pool(), [ok(None)], 0.0, Rules(rise=1, fall=1))
    unnamed, _ = step(unnamed, [fail()], 1.0, Rules(rise=1, fall=1))
    unnamed, _ = step(unnamed, [ok("b")], 2.0, Rules(rise=1, fall=1))
    assert unnamed.members[A].identity == "b"  # learned while down


def test_an_event_gives_the_outcome_that_caused_it_as_its_reason() -> None:
    from poller.pool.pools import EventKind, Observation, Pool, Rules, step
    from poller.results import Outcome

    rules = Rules(rise=1, fall=1)
    pool, _ = step(Pool(), [Observation(A, True)], 0.0, rules)
    _, down = step(pool, [Observation(A, False, outcome=Outcome.TIMEOUT)], 1.0, rules)
    assert [(e.kind, e.reason) for e in down] == [(EventKind.DOWN, "timeout")]
    _, unknown = step(pool, [Observation(A, False)], 1.0, rules)
    assert [(e.kind, e.reason) for e in unknown] == [(EventKind.DOWN, "")]
