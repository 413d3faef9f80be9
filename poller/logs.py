"""Log setup: one line per event, JSON when stderr is not a terminal (containers).

Structured fields travel in `extra={"fields": {...}}`; this module only formats them.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=True)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", {})
        extra = " ".join(f"{key}={json.dumps(value, default=str)}" for key, value in fields.items())
        line = f"{record.levelname.lower():7} {record.getMessage()}"
        return f"{line} {extra}" if extra else line


def configure(level: str = "info", json_logs: bool | None = None) -> None:
    stream = sys.stderr
    if json_logs is None:
        json_logs = not stream.isatty()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if json_logs else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx logs every request at INFO; a sweep makes thousands.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    # APScheduler logs every run of every job at INFO: several lines a second here.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
