"""Replicas DNS says are leaving (`discovery.dns_names`): what an answer means
(pool/departures.py, pure), how the watcher asks (discovery/departing.py, with a fake
lookup: no query leaves the process), and what the tracker makes of a round."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path
from typing import Any

import pytest

from poller.config import DiscoverySettings, load_settings
from poller.discovery.departing import IN_FLIGHT, DepartureWatcher, family_of
from poller.endpoints import Endpoint
from poller.errors import ConfigError
from poller.pool import decisions
from poller.pool.departures import Departures
from poller.pool.pools import Pool
from poller.status.metrics import Metrics
from tests.support.activities import fields, sample, up

SIX = frozenset(f"10.42.0.{i}" for i in range(2, 8))
TWO = frozenset({"10.42.0.2", "10.42.0.3"})


def test_addresses_that_leave_the_answer_are_leaving() -> None:
    departures = Departures()
    assert departures.update({"tasks.web": SIX}, SIX) == frozenset()  # a first answer
    started = departures.update({"tasks.web": TWO}, SIX)
    assert started == SIX - TWO
    assert departures.leaving == SIX - TWO
    assert departures.update({"tasks.web": TWO}, SIX) == frozenset()  # said once
    assert departures.leaving == SIX - TWO


@pytest.mark.parametrize("answer", [None, frozenset()], ids=["no answer", "empty"])
def test_a_failed_or_empty_answer_changes_nothing(answer: frozenset[str] | None) -> None:
    departures = Departures()
    departures.update({"tasks.web": SIX}, SIX)
    assert departures.update({"tasks.web": answer}, SIX) == frozenset()
    assert departures.leaving == frozenset()
    # ... and the next answer is compared with the last useful one.
    assert departures.update({"tasks.web": TWO}, SIX) == SIX - TWO


def test_an_answer_naming_none_of_the_pool_changes_nothing() -> None:
    departures = Departures()
    departures.update({"tasks.web": SIX}, SIX)
    assert departures.update({"tasks.web": frozenset({"192.0.2.1"})}, SIX) == frozenset()
    assert departures.leaving == frozenset()
    assert departures.update({"tasks.web": SIX}, SIX) == frozenset()


def test_an_answer_from_before_the_pool_knew_its_members_counts() -> None:
    departures = Departures()
    departures.update({"tasks.web": SIX}, ())  # at a start: the sweeps have found nobody
    assert departures.update({"tasks.web": TWO}, SIX) == SIX - TWO


def test_an_address_listed_again_or_forgotten_by_the_pool_is_no_longer_leaving() -> None:
    departures = Departures()
    departures.update({"tasks.web": SIX}, SIX)
    departures.update({"tasks.web": TWO}, SIX)
    back = TWO | {"10.42.0.4"}  # the same task back, or a new one at its address
    departures.update({"tasks.web": back}, SIX)
    assert departures.leaving == SIX - back
    departures.update({"tasks.web": back}, back | {"10.42.0.5"})  # the others forgotten
    assert departures.leaving == frozenset({"10.42.0.5"})


def test_an_address_another_name_still_lists_is_not_leaving() -> None:
    departures = Departures()
    both = {"tasks.web": SIX, "tasks.api": frozenset({"10.42.0.7"})}
    departures.update(both, SIX)
    assert departures.update({**both, "tasks.web": TWO}, SIX) == SIX - TWO - {"10.42.0.7"}


def test_names_changed_by_a_sighup_start_afresh() -> None:
    departures = Departures()
    departures.update({"tasks.web": SIX}, SIX)
    departures.update({"tasks.web": TWO}, SIX)
    assert departures.update({"tasks.api": TWO}, SIX) == frozenset()
    assert departures.leaving == frozenset()
    departures.update({"tasks.api": SIX}, SIX)
    assert departures.update({}, SIX) == frozenset()  # no names at all
    assert departures.leaving == frozenset()


def test_a_leaving_member_is_not_desired_but_stays_in_the_pool() -> None:
    members = [Endpoint(a, 3000) for a in sorted(SIX)]
    pool = Pool({e: up(e) for e in members})
    wanted = decisions.desired(pool, members, leaving=SIX - TWO)
    assert {e.address for e in wanted} == TWO
    assert set(pool.members) == set(members)


def settings(**values: Any) -> DiscoverySettings:
    return DiscoverySettings(subnets=("10.42.0.0/16",), **values)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("tasks.web..x", "is not a DNS name"),
        ("-bad.name", "is not a DNS name"),
        ("tasks.web,tasks.web", "listed twice"),
    ],
)
def test_dns_names_that_are_not_names_are_refused(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        settings(dns_names=value)


def test_dns_names_accept_docker_service_names() -> None:
    assert settings(dns_names="tasks.poller_webapp, tasks.api").dns_names == (
        "tasks.poller_webapp",
        "tasks.api",
    )


def test_a_bad_dns_name_in_a_file_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "poller.yaml"
    path.write_text("discovery:\n  subnets: [10.42.0.0/16]\n  dns_names: [tasks web]\n")
    with pytest.raises(ConfigError, match=r"discovery\.dns_names"):
        load_settings(path, environ={})


class FakeLookups:
    """Answers per name: a list of addresses, an OSError, or "hang" (until `release`)."""

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.started: list[tuple[str, int]] = []
        self.release = asyncio.Event()

    async def __call__(self, name: str, family: int) -> list[tuple[Any, ...]]:
        self.started.append((name, family))
        answer = self.answers[name]
        if answer == "hang":
            await self.release.wait()
            answer = self.answers[name]
        if isinstance(answer, (OSError, UnicodeError)):
            raise answer
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, 0)) for a in answer]


def watcher(lookups: FakeLookups) -> DepartureWatcher:
    return DepartureWatcher(None, Metrics(), lambda: settings(), lookups)  # type: ignore[arg-type]


def test_the_watcher_gives_each_names_addresses_and_none_for_a_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    lookups = FakeLookups(
        {"tasks.web": ["10.42.0.2", "10.42.0.3"], "tasks.gone": socket.gaierror(-2, "no name")}
    )
    made = watcher(lookups)
    caplog.set_level(logging.INFO, logger="poller")

    async def rounds() -> list[dict[str, frozenset[str] | None]]:
        return [await made.round(["tasks.web", "tasks.gone"], 0.5) for _ in range(3)]

    answers = asyncio.run(rounds())
    assert answers == [{"tasks.web": TWO, "tasks.gone": None}] * 3
    # A name that does not resolve is said once, not every round, and again when it does.
    said = fields(caplog, "DNS name does not resolve; its answers are not used meanwhile")
    assert [f["name"] for f in said] == ["tasks.gone"]
    lookups.answers["tasks.gone"] = ["10.42.0.9"]
    assert asyncio.run(made.round(["tasks.gone"], 0.5)) == {"tasks.gone": frozenset({"10.42.0.9"})}
    assert fields(caplog, "DNS name resolves again") == [{"name": "tasks.gone"}]
    assert sample(made.metrics, "poller_dns_lookups_total", result="ok") == 4
    assert sample(made.metrics, "poller_dns_lookups_total", result="failed") == 3


def test_a_hung_lookup_does_not_stop_the_next_rounds_and_a_late_answer_is_dropped() -> None:
    """A lookup with no reply (glibc waits 5 s before it asks again) is no answer; the
    next rounds start others beside it, up to IN_FLIGHT; an answer older than one used
    is not used."""
    lookups = FakeLookups({"tasks.web": "hang"})
    made = watcher(lookups)

    async def scenario() -> list[dict[str, frozenset[str] | None]]:
        found = [await made.round(["tasks.web"], 0.01) for _ in range(IN_FLIGHT + 2)]
        lookups.answers["tasks.web"] = ["10.42.0.2", "10.42.0.3"]
        lookups.release.set()  # every hung lookup answers now
        found.append(await made.round(["tasks.web"], 0.5))
        found.append(await made.round(["tasks.web"], 0.5))
        return found

    found = asyncio.run(scenario())
    assert found[: IN_FLIGHT + 2] == [{"tasks.web": None}] * (IN_FLIGHT + 2)
    assert found[-2:] == [{"tasks.web": TWO}] * 2
    # IN_FLIGHT while hung, then one a round: the two last rounds started one each.
    assert len(lookups.started) == IN_FLIGHT + 1
    assert sample(made.metrics, "poller_dns_lookups_total", result="late") == IN_FLIGHT + 2
    assert made.pending["tasks.web"] == []


def test_a_name_the_resolver_cannot_encode_is_no_answer_not_a_crash() -> None:
    made = watcher(FakeLookups({"tasks.web": UnicodeError("label too long")}))
    assert asyncio.run(made.round(["tasks.web"], 0.5)) == {"tasks.web": None}
    assert sample(made.metrics, "poller_dns_lookups_total", result="failed") == 1


@pytest.mark.parametrize(
    ("subnets", "family"),
    [
        (("10.42.0.0/16",), socket.AF_INET),
        (("fd00::/64",), socket.AF_INET6),
        (("10.42.0.0/16", "fd00::/64"), socket.AF_UNSPEC),
        (("auto",), socket.AF_UNSPEC),
    ],
)
def test_names_are_asked_for_the_subnets_family(subnets: tuple[str, ...], family: int) -> None:
    assert family_of(subnets) == family
