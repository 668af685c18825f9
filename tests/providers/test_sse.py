"""The lean SSE parser: every recorded upstream stream, and variants of them with CRLF or CR line
ends, comments and multi-line data, parse to the events httpx_sse's decoder (the reader it
replaced) gives, however the bytes are split into network chunks."""

from __future__ import annotations

import itertools
import json
import random
import zlib
from pathlib import Path

import pytest
from httpx_sse._decoders import SSEDecoder, SSELineDecoder

from services.providers.sse import ServerSentEvent, SSEParser
from tests.providers.replay import FIXTURES

RECORDED = sorted(FIXTURES.rglob("*.sse"))

Event = tuple[str, str, str, int | None]


def _oracle(body: bytes) -> list[Event]:
    """httpx_sse's answer, with the blank line at the end the old reader appended to a clean body."""
    lines, decoder, events = SSELineDecoder(), SSEDecoder(), []
    text = body.decode("utf-8") + "\n\n"
    for line in [*lines.decode(text), *lines.flush()]:
        event = decoder.decode(line.rstrip("\n"))
        if event is not None:
            events.append((event.event, event.data, event.id, event.retry))
    return events


def _parse(pieces: list[bytes]) -> list[Event]:
    parser = SSEParser()
    found: list[ServerSentEvent] = []
    for piece in pieces:
        found += parser.feed(piece)
    found += parser.end()
    return [(e.event, e.data, e.id, e.retry) for e in found]


def _splits(body: bytes, seed: int) -> list[list[bytes]]:
    """The body whole, its first 600 bytes byte by byte (every kind of line end gets split), and
    the body cut at 40 random places."""
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(body)), min(40, len(body) - 1))) if len(body) > 1 else []
    bounds = [0, *cuts, len(body)]
    bytewise = [body[i : i + 1] for i in range(min(600, len(body)))] + [body[600:]]
    return [[body], bytewise, [body[a:b] for a, b in itertools.pairwise(bounds)]]


def _lf(body: bytes) -> bytes:
    return body.replace(b"\r\n", b"\n")


def _variants(body: bytes) -> dict[str, bytes]:
    lf = _lf(body)
    # Each JSON payload split after every comma onto its own data: line (still JSON once joined).
    multi_line = b"\n".join(
        b"data: " + line[6:].replace(b",", b",\ndata: ") if line.startswith(b"data: ") else line
        for line in lf.split(b"\n")
    )
    return {
        "as recorded": body,
        "LF": lf,
        "CRLF": lf.replace(b"\n", b"\r\n"),
        "CR": lf.replace(b"\n", b"\r"),
        "comments": b": keep-alive\n\n" + lf.replace(b"\n\n", b"\n: ping\n\n"),
        "multi-line data": multi_line,
        "no final blank line": lf.rstrip(b"\n"),
    }


@pytest.mark.parametrize("path", RECORDED, ids=lambda p: str(Path(p).relative_to(FIXTURES)))
def test_recorded_streams_parse_as_httpx_sse_parsed_them(path: Path) -> None:
    for name, body in _variants(path.read_bytes()).items():
        expected = _oracle(body)
        assert expected, name
        for seed, pieces in enumerate(_splits(body, zlib.crc32(name.encode()))):
            assert _parse(pieces) == expected, (name, seed)


def test_multi_line_data_is_joined_with_newlines_and_still_json() -> None:
    body = b'event: delta\ndata: {"a":\ndata:  1}\n\n'
    [(kind, data, _, _)] = _parse([body])
    assert (kind, data) == ("delta", '{"a":\n 1}')
    assert json.loads(data) == {"a": 1}


def test_a_crlf_split_between_chunks_is_one_line_end() -> None:
    events = _parse([b"data: 1\r", b"\n\r", b"\ndata: 2\r\n\r\n"])
    assert events == [("message", "1", "", None), ("message", "2", "", None)]


def test_comments_fields_and_a_byte_order_mark() -> None:
    body = b"\xef\xbb\xbf: hello\nid: 7\nretry: 250\nevent: ping\ndata\n\n:only a comment\n\nunknown: x\n\n"
    # The last event id persists, so the blank lines after it dispatch (data-less) events, as before.
    expected = [("ping", "", "7", 250), ("message", "", "7", None), ("message", "", "7", None)]
    assert _parse([body[:2], body[2:]]) == expected


def test_a_character_split_between_chunks_arrives_whole() -> None:
    body = "data: héllo ✓\n\n".encode()
    assert _parse([body[:8], body[8:15], body[15:]]) == [("message", "héllo ✓", "", None)]


def test_a_cut_stream_dispatches_nothing_half_received() -> None:
    parser = SSEParser()
    assert parser.feed(b'data: {"complete": 1}\n\ndata: {"cut') == [ServerSentEvent(data='{"complete": 1}')]
    # The caller stops here (the connection broke): the half event was never dispatched. Had the
    # body ended cleanly, end() would hand it over for the adapter to judge (it is not JSON).
    assert parser.end() == [ServerSentEvent(data='{"cut')]
