"""JSON-lines logging, configured only in entry points.

Modules log with ``logging.getLogger(__name__)``, a stable event name as the message
(``"modbus.read_failed"``) and fields in ``extra``::

    log.warning("modbus.read_failed", extra={"device": "gauge-1", "error": str(exc)})

:func:`setup` turns every record into one JSON object per line on stdout (journald keeps them).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

# Attributes every LogRecord has; anything else on a record came from ``extra``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()) | {
    "message",
    "asctime",
    "taskName",
}


class JsonLineFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, event and the ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def setup(level: str | int = "INFO", stream: TextIO | None = None) -> None:
    """Send all logging to ``stream`` (stdout) as JSON lines. Call once, from ``main()``."""
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonLineFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def tail(path: Path, lines: int) -> list[str]:
    """The last ``lines`` lines of a log file (what a process printed last), reading at most its
    last 64 kB; a file that cannot be read says so in the one line returned."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode("utf-8", "replace")
    except OSError as exc:
        return [f"(cannot read {path}: {exc})"]
    return text.splitlines()[-lines:]
