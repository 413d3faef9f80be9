"""The status page in a real browser (Debian's headless Chromium, driven by Playwright),
served by a real `poller run` on loopback: it shows what the poller sees, follows a node
appearing and disappearing without a reload, and shows a hostile identity as text."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.labs import wait_for
from tests.support.loopback import Lab
from tests.support.requirements import unavailable

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
A, B, C = "127.0.6.2", "127.0.6.3", "127.0.6.4"
HOSTILE = '<script>window.pwned = 1</script><img src=x onerror="window.pwned = 2">'


def require(condition: bool, what: str) -> None:
    if not condition:
        unavailable(f"needs {what}; .ci/run installs it")


@pytest.fixture
def page(tmp_path: Path) -> Iterator[tuple[Lab, Any]]:
    require(shutil.which("haproxy") is not None, "haproxy")
    require(Path(CHROMIUM).exists(), "Debian's chromium")
    try:
        import playwright.sync_api as sync_api
    except ImportError:
        require(False, "the playwright package")
    lab = Lab(tmp_path / "lab", subnet="127.0.6.0/28")
    try:
        lab.start_haproxy()
        lab.start_node(A, "alpha")
        lab.start_node(B, HOSTILE)
        lab.start_poller()
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            try:
                tab = browser.new_page(viewport={"width": 1280, "height": 800})
                tab.goto(f"http://127.0.0.1:{lab.status_port}/")
                yield lab, tab
            finally:
                browser.close()
    finally:
        lab.close()


def row(member: str) -> str:
    return f'tr[data-member="{member}:3000"]'


def test_page_follows_the_pool_without_reloading(page: tuple[Lab, Any]) -> None:
    lab, tab = page
    tab.wait_for_selector(f"{row(A)} td.state.up", timeout=15_000)
    tab.wait_for_selector(f"{row(B)} td.state.up", timeout=15_000)
    tab.evaluate("window.sameDocument = true")

    # The hostile identity is shown as text: no script ran, no element was made.
    assert tab.inner_text(f"{row(B)} td.identity") == HOSTILE
    assert tab.evaluate("window.pwned") is None
    assert tab.query_selector(f"{row(B)} td.identity script, {row(B)} td.identity img") is None

    lab.start_node(C, "gamma")
    tab.wait_for_selector(f"{row(C)} td.state.up", timeout=15_000)
    assert "gamma" in tab.inner_text(f"{row(C)} td.identity")
    lab.stop_node(A)
    tab.wait_for_function(
        f"""() => {{
            const cell = document.querySelector('{row(A)} td.state');
            return cell !== null && cell.textContent !== 'up';
        }}""",
        timeout=15_000,
    )
    assert tab.evaluate("window.sameDocument") is True  # never reloaded
    assert "up" in tab.inner_text("#events")  # joins are listed
    assert "runtime ok" in tab.inner_text("#changes")
    assert str(lab.stats_port) in tab.get_attribute("#stats-link", "href")
    wait_for(lambda: "answered" in tab.inner_text("#discovery"), 10, "the sweep summary")


def test_page_says_how_it_is_sorted_and_scales_its_sparklines(page: tuple[Lab, Any]) -> None:
    _, tab = page
    tab.wait_for_selector(f"{row(A)} td.state.up", timeout=15_000)
    address = 'th[data-sort="address"]'
    state = 'th[data-sort="state"]'
    assert tab.get_attribute(address, "aria-sort") == "ascending"
    assert tab.get_attribute(state, "aria-sort") == "none"
    assert tab.evaluate(f"getComputedStyle(document.querySelector('{address}'), '::after').content")
    tab.click(state)
    assert tab.get_attribute(state, "aria-sort") == "ascending"
    assert tab.get_attribute(address, "aria-sort") == "none"
    tab.click(state)
    assert tab.get_attribute(state, "aria-sort") == "descending"
    # The sparkline's scale is written beside it, not only in a tooltip.
    assert tab.inner_text(f"{row(A)} .spark-max").startswith("max ")


def test_page_is_read_only(page: tuple[Lab, Any]) -> None:
    lab, tab = page
    response = tab.request.post(f"http://127.0.0.1:{lab.status_port}/pool", data="{}")
    assert response.status == 405
    headers = tab.request.get(f"http://127.0.0.1:{lab.status_port}/").headers
    # Exactly this: no 'unsafe-inline', no other source, nothing to frame the page.
    assert headers["content-security-policy"] == (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'"
    )
    assert headers["x-frame-options"] == "DENY"
    assert headers["x-content-type-options"] == "nosniff"


def test_page_shows_a_server_an_operator_set_aside_by_hand(page: tuple[Lab, Any]) -> None:
    lab, tab = page
    tab.wait_for_selector(f"{row(A)} td.state.up", timeout=15_000)
    assert lab.admin("set server nodes/n_127_0_6_2_3000 state maint").strip() == ""
    tab.wait_for_selector(f"{row(A)} td.state.maintenance", timeout=15_000)
    assert "set_aside" in tab.inner_text("#events")
    assert lab.admin("set server nodes/n_127_0_6_2_3000 state ready").strip() == ""
    tab.wait_for_selector(f"{row(A)} td.state.up", timeout=15_000)
