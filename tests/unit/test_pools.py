"""The pool state machine: tables of cases, then properties against a reference model."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from poller.endpoints import Endpoint
from poller.pools import EventKind, Observation, Pool, Rules, State, step

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
