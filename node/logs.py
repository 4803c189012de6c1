"""Structured logging: one JSON object per line (or plain text for humans).

Fields: ``ts`` (ISO-8601 UTC), ``level``, ``logger``, ``msg``, ``node``, and whichever
of ``channel``, ``height``, ``view``, ``peer``, ``tx``, ``code`` the call passed with
``extra={...}``.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import sys
from typing import Final

CONTEXT_FIELDS: Final = ("channel", "height", "view", "peer", "tx", "code", "reason")


class JsonFormatter(logging.Formatter):
    def __init__(self, node_id: str) -> None:
        super().__init__()
        self._node = node_id

    def format(self, record: logging.LogRecord) -> str:
        ts = _dt.datetime.fromtimestamp(record.created, tz=_dt.UTC)
        doc: dict[str, object] = {
            "ts": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "node": self._node,
            "msg": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                doc[name] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self, node_id: str) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s [" + node_id + "] %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        ctx = " ".join(
            f"{n}={record.__dict__[n]}"
            for n in CONTEXT_FIELDS
            if record.__dict__.get(n) is not None
        )
        return f"{base} {ctx}" if ctx else base


def setup_logging(node_id: str, fmt: str = "json", level: str = "info") -> None:
    """Route the root logger (and uvicorn's) to stderr with the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(node_id) if fmt == "json" else TextFormatter(node_id))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        lg = logging.getLogger(name)
        lg.handlers[:] = []
        lg.propagate = True
    # Access logs are noisy at thousands of requests/s; metrics count requests instead.
    logging.getLogger("uvicorn.access").disabled = True
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
