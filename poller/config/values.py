"""Value types and parsers the settings' sections share: the base of every section (frozen,
unknown keys rejected), list splitting for environment variables, HTTP status ranges, the
header-name and path patterns. Pure: no I/O.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict

ENV_PREFIX = "POLLER_"
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
PATH = re.compile(r"^/[\x21-\x7e]*$")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def distinct_ports(value: tuple[int, ...]) -> tuple[int, ...]:
    """A list of ports in which none repeats."""
    if len(set(value)) != len(value):
        raise ValueError(f"ports repeat: {list(value)}")
    return value


def as_list(value: Any) -> Any:
    """Accept "a,b" (handy in environment variables) and a lone scalar as lists."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, int):
        return [value]
    return value


StatusRanges = tuple[tuple[int, int], ...]


def parse_status_ranges(value: Any) -> StatusRanges:
    """`200-299`, `200,204`, 200 or [200, "300-399"] into sorted inclusive ranges."""
    items = value if isinstance(value, list | tuple) else str(value).split(",")
    ranges: list[tuple[int, int]] = []
    for raw in items:
        text = str(raw).strip()
        match = re.fullmatch(r"(\d{3})(?:\s*-\s*(\d{3}))?", text)
        if not match:
            raise ValueError(f"{text!r} is not a status code or range such as 200-399")
        low = int(match.group(1))
        high = int(match.group(2) or low)
        if not 100 <= low <= high <= 599:
            raise ValueError(f"{text!r} is not within 100-599 with low <= high")
        ranges.append((low, high))
    if not ranges:
        raise ValueError("at least one status code is needed")
    return tuple(sorted(set(ranges)))


def status_ranges(value: Any) -> StatusRanges:
    """A validator's view: ranges already parsed (a settings object rebuilt from another)
    stay as they are."""
    if isinstance(value, tuple) and all(isinstance(r, tuple) for r in value):
        return value
    return parse_status_ranges(value)
