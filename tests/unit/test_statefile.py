"""Persisted state: round trip, atomic files, corrupt files reported."""

from __future__ import annotations

from pathlib import Path

import pytest

from poller import files
from poller.applying.journal import Journal
from poller.endpoints import Endpoint
from poller.errors import StateError
from poller.pool import statefile
from poller.pool.pools import Observation, Pool, Rules, State, step


def make_pool() -> Pool:
    pool, _ = step(
        Pool(),
        [
            Observation(Endpoint("10.0.0.2", 3000), True, "b"),
            Observation(Endpoint("10.0.0.1", 3000), True, None),
        ],
        100.0,
        Rules(rise=1, fall=2),
    )
    return pool


def test_round_trip_keeps_members_states_and_identities(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "state.json"
    statefile.save(path, {"default": make_pool()}, mono_now=110.0, wall_now=1000.0)
    saved = statefile.load(path, mono_now=5.0, wall_now=1003.0, services=["default"])
    assert saved is not None
    assert saved.pending_reload is False
    members = saved.pools["default"].all()
    assert [(m.endpoint.address, m.state, m.identity) for m in members] == [
        ("10.0.0.1", State.UP, None),
        ("10.0.0.2", State.UP, "b"),
    ]
    # since = 10 s before the save, 3 s of downtime: 13 s before the new "now".
    assert members[0].since == pytest.approx(5.0 - 13.0)
    assert members[0].last.at == float("-inf")  # probed again at once
    assert path.stat().st_mode & 0o777 == 0o600


def test_a_reload_owed_by_an_older_state_file_is_still_read(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text('{"version": 1, "pending_reload": true, "members": []}')
    saved = statefile.load(path, 0.0, 0.0, ["default"])
    assert saved is not None
    assert saved.pending_reload is True


def test_the_reload_journal_survives_a_restart(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "state.json.reload-pending")
    assert journal.pending is False
    journal.set(True)
    assert Journal(journal.path).pending is True  # another process sees it
    journal.set(False)
    assert not journal.path.exists()


def test_missing_file_is_no_state(tmp_path: Path) -> None:
    assert statefile.load(tmp_path / "none.json", 0.0, 0.0, ["default"]) is None


def test_each_service_keeps_its_pool_and_a_one_pool_file_is_the_first_services(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.json"
    statefile.save(path, {"web": make_pool(), "api": Pool()}, 110.0, 1000.0)
    saved = statefile.load(path, 110.0, 1000.0, ["api", "web", "admin"])
    assert saved is not None
    assert {name: len(p.members) for name, p in saved.pools.items()} == {"api": 0, "web": 2}
    # Written by poller before services: version 1, one pool.
    path.write_text(
        '{"version": 1, "members": [{"address": "10.0.0.1", "port": 80, "identity": null,'
        ' "state": "up", "successes": 1, "failures": 0, "since": 0}]}'
    )
    saved = statefile.load(path, 0.0, 0.0, ["web", "api"])
    assert saved is not None
    assert [len(saved.pools[n].members) for n in saved.pools] == [1]
    assert list(saved.pools) == ["web"]


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "[]",
        '{"version": 99, "members": []}',
        '{"version": 1, "members": [{"address": "nope", "port": 1}]}',
        '{"version": 1, "members": [{"address": "10.0.0.1", "port": 70000, "identity": null,'
        ' "state": "up", "successes": 1, "failures": 0, "since": 0}]}',
        '{"version": 1, "members": [{"address": "10.0.0.1", "port": 80, "identity": 5,'
        ' "state": "up", "successes": 1, "failures": 0, "since": 0}]}',
        '{"version": 1, "members": [{"address": "10.0.0.1", "port": 80, "identity": null,'
        ' "state": "sideways", "successes": 1, "failures": 0, "since": 0}]}',
    ],
)
def test_corrupt_state_is_a_state_error_naming_the_file(tmp_path: Path, content: str) -> None:
    path = tmp_path / "state.json"
    path.write_text(content)
    with pytest.raises(StateError, match=r"state\.json: unusable state file"):
        statefile.load(path, 0.0, 0.0, ["default"])


def test_save_leaves_no_temp_files(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    for _ in range(3):
        statefile.save(path, {"default": make_pool()}, 0.0, 0.0)
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_staged_copies_left_by_a_kill_are_removed(tmp_path: Path) -> None:

    target = tmp_path / "haproxy.cfg"
    target.write_text("live\n")
    (tmp_path / ".haproxy.cfg.abc123.tmp").write_text("half")
    (tmp_path / ".haproxy.cfg.def456.staged").write_text("half")
    (tmp_path / "haproxy.cfg.last-good").write_text("good\n")
    (tmp_path / ".other.cfg.x.tmp").write_text("not ours")
    removed = files.remove_stale(target)
    assert sorted(removed) == [".haproxy.cfg.abc123.tmp", ".haproxy.cfg.def456.staged"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".other.cfg.x.tmp",
        "haproxy.cfg",
        "haproxy.cfg.last-good",
    ]
