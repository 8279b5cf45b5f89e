"""Reading the DATA phase off the wire (RFC 5321 §4.1.1.4, §4.5.2).

aiosmtpd reads DATA a line at a time; this reads whatever has arrived and
looks for the end marker in bulk, which costs a fraction of the CPU.

Smuggling (SPEC §4): only <CRLF>.<CRLF> ends the data. <LF>.<LF>,
<LF>.<CRLF> and <CR>.<CR> are content. Once the data has ended, a bare LF
or CR is taken as a line end and written as CRLF, so what we relay (dot
stuffed again by the relaying client) can only be read as one message.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass

END = b"\r\n.\r\n"
_CHUNK = 1 << 20
_LONE_LINE_END = re.compile(rb"\r\n|\r|\n")


@dataclass(slots=True)
class Data:
    """The message as received: unstuffed, CRLF line ends; `too_big` when
    it passed the limit, in which case the content was thrown away."""

    content: bytes
    too_big: bool = False


async def read_data(reader: asyncio.StreamReader, limit: int) -> Data:
    """Read up to and including the end marker, leaving what follows it
    (pipelined commands) in the reader."""
    # The CRLF that ended the DATA line is the first half of the marker
    # when the message is empty; keep it in front and drop it at the end.
    buf = bytearray(b"\r\n")
    scan = 0
    too_big = False
    while True:
        chunk = await reader.read(_CHUNK)
        if not chunk:
            raise ConnectionResetError("the client went away during DATA")
        buf += chunk
        end = buf.find(END, scan)
        if end >= 0:
            rest = bytes(buf[end + len(END) :])
            del buf[end + 2 :]
            break
        scan = max(0, len(buf) - len(END) + 1)
        if len(buf) - 2 > limit:
            too_big = True
            del buf[2 : max(2, len(buf) - len(END))]
            scan = 0
    # `read` returned everything buffered, so what follows the marker goes
    # back in front of anything still to come.
    if rest and not reader.at_eof():
        reader.feed_data(rest)
    if too_big or len(buf) - 2 > limit:
        return Data(b"", too_big=True)
    return Data(normalise(buf))


def normalise(buf: bytearray) -> bytes:
    """Undo dot stuffing, then make every line end CRLF.

    `buf` starts with the CRLF of the DATA line, so each line, the first
    included, follows a CRLF.
    """
    if b"\r\n." in buf:
        # RFC 5321 §4.5.2: a leading period is removed from every line.
        buf = buf.replace(b"\r\n.", b"\r\n")
    content = bytes(memoryview(buf)[2:])
    lines = content.count(b"\n")
    if lines == content.count(b"\r\n") and lines == content.count(b"\r"):
        return content
    return _LONE_LINE_END.sub(b"\r\n", content)
