"""A sans-I/O decoder for server-sent events (the WHATWG ``text/event-stream`` format).

Feed it bytes as they arrive; it returns the complete events. Comment lines (``:``)
are ignored, ``data`` lines are joined with newlines, a blank line dispatches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

MAX_EVENT_BYTES: Final = 64 * 1024 * 1024


@dataclass(frozen=True)
class SSEEvent:
    event: str
    data: str
    id: str | None


class SSEDecoder:
    """Incremental decoder. Raises ValueError if one event exceeds ``max_bytes``."""

    def __init__(self, max_bytes: int = MAX_EVENT_BYTES) -> None:
        self._buf = b""
        self._max = max_bytes
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None
        self._size = 0
        self.last_id: str | None = None

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        out: list[SSEEvent] = []
        self._buf += chunk
        while True:
            cut = -1
            for sep in (b"\n", b"\r"):
                pos = self._buf.find(sep)
                if pos != -1 and (cut == -1 or pos < cut):
                    cut = pos
            if cut == -1:
                break
            line = self._buf[:cut]
            skip = 2 if self._buf[cut : cut + 2] == b"\r\n" else 1
            if self._buf[cut : cut + 1] == b"\r" and cut + 1 == len(self._buf):
                break  # a lone CR at the end may be the first half of CRLF
            self._buf = self._buf[cut + skip :]
            ev = self._line(line.decode("utf-8", "replace"))
            if ev is not None:
                out.append(ev)
        if len(self._buf) + self._size > self._max:
            raise ValueError("server-sent event too large")
        return out

    def _line(self, line: str) -> SSEEvent | None:
        if line == "":
            if not self._data and not self._event:
                return None
            ev = SSEEvent(self._event or "message", "\n".join(self._data), self._id)
            if self._id is not None:
                self.last_id = self._id
            self._event, self._data, self._id, self._size = "", [], None, 0
            return ev
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
            self._size += len(value)
            if self._size > self._max:
                raise ValueError("server-sent event too large")
        elif name == "event":
            self._event = value
        elif name == "id" and "\x00" not in value:
            self._id = value
        return None
