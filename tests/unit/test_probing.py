"""Classification of HTTP answers (httpx MockTransport: no sockets) and of sweeps."""

from __future__ import annotations

import ssl
from collections import Counter
from typing import Any

import httpx
import pytest

from poller.results import Outcome, Sweep
from tests.support.asking import classify


def answer(status: int = 200, **kwargs: Any) -> Any:
    """A streamed response, as from a real socket (a prebuilt body would be 'consumed')."""
    built = httpx.Response(status, **kwargs)
    return lambda request: httpx.Response(
        status, headers=built.headers, stream=httpx.ByteStream(built.content)
    )


def raising(exc: Exception) -> Any:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    return handler


@pytest.mark.parametrize(
    ("handler", "probe", "outcome", "status"),
    [
        (answer(200, text="hi"), {}, Outcome.OK, 200),
        (answer(204), {}, Outcome.OK, 204),
        (answer(500, text="oops"), {}, Outcome.UNEXPECTED_STATUS, 500),
        (
            answer(302, headers={"location": "http://203.0.113.1/"}),
            {},
            Outcome.UNEXPECTED_STATUS,
            302,
        ),
        (answer(302), {"expect_status": "200-399"}, Outcome.OK, 302),
        (answer(200, text="all good"), {"expect_body": "good"}, Outcome.OK, 200),
        (answer(200, text="all bad"), {"expect_body": "good"}, Outcome.BODY_MISMATCH, 200),
        (raising(httpx.ReadTimeout("slow")), {}, Outcome.TIMEOUT, None),
        (raising(httpx.RemoteProtocolError("illegal status line")), {}, Outcome.NOT_HTTP, None),
        (raising(httpx.ReadError("reset by peer")), {}, Outcome.RESET, None),
    ],
)
def test_classification(
    handler: Any, probe: dict[str, Any], outcome: Outcome, status: int | None
) -> None:
    got = classify(handler, **probe)
    assert got.outcome is outcome
    assert got.status == status
    assert got.healthy is (outcome is Outcome.OK)


def test_tls_failure_is_its_own_class() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        try:
            raise ssl.SSLError("certificate verify failed")
        except ssl.SSLError as exc:
            raise httpx.ConnectError("tls") from exc

    assert classify(handler).outcome is Outcome.TLS_ERROR


def test_redirect_is_not_followed() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(
            301, headers={"location": "http://10.9.9.9/"}, stream=httpx.ByteStream(b"")
        )

    result = classify(handler)
    assert seen == ["http://10.0.0.7:3000/"]
    assert "10.9.9.9" in result.detail


def test_request_carries_path_method_and_headers() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, stream=httpx.ByteStream(b""))

    classify(handler, path="/healthz", method="HEAD", headers={"Host": "app.example"})
    assert seen[0].method == "HEAD"
    assert seen[0].url.path == "/healthz"
    assert seen[0].headers["host"] == "app.example"


@pytest.mark.parametrize(
    ("response", "identity", "expected"),
    [
        ({"json": {"host": "node-a"}}, {"json_field": "host"}, "node-a"),
        ({"json": {"host": 42}}, {"json_field": "host"}, "42"),
        ({"json": {"host": {"nested": 1}}}, {"json_field": "host"}, None),
        ({"json": ["host"]}, {"json_field": "host"}, None),
        ({"text": "not json"}, {"json_field": "host"}, None),
        ({"headers": {"x-backend-ip": "10.0.0.7"}}, {"header": "x-backend-ip"}, "10.0.0.7"),
        ({}, {"header": "x-backend-ip"}, None),
        ({"json": {"host": "x" * 10_000}}, {"json_field": "host"}, "x" * 256),
    ],
)
def test_identity_extraction(
    response: dict[str, Any], identity: dict[str, str], expected: str | None
) -> None:
    got = classify(answer(200, **response), identity=identity)
    assert got.identity == expected


def test_body_read_is_bounded() -> None:
    got = classify(
        answer(200, content=b"a" * 1_000_000 + b"needle"), expect_body="needle", max_body_bytes=1024
    )
    assert got.outcome is Outcome.BODY_MISMATCH
    assert "first 1024 bytes" in got.detail


def test_identity_from_a_truncated_json_body_is_not_guessed() -> None:
    body = b'{"host": "a", "pad": "' + b"x" * 2000 + b'"}'
    got = classify(answer(200, content=body), identity={"json_field": "host"}, max_body_bytes=100)
    assert got.outcome is Outcome.OK
    assert got.identity is None


def test_sweep_failure_needs_a_majority_of_local_errors() -> None:
    sweep = Sweep(targets=10, outcomes=Counter({Outcome.LOCAL_ERROR: 4, Outcome.REFUSED: 6}))
    assert sweep.failure is None
    sweep.outcomes = Counter({Outcome.LOCAL_ERROR: 5, Outcome.REFUSED: 5})
    assert sweep.failure is not None
    assert "5 of 10" in sweep.failure
    assert Sweep().failure is None  # nothing to sweep is not a failure
