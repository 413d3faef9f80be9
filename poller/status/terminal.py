"""`poller scan`'s live progress line, on a terminal only.

One line on stderr, rewritten in place at most four times a second (targets done of all,
answered, healthy, elapsed, ETA from the sweep's plan), cut to the terminal's width and
erased before the results are printed, so the screen ends as if it had never been
there. Whether to show it at all is the CLI's call (a TTY, no --quiet, no JSON to a pipe).
"""

from __future__ import annotations

import asyncio
import shutil
import time
from typing import TextIO

from poller.results import Progress

REFRESH_SECONDS = 0.25
_ERASE = "\r\033[K"


async def show(progress: Progress, stream: TextIO) -> None:
    """Redraw the line until cancelled; then erase it."""
    try:
        while True:
            width = shutil.get_terminal_size((80, 24)).columns - 1
            stream.write(_ERASE + progress.line(time.monotonic())[:width])
            stream.flush()
            await asyncio.sleep(REFRESH_SECONDS)
    finally:
        stream.write(_ERASE)
        stream.flush()
