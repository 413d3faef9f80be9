"""Small file systems of a test's own, to fill up or make read-only."""

from __future__ import annotations

import os
from pathlib import Path


def fill(directory: Path) -> Path:
    """Fill the file system until a write fails with ENOSPC; returns the filler."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for _ in range(10_000):  # bounded: 256 KiB is gone after ~64 of these
            try:
                os.write(fd, b"\0" * 4096)
            except OSError:
                return filler
    finally:
        os.close(fd)
    raise AssertionError("the small file system never filled up")
