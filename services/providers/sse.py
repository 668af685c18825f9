"""A lean server-sent events parser over a response's raw bytes (the WHATWG event-stream rules).

It replaces httpx_sse's text pipeline (bytes -> text decoder -> line decoder -> event decoder,
one Python generator per stage) with one object fed whole network chunks: lines split on CRLF,
LF or CR (a CR at the end of a chunk waits for the next one, which may start with its LF);
``data:`` lines of one event joined with "\\n"; comments (``:``) ignored; ``event:``, ``id:``
and ``retry:`` kept; a UTF-8 byte order mark at the very start dropped. The data is decoded as
UTF-8 per complete line, so a character split between two chunks arrives whole.

As in httpx_sse, an event is dispatched at a blank line when any field is set (an ``event:`` with
no data is still an event), and :meth:`SSEParser.end` dispatches a last event that the stream
did not close with a blank line (the official OpenAI and Anthropic SDKs do the same).
"""

from __future__ import annotations

from dataclasses import dataclass

_BOM = b"\xef\xbb\xbf"


@dataclass(slots=True)
class ServerSentEvent:
    """One dispatched event: its type ("message" unless an ``event:`` line named another, as the
    spec and httpx_sse say), data, last event id and retry."""

    event: str = "message"
    data: str = ""
    id: str = ""
    retry: int | None = None


class SSEParser:
    """Incremental event-stream parser: :meth:`feed` network chunks, then :meth:`end` once."""

    __slots__ = ("_buffer", "_data", "_event", "_id", "_pending", "_retry", "_started")

    def __init__(self) -> None:
        self._buffer = b""
        self._started = False
        self._event = ""
        self._data: list[bytes] = []
        self._id = ""
        self._retry: int | None = None
        # Whether a field line came since the last dispatch (what end() may still hand over).
        self._pending = False

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """The events completed by ``chunk`` (often none or one), in order."""
        if not self._started:
            if not chunk:
                return []
            self._started = True
            if chunk.startswith(_BOM):
                chunk = chunk[3:]
        buffer = self._buffer + chunk if self._buffer else chunk
        if b"\r" in buffer:
            # A CR at the very end may be the first half of a CRLF: keep it for the next chunk.
            held = buffer.endswith(b"\r")
            if held:
                buffer = buffer[:-1]
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            lines = buffer.split(b"\n")
            self._buffer = lines.pop() + (b"\r" if held else b"")
        else:
            lines = buffer.split(b"\n")
            self._buffer = lines.pop()
        events: list[ServerSentEvent] = []
        for line in lines:
            event = self._line(line)
            if event is not None:
                events.append(event)
        return events

    def end(self) -> list[ServerSentEvent]:
        """At the end of a body that ended cleanly: the last event, if it lacked its blank line."""
        rest, self._buffer = self._buffer.rstrip(b"\r"), b""
        if rest:
            self._line(rest)
        if not self._pending:
            return []
        event = self._line(b"")
        return [] if event is None else [event]

    def _line(self, line: bytes) -> ServerSentEvent | None:
        if not line:
            # httpx_sse's rule, kept: any field set (the last event id persists, per the spec).
            if not (self._data or self._event or self._id or self._retry is not None):
                return None
            event = ServerSentEvent(
                self._event or "message", b"\n".join(self._data).decode("utf-8", "replace"), self._id, self._retry
            )
            self._event, self._data, self._retry, self._pending = "", [], None, False
            return event
        if line[0] == 0x3A:  # ":" starts a comment
            return None
        self._pending = True
        name, _, value = line.partition(b":")
        if value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            self._data.append(value)
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")
        elif name == b"id":
            if b"\0" not in value:
                self._id = value.decode("utf-8", "replace")
        elif name == b"retry":
            if value.isdigit():
                self._retry = int(value)
        return None
