"""Replicas the orchestrator says are leaving, from the answers of a DNS name. Pure.

Docker's embedded DNS answers `tasks.<service>` with the addresses of the service's live
tasks. When Swarm stops a task (a scale-down, a rolling update, a drained node) it takes
the task out of that answer first and sends the container SIGTERM about two seconds
later (moby's gossip-converge delay), so the answer says a replica is leaving before
any probe can. An address that was in a name's last answer and is missing from its new
one is *leaving*: HAProxy stops sending it new requests (its server is removed with the
usual drain) while the replica still serves the ones it has.

The answer is a hint, never a source of members: it adds no target and keeps no member
in the pool; an address leaves `leaving` when an answer lists it again (the same task
back, or a new one at the address), when its member goes down or another node answers
there (`gone`: a new task at a reused address must not wait for DNS), or when the pool
no longer knows it. A failed or
empty answer changes nothing (a DNS outage or a wrong name must not empty a backend),
nor does an answer that shares no address with the pool (a name of another network):
it is only kept to compare the next one with.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field


@dataclass
class Departures:
    """The last useful answer per name, and the addresses leaving."""

    answers: dict[str, frozenset[str]] = field(default_factory=dict)
    leaving: frozenset[str] = frozenset()
    names: tuple[str, ...] = ()  # the names of the last round

    def update(
        self, answers: Mapping[str, frozenset[str] | None], known: Collection[str]
    ) -> frozenset[str]:
        """Take one round of answers (None: the name did not resolve) for the pool's
        addresses `known`; returns the addresses that started leaving in this round."""
        known = frozenset(known)
        if set(answers) != set(self.names):
            # Names added or dropped (a SIGHUP): what the old ones said no longer holds.
            self.names, self.answers, self.leaving = tuple(answers), {}, frozenset()
        leaving = self.leaving & known
        listed: set[str] = set()
        started: set[str] = set()
        for name, answer in answers.items():
            if not answer:
                continue  # no word from this name this round: keep what it said last
            listed |= answer
            previous = self.answers.get(name)
            self.answers[name] = answer
            if previous is not None and answer & known:
                started |= (previous - answer) & known
        started -= listed  # another name still lists it (two services at one address)
        self.leaving = (leaving | started) - listed
        return frozenset(started - leaving)

    def gone(self, addresses: Iterable[str]) -> bool:
        """The replicas at `addresses` are gone (down, forgotten, another node there): what
        DNS said of them was about them, not about a new replica at the same address,
        which Swarm lists only once its HEALTHCHECK passed. True when any was leaving."""
        found = self.leaving & frozenset(addresses)
        self.leaving -= found
        return bool(found)
