"""docs/status.png: the status page as an operator meets it, every state on screen.

The loopback lab with demo nodes named like containers, paced slowly enough that a
picture catches each state: members up, one rising, one falling, one down (stopped and
removed), two killed at once and held by the guard (left the pool, still in HAProxy:
shown draining); a second service (an API on port 3001) with one server an operator put
in maintenance by hand. Headless Chromium (Debian's) through Playwright.

    python -m tests.support.screenshot docs/status.png
"""

from __future__ import annotations

import argparse
import signal
import tempfile
from pathlib import Path
from typing import Any

from tests.support.demo import SERVICES
from tests.support.labs import wait_for
from tests.support.loopback import Lab

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
NODES = {  # address: identity (the demo node answers its host name, here a container id)
    "127.0.7.2": "3f2a9c1b7d40",
    "127.0.7.3": "8e41d0c2b9aa",
    "127.0.7.4": "c07b55e1f2d3",
    "127.0.7.5": "5d9e0a7c3b18",
    "127.0.7.6": "a1c4f8e2d6b0",
    "127.0.7.7": "e6b3d2a9c4f1",
}
LATE = ("127.0.7.8", "0b7f3e9d1a25")
API = {"127.0.7.9": "api-7c1e04b2", "127.0.7.10": "api-93fd5a61"}  # port 3001
SET_ASIDE = "api/n_127_0_7_10_3001"  # put in maintenance by hand


def states(lab: Lab) -> dict[str, str]:
    pool: dict[str, Any] | None = lab.status("/pool")
    return (
        {m["address"]: ("draining" if m["draining"] else m["state"]) for m in pool["members"]}
        if pool
        else {}
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path)
    args = parser.parse_args()
    import playwright.sync_api as sync_api

    with tempfile.TemporaryDirectory(prefix="poller-shot-") as tmp:
        lab = Lab(
            Path(tmp),
            subnet="127.0.7.0/28",
            settings={
                "pool": {
                    "rise": 6,
                    "fall": 4,
                    "interval_seconds": 1.0,
                    "rise_interval_seconds": 1.0,
                },
                "discovery": {"interval_seconds": 1.0},
                "probe": {"timeout_seconds": 0.5},
                "guard": {"max_removed_fraction": 0.3, "max_hold_seconds": 0},
                "services": SERVICES,
            },
        )
        try:
            lab.start_haproxy()
            for address, identity in NODES.items():
                lab.start_node(address, identity)
            for address, identity in API.items():
                lab.start_node(address, identity, port=3001)
            lab.start_poller()
            wait_for(lambda: len(lab.haproxy.enabled()) == len(NODES), 30, "all nodes served")
            wait_for(lambda: lab.addresses("api") == set(API), 30, "the API served")
            lab.admin(f"set server {SET_ASIDE} state maint")
            lab.stop_node("127.0.7.3")  # graceful: removed, remembered as down
            wait_for(lambda: "127.0.7.3" not in lab.addresses(), 30, "the stopped node removed")
            for address in ("127.0.7.6", "127.0.7.7"):  # two at once: the guard holds them
                lab.stop_node(address, signal.SIGKILL)
            wait_for(lambda: lab.metric("poller_guard_held_members") == 2, 30, "the hold")
            lab.start_node(*LATE)
            lab.stop_node("127.0.7.5")

            def every_state() -> bool:
                seen = set(states(lab).values())
                return {"up", "rising", "falling", "down", "draining"} <= seen

            wait_for(every_state, 30, "every state at once")
            with sync_api.sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
                tab = browser.new_page(viewport={"width": 1280, "height": 860})
                tab.goto(f"http://127.0.0.1:{lab.status_port}/")
                tab.wait_for_selector("td.state.rising", timeout=15_000)
                tab.wait_for_selector("td.state.falling", timeout=15_000)
                tab.screenshot(path=str(args.output), full_page=True)
                browser.close()
        finally:
            lab.close()
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
