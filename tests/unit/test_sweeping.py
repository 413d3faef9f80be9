"""One discovery sweep's glue (`sweeping.run_sweep`): which addresses the ARP pre-sweep
hands to the probes, what silence and refusals count as, and when a sweep means nothing.
In process: a recording fake of the ARP sender and of the prober (what ARP and HTTP do
on a real link is the lab's: tests/lab)."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import replace
from typing import Any

import netaddr
import pytest

from poller.config import load_settings
from poller.discovery import arp, sweeping
from poller.discovery.plans import Segment, SweepPlan, plan_sweep
from poller.discovery.targets import TargetPlan
from poller.endpoints import Endpoint
from poller.results import OUT_OF_SCOPE_DETAIL, Outcome, ProbeResult, Progress, Sweep
from tests.support.activities import fields

LINK = arp.Link("eth9", 9, b"\x02" * 6, "10.0.0.254", ipaddress.IPv4Network("10.0.0.0/24"))
OTHER = replace(LINK, interface="eth8", index=8)


def ip(last: int) -> int:
    return int(ipaddress.IPv4Address(f"10.0.0.{last}"))


class FakeProber:
    """Probes whatever it is handed (a plan, or a queue ended by None): `alive` answer."""

    def __init__(self, alive: Collection[str] = ()) -> None:
        self.alive = set(alive)
        self.asked: list[Endpoint] = []
        self.cancelled = False
        self.given: list[tuple[object, bool, Progress | None]] = []  # pacer, keep_all, progress

    async def sweep(
        self,
        targets: Any,
        pacer: object,
        keep_all: bool = False,
        known: Collection[Endpoint] = frozenset(),
        progress: Progress | None = None,
    ) -> Sweep:
        found = Sweep()
        self.given.append((pacer, keep_all, progress))
        try:
            if isinstance(targets, asyncio.Queue):
                while (endpoint := await targets.get()) is not None:
                    self._probe(endpoint, found, known)
            else:
                for endpoint in targets:
                    self._probe(endpoint, found, known)
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        return found

    def _probe(self, endpoint: Endpoint, found: Sweep, known: Collection[Endpoint]) -> None:
        self.asked.append(endpoint)
        found.targets += 1
        if endpoint in known:
            found.known += 1
            return
        outcome = Outcome.OK if endpoint.address in self.alive else Outcome.REFUSED
        found.outcomes[outcome] += 1
        found.results.append(ProbeResult(endpoint, outcome, outcome is Outcome.OK, 1.0))


class FakeArp:
    """Answers for `answering` addresses per interface; records what it was asked."""

    def __init__(
        self,
        answering: dict[str, Collection[int]],
        refused: Sequence[int] = (),
        fails: BaseException | None = None,
    ) -> None:
        self.answering = answering
        self.refused = list(refused)
        self.fails = fails
        self.asked: list[tuple[str, list[int], tuple[Any, ...]]] = []

    async def __call__(
        self,
        link: arp.Link,
        addresses: Sequence[int],
        rate: int,
        attempts: int,
        wait: float,
        on_answer: Callable[[int], None] | None = None,
        *,
        scope: object,
    ) -> arp.ArpSweep:
        self.asked.append((link.interface, list(addresses), (rate, attempts, wait, scope)))
        await asyncio.sleep(0)  # the probes start meanwhile, as they do on a real link
        if self.fails is not None:
            raise self.fails
        answered = {a for a in addresses if a in self.answering.get(link.interface, ())}
        for address in sorted(answered):
            assert on_answer is not None
            on_answer(address)
        return arp.ArpSweep(len(addresses), answered, 2 * len(addresses), 0.25, self.refused)


def plan(
    subnets: Sequence[str] = ("10.0.0.0/29",),
    ports: Sequence[int] = (3000,),
    segments: Sequence[tuple[arp.Link, str]] = ((LINK, "10.0.0.0/29"),),
    rest: str | None = None,
    **discovery: Any,
) -> SweepPlan:
    settings = load_settings(
        None,
        environ={},
        overrides={
            "discovery": {"subnets": list(subnets), "method": "connect", **discovery},
            "probe": {},
        },
    )
    base = plan_sweep(settings.discovery, ports)
    return replace(
        base,
        segments=tuple(
            Segment(link, base.plan.addresses & netaddr.IPSet([cidr])) for link, cidr in segments
        ),
        rest=TargetPlan(
            base.plan.addresses & netaddr.IPSet([rest] if rest else []), base.plan.ports
        ),
    )


@pytest.fixture
def fake_arp(monkeypatch: pytest.MonkeyPatch) -> Callable[..., FakeArp]:
    def make(*args: Any, **kwargs: Any) -> FakeArp:
        made = FakeArp(*args, **kwargs)
        monkeypatch.setattr(arp, "ask", made)
        return made

    return make


def run(resolved: SweepPlan, prober: FakeProber, **kwargs: Any) -> Sweep:
    return asyncio.run(sweeping.run_sweep(resolved, prober, **kwargs))  # type: ignore[arg-type]


def test_only_addresses_that_answered_arp_are_probed_and_the_silent_count_as_unreachable(
    fake_arp: Callable[..., FakeArp],
) -> None:
    asked = fake_arp({"eth9": {ip(2), ip(5)}})
    prober = FakeProber(alive={"10.0.0.2"})
    resolved = plan(ports=(3000, 8080))
    found = run(resolved, prober, keep_all=True)
    assert sorted(prober.asked) == [
        Endpoint("10.0.0.2", 3000),
        Endpoint("10.0.0.2", 8080),
        Endpoint("10.0.0.5", 3000),
        Endpoint("10.0.0.5", 8080),
    ]
    # /29 holds six hosts (.1-.6), two ports each: every target is counted once.
    assert found.targets == 12
    assert found.outcomes[Outcome.OK] == 2
    assert found.outcomes[Outcome.REFUSED] == 2
    assert found.outcomes[Outcome.UNREACHABLE] == 8
    silent = [r for r in found.results if r.outcome is Outcome.UNREACHABLE]
    assert silent[0] == ProbeResult(
        Endpoint("10.0.0.1", 3000), Outcome.UNREACHABLE, False, 0.0, detail="no ARP reply"
    )
    assert len(silent) == 8
    assert {r.detail for r in silent} == {"no ARP reply"}
    assert not any(r.connected or r.healthy for r in silent)
    assert prober.given == [(resolved.pacer, True, None)]
    assert found.started_at > 0
    assert 0 <= found.duration_seconds < 60
    assert [r.endpoint for r in found.results] == sorted(r.endpoint for r in found.results)
    # The ARP sender gets the plan's own addresses, rate, attempts, wait and scope.
    interface, addresses, (rate, attempts, wait, scope) = asked.asked[0]
    assert (interface, addresses) == ("eth9", [ip(i) for i in range(1, 7)])
    discovery = resolved.settings
    assert (rate, attempts, wait) == (
        discovery.arp_rate_per_second,
        discovery.arp_attempts,
        discovery.arp_reply_wait_seconds,
    )
    assert scope is resolved.scope


def test_silent_targets_are_only_counted_unless_all_results_are_kept(
    fake_arp: Callable[..., FakeArp],
) -> None:
    fake_arp({"eth9": {ip(2)}})
    found = run(plan(), FakeProber(alive={"10.0.0.2"}))
    assert found.targets == 6
    assert found.outcomes[Outcome.UNREACHABLE] == 5
    assert [r.endpoint for r in found.results] == [Endpoint("10.0.0.2", 3000)]


def test_a_known_member_silent_to_arp_is_counted_as_known_not_unreachable(
    fake_arp: Callable[..., FakeArp],
) -> None:
    fake_arp({"eth9": {ip(2)}})
    known = {Endpoint("10.0.0.3", 3000), Endpoint("10.0.0.2", 3000)}
    found = run(plan(), FakeProber(alive={"10.0.0.2"}), keep_all=True, known=known)
    assert found.targets == 6
    assert found.known == 2  # one that answered ARP (the prober's), one that did not
    assert found.outcomes[Outcome.UNREACHABLE] == 4
    assert Endpoint("10.0.0.3", 3000) not in [r.endpoint for r in found.results]


def test_a_progress_counts_the_silent_targets_as_done(fake_arp: Callable[..., FakeArp]) -> None:
    fake_arp({"eth9": {ip(2)}, "eth8": {ip(9)}})
    progress = Progress(total=24, started=0.0, done=1)
    prober = FakeProber()
    resolved = plan(
        subnets=("10.0.0.0/28",),
        ports=(3000, 8080),
        segments=((LINK, "10.0.0.0/29"), (OTHER, "10.0.0.8/30")),
    )
    run(resolved, prober, progress=progress)
    # 1 before + six silent addresses of .1-.7 and three of .8-.11, two ports each (the
    # fake prober counts none of its own).
    assert progress.done == 1 + (6 + 3) * 2
    assert prober.given == [(resolved.pacer, False, progress)]


def test_a_segment_with_not_one_reply_is_swept_with_connects_and_said_once(
    fake_arp: Callable[..., FakeArp], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="poller")
    fake_arp({})
    resolved = plan()
    prober = FakeProber()
    for _ in range(2):
        found = run(resolved, prober)
        assert found.outcomes[Outcome.UNREACHABLE] == 0
        assert found.outcomes[Outcome.REFUSED] == 6
    assert sorted(prober.asked) == sorted(2 * [Endpoint(f"10.0.0.{i}", 3000) for i in range(1, 7)])
    said = fields(caplog, "no ARP reply on the segment; sweeping it with connects")
    assert said == [{"interface": "eth9"}]
    assert resolved.silent_segments == {"eth9"}
    # It answers again: said once, and silence means empty addresses again.
    fake_arp({"eth9": {ip(1)}})
    found = run(resolved, FakeProber())
    assert fields(caplog, "the segment answers ARP again") == [{"interface": "eth9"}]
    assert resolved.silent_segments == set()
    assert found.outcomes[Outcome.UNREACHABLE] == 5
    run(resolved, FakeProber())
    assert len(fields(caplog, "the segment answers ARP again")) == 1


def test_in_a_hot_sweep_silence_is_empty_addresses_not_a_silent_segment(
    fake_arp: Callable[..., FakeArp], caplog: pytest.LogCaptureFixture
) -> None:
    fake_arp({})
    resolved = plan().subset(netaddr.IPSet(["10.0.0.2/31"]))
    prober = FakeProber()
    found = run(resolved, prober)
    assert prober.asked == []
    assert found.targets == 2
    assert found.outcomes[Outcome.UNREACHABLE] == 2
    assert resolved.silent_segments == set()
    assert not fields(caplog, "no ARP reply on the segment; sweeping it with connects")


def test_the_rest_of_the_plan_is_swept_with_connects_after_the_segments(
    fake_arp: Callable[..., FakeArp],
) -> None:
    asked = fake_arp({"eth9": {ip(1)}, "eth8": {ip(9)}})
    resolved = plan(
        subnets=("10.0.0.0/28",),
        segments=((LINK, "10.0.0.0/29"), (OTHER, "10.0.0.8/30")),
        rest="10.0.0.12/30",
    )
    prober = FakeProber(alive={"10.0.0.13"})
    found = run(resolved, prober)
    assert [interface for interface, _, _ in asked.asked] == ["eth9", "eth8"]
    assert prober.asked == [
        Endpoint("10.0.0.1", 3000),
        Endpoint("10.0.0.9", 3000),
        *(Endpoint(f"10.0.0.{i}", 3000) for i in (12, 13, 14)),
    ]
    assert [r.endpoint for r in found.healthy] == [Endpoint("10.0.0.13", 3000)]
    assert found.targets == 14
    assert found.outcomes[Outcome.UNREACHABLE] == 14 - 5


def test_a_plan_without_segments_is_all_connects(fake_arp: Callable[..., FakeArp]) -> None:
    asked = fake_arp({})
    resolved = replace(plan(), segments=(), rest=None)
    prober = FakeProber(alive={"10.0.0.4"})
    progress = Progress(total=6, started=0.0)
    found = run(resolved, prober, keep_all=True, progress=progress)
    assert prober.given == [(resolved.pacer, True, progress)]
    assert asked.asked == []
    assert len(prober.asked) == 6
    assert [r.endpoint for r in found.healthy] == [Endpoint("10.0.0.4", 3000)]


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (arp.ArpUnavailable("no CAP_NET_RAW"), "no CAP_NET_RAW"),
        (OSError(100, "Network is down"), "Network is down"),
        (OSError("no strerror"), "no strerror"),
    ],
)
def test_a_pre_sweep_that_breaks_on_our_side_makes_a_failed_sweep_and_stops_the_probes(
    fake_arp: Callable[..., FakeArp], error: BaseException, reason: str
) -> None:
    fake_arp({}, fails=error)
    prober = FakeProber()
    resolved = plan()
    found = run(resolved, prober)
    assert prober.cancelled
    assert found.targets == resolved.plan.count == 6
    assert found.outcomes == {Outcome.LOCAL_ERROR: 6}
    assert found.results == [
        ProbeResult(
            Endpoint("10.0.0.1", 3000),
            Outcome.LOCAL_ERROR,
            False,
            0.0,
            detail=f"ARP on eth9: {reason}",
        )
    ]
    assert found.failure is not None
    assert found.started_at > 0
    assert 0 <= found.duration_seconds < 60


def test_addresses_the_arp_sender_refused_are_out_of_scope_and_said_once_per_link(
    fake_arp: Callable[..., FakeArp], caplog: pytest.LogCaptureFixture
) -> None:
    stray = int(ipaddress.IPv4Address("10.9.9.9"))
    fake_arp({"eth9": {ip(1)}}, refused=[stray])
    resolved = plan(ports=(3000, 8080))
    for _ in range(2):
        found = run(resolved, FakeProber())
    refused = [r for r in found.results if r.outcome is Outcome.OUT_OF_SCOPE]
    assert refused == [
        ProbeResult(Endpoint("10.9.9.9", port), Outcome.OUT_OF_SCOPE, False, 0.0, detail=detail)
        for port, detail in ((3000, OUT_OF_SCOPE_DETAIL), (8080, OUT_OF_SCOPE_DETAIL))
    ]
    assert found.outcomes[Outcome.OUT_OF_SCOPE] == 2
    assert found.targets == 12 + 2
    message = "refused to ask addresses outside the target plan (a bug: please report it)"
    assert fields(caplog, message) == [
        {"interface": "eth9", "refused": 1, "first": "10.9.9.9", "subnets": ["10.0.0.0/29"]}
    ]
    assert [r.levelname for r in caplog.records if r.getMessage() == message] == ["ERROR"]


def test_the_start_and_each_pre_sweep_are_logged_with_their_numbers(
    fake_arp: Callable[..., FakeArp], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="poller")
    fake_arp({"eth9": {ip(1), ip(2)}})
    resolved = plan()
    run(resolved, FakeProber())
    assert fields(caplog, "sweep starting") == [
        {
            "targets": 6,
            "method": "arp",
            "neighbour_budget": resolved.limits.budget,
            "neighbour_hold_seconds": round(resolved.limits.hold_seconds, 3),
            "table_limit_source": resolved.limits.table_limit_source,
        }
    ]
    assert fields(caplog, "arp pre-sweep") == [
        {"interface": "eth9", "asked": 6, "answered": 2, "requests": 12, "seconds": 0.25}
    ]


class TestEta:
    """How long the rest of a sweep should take, from its plan."""

    def test_during_the_pre_sweep_it_is_the_arp_rounds_left(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        resolved = plan(arp_rate_per_second=120, arp_attempts=2, arp_reply_wait_seconds=0.5)
        progress = Progress(total=6, started=100.0)
        monkeypatch.setattr(sweeping.time, "monotonic", lambda: 100.5)
        # Two rounds of (6 requests at 120/s + 0.5 s wait) = 1.1 s; 0.5 s gone.
        assert sweeping._eta(resolved, progress)() == pytest.approx(0.6)

    def test_nothing_left_is_zero(self, monkeypatch: pytest.MonkeyPatch) -> None:
        progress = Progress(total=6, started=100.0, done=6)
        monkeypatch.setattr(sweeping.time, "monotonic", lambda: 100.5)
        assert sweeping._eta(plan(), progress)() == 0.0

    def test_on_loopback_it_follows_the_pace_so_far(self, monkeypatch: pytest.MonkeyPatch) -> None:
        resolved = plan(subnets=("127.0.0.0/29",), segments=(), rest=None)
        resolved = replace(resolved, rest=None)
        progress = Progress(total=6, started=100.0)
        monkeypatch.setattr(sweeping.time, "monotonic", lambda: 102.0)
        eta = sweeping._eta(resolved, progress)
        assert eta() is None  # nothing done yet: no pace to go by
        progress.done = 2
        assert eta() == pytest.approx(4.0)  # 2 done in 2 s, 4 left

    def test_after_the_pre_sweep_the_connects_follow_the_neighbour_pacing(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        resolved = plan(ports=(3000, 8080), rest="10.0.0.4/30", arp_attempts=1)
        progress = Progress(total=12, started=0.0, done=5)
        monkeypatch.setattr(sweeping.time, "monotonic", lambda: 500.0)
        seen: list[tuple[int, float]] = []

        def finish(more: int, now: float) -> float:
            seen.append((more, now))
            return now + 7.0

        monkeypatch.setattr(resolved.pacer, "finish", finish)
        assert sweeping._eta(resolved, progress)() == pytest.approx(7.0)
        assert seen == [(4, 500.0)]  # 7 targets left on two ports: four addresses

    def test_a_plan_wholly_asked_with_arp_has_no_pacing_after_it(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        resolved = plan(arp_attempts=1, arp_reply_wait_seconds=0.1, arp_rate_per_second=600)
        progress = Progress(total=6, started=0.0, done=3)
        monkeypatch.setattr(sweeping.time, "monotonic", lambda: 3.0)
        assert sweeping._eta(resolved, progress)() == pytest.approx(3.0)

    def test_run_sweep_sets_the_progress_eta_from_the_plan(
        self, fake_arp: Callable[..., FakeArp]
    ) -> None:
        fake_arp({})
        progress = Progress(total=6, started=0.0)
        run(replace(plan(), segments=(), rest=None), FakeProber(), progress=progress)
        assert progress.eta() is not None  # the default says None


def test_a_silent_segment_does_not_stop_the_next_one_and_refusals_add_up(
    fake_arp: Callable[..., FakeArp],
) -> None:
    stray = int(ipaddress.IPv4Address("10.9.9.9"))
    asked = fake_arp({"eth8": {ip(9)}}, refused=[stray])
    resolved = plan(
        subnets=("10.0.0.0/28",), segments=((LINK, "10.0.0.0/29"), (OTHER, "10.0.0.8/30"))
    )
    prober = FakeProber()
    found = run(resolved, prober)
    assert [interface for interface, _, _ in asked.asked] == ["eth9", "eth8"]
    assert Endpoint("10.0.0.9", 3000) in prober.asked  # eth8's answer was probed
    assert found.outcomes[Outcome.OUT_OF_SCOPE] == 2  # one refusal per segment
