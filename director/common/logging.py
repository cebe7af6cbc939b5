"""Log output: human-readable text by default, or one JSON object per line."""

from __future__ import annotations

import json
import sys
from typing import IO, Any

from twisted.logger import (
    FileLogObserver,
    ILogObserver,
    LogEvent,
    formatEvent,
    formatTime,
)


def _json_line(event: LogEvent) -> str:
    record: dict[str, Any] = {
        "time": formatTime(event.get("log_time"), timeFormat="%Y-%m-%dT%H:%M:%S.%f%z"),
        "level": getattr(event.get("log_level"), "name", "info"),
        "namespace": event.get("log_namespace", ""),
        "message": formatEvent(event),
    }
    failure = event.get("log_failure")
    if failure is not None:
        record["traceback"] = failure.getTraceback()
    for key, value in event.items():
        if key.startswith("log_") or key in record or key in ("format", "isError", "message"):
            continue
        if isinstance(value, str | int | float | bool) or value is None:
            record[key] = value
    return json.dumps(record, default=str) + "\n"


def json_observer(stream: IO[str] | None = None) -> ILogObserver:
    """A log observer writing JSON lines (twistd calls this with no arguments)."""
    return FileLogObserver(stream or sys.stdout, _json_line)
