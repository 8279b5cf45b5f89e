"""The DATA reader: end marker, transparency, line ends, size, pipelining."""

from __future__ import annotations

import asyncio

import pytest

from services.ingress.data import read_data

CASES = [
    (b".\r\n", b""),
    (b"a\r\n.\r\n", b"a\r\n"),
    (b"a\r\n..b\r\n.c\r\n.\r\n", b"a\r\n.b\r\nc\r\n"),
    (b"a\n.\r\nb\r\n.\r\n", b"a\r\n.\r\nb\r\n"),
    (b"a\n.\nb\r\n.\r\n", b"a\r\n.\r\nb\r\n"),
    (b"a\r.\rb\r\n.\r\n", b"a\r\n.\r\nb\r\n"),
    (b"\r\n.\r\n", b"\r\n"),
]


async def _read(raw: bytes, limit: int = 1000, chunks: int = 1):
    reader = asyncio.StreamReader()
    step = max(1, len(raw) // chunks)
    for start in range(0, len(raw), step):
        reader.feed_data(raw[start : start + step])
    data = await read_data(reader, limit)
    reader.feed_eof()
    return data, await reader.read()


@pytest.mark.parametrize(
    ("raw", "content"),
    CASES,
    ids=[
        "empty",
        "one-line",
        "stuffed",
        "lf-dot-crlf",
        "lf-dot-lf",
        "cr-dot-cr",
        "blank",
    ],
)
async def test_the_data_ends_only_at_crlf_dot_crlf(raw: bytes, content: bytes) -> None:
    data, rest = await _read(raw + b"QUIT\r\n")

    assert data.content == content and not data.too_big
    assert rest == b"QUIT\r\n"


async def test_an_end_marker_split_across_reads_is_found() -> None:
    raw = b"x" * 5000 + b"\r\n.\r\nRSET\r\n"
    data, rest = await _read(raw, limit=10_000, chunks=1000)

    assert data.content == b"x" * 5000 + b"\r\n"
    assert rest == b"RSET\r\n"


async def test_data_over_the_limit_is_read_to_the_end_and_thrown_away() -> None:
    data, rest = await _read(b"y" * 50_000 + b"\r\n.\r\nQUIT\r\n", limit=1000, chunks=7)

    assert data.too_big and data.content == b""
    assert rest == b"QUIT\r\n"
