"""Logs, one event per line: a JSON object (the default), or ``key=value`` text.

Each record's ``extra`` fields become keys. In text, a value with spaces or
quotes is quoted and newlines are escaped, so an event (a deploy, a scale
event, a replica death, a model error) stays on one line; only a record
logged with ``exc_info`` (a bug, not a client mistake) adds its traceback.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                data[key] = value
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


def text_value(value: Any) -> str:
    """A value on one line: a plain word bare, other text quoted, the rest compact JSON."""
    if not isinstance(value, str):
        return json.dumps(value, default=str, separators=(",", ":"), ensure_ascii=False)
    if value and not any(c in value for c in ' "=\n\t\r'):
        return value
    return json.dumps(value, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(
            f"{k}={text_value(v)}"
            for k, v in record.__dict__.items()
            if k not in _STANDARD and not k.startswith("_")
        )
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        message = record.getMessage().replace("\n", "\\n")
        line = f"{stamp} {record.levelname.lower():7} {record.name}: {message}"
        text = f"{line} {extras}".rstrip()
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def configure(level: str = "info", json_logs: bool = True) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_logs else TextFormatter())
    root = logging.getLogger("zeroserve")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
