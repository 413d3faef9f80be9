"""One probe's classification, asked in process: an httpx MockTransport stands in for the
node (no socket), and `asking._request` classifies what it answers. Shared by the unit
tests of probing and the fuzz tests."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from poller.config import load_settings
from poller.discovery.asking import _request, make_client
from poller.endpoints import Endpoint
from poller.results import Outcome, ProbeResult

TARGET = Endpoint("10.0.0.7", 3000)


def settings(**probe: Any) -> Any:
    return load_settings(None, environ={}, overrides={"probe": probe}).probe


def classify(handler: Any, **probe: Any) -> ProbeResult:
    probe_settings = settings(**probe)

    def result(
        outcome: Outcome, status: int | None = None, identity: str | None = None, detail: str = ""
    ) -> ProbeResult:
        return ProbeResult(TARGET, outcome, True, 0.0, status, identity, detail)

    async def go() -> ProbeResult:
        async with make_client(probe_settings, 4, httpx.MockTransport(handler)) as client:
            return await _request(client, probe_settings, TARGET, result)

    return asyncio.run(go())
