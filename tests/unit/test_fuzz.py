"""Property-based fuzzing of what comes from outside: config files, environment variables,
and whatever a node answers. Each must end in a typed result or one clear error, never a
crash. The budget is hypothesis's profile: `ci` (default, 100 examples per property) in
`make test`; the `long` profile (20,000) for a long local run, with the command in
docs/CONTRIBUTING.md ("Development")."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import httpx
import yaml
from hypothesis import given
from hypothesis import strategies as st

from poller.config import Settings, load_settings
from poller.discovery.asking import MAX_IDENTITY_CHARS, Outcome
from poller.errors import ConfigError
from tests.support.asking import classify

SECTIONS = ["discovery", "probe", "pool", "guard", "haproxy", "status", "state", "bogus"]
FIELDS = [
    "subnets", "exclude", "ports", "interval_seconds", "method", "arp_attempts", "path",
    "timeout_seconds", "expect_status", "identity", "json_field", "header", "rise", "fall",
    "min_members", "max_removed_fraction", "listen", "backend", "retries", "template", "x",
]  # fmt: skip
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["10.0.0.0/24", "auto", "200-299", "127.0.0.1:9345", "/healthz", "-1"]),
)
values = (
    scalars
    | st.lists(scalars, max_size=4)
    | st.dictionaries(st.sampled_from(FIELDS), scalars | st.lists(scalars, max_size=3), max_size=4)
)
documents = st.dictionaries(
    st.sampled_from(SECTIONS),
    st.dictionaries(st.sampled_from(FIELDS), values, max_size=5) | values,
    max_size=5,
)


def load_text(text: bytes) -> Settings | ConfigError:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "poller.yaml"
        path.write_bytes(text)
        try:
            return load_settings(path, environ={})
        except ConfigError as exc:
            return exc


@given(documents)
def test_any_config_document_loads_or_names_what_is_wrong(document: dict[str, Any]) -> None:
    outcome = load_text(yaml.safe_dump(document).encode())
    if isinstance(outcome, ConfigError):
        assert outcome.where
        assert outcome.problem
    else:
        assert isinstance(outcome, Settings)


@given(st.binary(max_size=300))
def test_any_bytes_as_a_config_file_load_or_fail_clearly(raw: bytes) -> None:
    outcome = load_text(raw)
    assert isinstance(outcome, Settings | ConfigError)


@given(
    st.dictionaries(
        st.builds(
            lambda s, f: f"POLLER_{s.upper()}__{f.upper()}",
            st.sampled_from(SECTIONS),
            st.sampled_from(FIELDS),
        ),
        st.text(max_size=20).filter(lambda v: "\0" not in v),
        max_size=4,
    )
)
def test_any_environment_loads_or_names_the_variable(environ: dict[str, str]) -> None:
    outcome: Settings | ConfigError
    try:
        outcome = load_settings(None, environ=environ)
    except ConfigError as exc:
        outcome = exc
    assert isinstance(outcome, Settings) or outcome.where


identities = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=600),
    st.lists(st.text(max_size=5), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)
bodies = st.one_of(
    st.binary(max_size=2000),
    st.builds(lambda v: json.dumps({"host": v}).encode(), identities),
    st.builds(lambda v: json.dumps(v).encode(), identities),
)
header_values = st.text(
    st.characters(min_codepoint=32, max_codepoint=255, exclude_characters="\x7f"), max_size=300
)


def answer_with(status: int, headers: list[tuple[str, str]], body: bytes, **probe: Any) -> Any:
    def handler(request: httpx.Request) -> httpx.Response:
        raw = [(name, value.encode("latin-1")) for name, value in headers]  # as on the wire
        return httpx.Response(status, headers=raw, stream=httpx.ByteStream(body))

    return classify(handler, **probe)


@given(
    status=st.integers(100, 599),
    headers=st.lists(
        st.tuples(
            st.sampled_from(["x-backend-ip", "location", "content-type", "x-a"]), header_values
        ),
        max_size=4,
    ),
    body=bodies,
    identity=st.sampled_from([{"json_field": "host"}, {"header": "x-backend-ip"}]),
    expect_body=st.sampled_from([None, "hello", "{"]),
)
def test_any_answer_is_classified_and_its_identity_bounded(
    status: int,
    headers: list[tuple[str, str]],
    body: bytes,
    identity: dict[str, str],
    expect_body: str | None,
) -> None:
    probe: dict[str, Any] = {"identity": identity, "max_body_bytes": 1024}
    if expect_body is not None:
        probe["expect_body"] = expect_body
    result = answer_with(status, headers, body, **probe)
    assert isinstance(result.outcome, Outcome)
    assert result.identity is None or len(result.identity) <= MAX_IDENTITY_CHARS
    assert len(result.detail) <= 300
    if result.outcome is Outcome.OK:
        assert 200 <= status <= 299
        assert expect_body is None or expect_body.encode() in body[:1024]
    elif 200 <= status <= 299 and expect_body is None:
        raise AssertionError(f"a {status} without body checks must be ok, got {result}")
