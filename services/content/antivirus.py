"""The antivirus check (SPEC §3, DATA step 2): a clamd client for asyncio.

This speaks clamd's INSTREAM command natively over an asyncio stream instead
of wrapping pyclamd in a thread: the scan is network I/O, so it needs no
thread, a timeout is an ordinary `asyncio.timeout`, and the message is
streamed in chunks straight from a memoryview, never copied whole.

Protocol (clamd(8), "INSTREAM"): the `z` prefix asks for NUL-terminated
replies; the client sends `zINSTREAM\\0`, then chunks each prefixed with
their length as a 4-byte big-endian integer, then a zero length. clamd
answers `stream: OK`, `stream: <signature> FOUND` or `<text> ERROR`.

Errors:

    ClamdUnavailable        clamd refused, timed out, or answered ERROR
                            (including "INSTREAM size limit exceeded");
                            the caller answers 451 4.3.0 (SPEC §2)
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from shared.settings import split_hostport

log = logging.getLogger(__name__)

DEFAULT_PORT = 3310
CHUNK_SIZE = 64 * 1024
_LENGTH = struct.Struct(">I")
_END_OF_STREAM = _LENGTH.pack(0)

# Writes one command to clamd.
_Sender = Callable[[asyncio.StreamWriter], Coroutine[Any, Any, None]]


class ClamdUnavailable(Exception):
    """clamd could not give a verdict; the message must not pass unscanned."""


@dataclass(frozen=True, slots=True)
class ScanResult:
    """clamd's verdict: `signature` names what it found, None when clean."""

    signature: str | None = None

    @property
    def infected(self) -> bool:
        return self.signature is not None


CLEAN = ScanResult()


@dataclass(frozen=True, slots=True)
class ClamdAddress:
    """Where clamd listens: a TCP host and port, or a unix socket path."""

    host: str = ""
    port: int = DEFAULT_PORT
    path: str = ""

    @classmethod
    def parse(cls, address: str) -> ClamdAddress:
        """Read `tcp://host:port` or `unix:///path` (SPEC §7,
        PERIMETER_CLAMD)."""
        parts = urlsplit(address)
        if parts.scheme == "unix" and parts.path:
            return cls(path=parts.path)
        if parts.scheme == "tcp" and parts.netloc:
            host, port = split_hostport(parts.netloc, DEFAULT_PORT)
            return cls(host=host, port=port)
        raise ValueError(f"{address!r} is not tcp://host:port or unix:///path")

    def __str__(self) -> str:
        return f"unix://{self.path}" if self.path else f"tcp://{self.host}:{self.port}"


class Clamd:
    """A clamd server; each call opens its own connection, so one instance
    serves concurrent scans."""

    def __init__(
        self, address: str, timeout: float = 30.0, chunk_size: int = CHUNK_SIZE
    ) -> None:
        self.address = ClamdAddress.parse(address)
        self.timeout = timeout
        self.chunk_size = chunk_size

    async def ping(self) -> None:
        """Check that clamd answers PONG; raise ClamdUnavailable if not."""
        reply = await self._exchange(self._send_ping)
        if reply != "PONG":
            raise ClamdUnavailable(f"clamd at {self.address} answered {reply!r}")

    async def scan(self, message: bytes | memoryview) -> ScanResult:
        """Scan the message with INSTREAM; raise ClamdUnavailable when clamd
        cannot give a verdict."""
        view = memoryview(message)

        async def send(writer: asyncio.StreamWriter) -> None:
            await self._send_stream(writer, view)

        reply = await self._exchange(send)
        result = _parse_scan_reply(reply, self.address)
        log.debug("clamd scan of %d bytes: %s", len(view), reply)
        return result

    async def _exchange(self, send: _Sender) -> str:
        try:
            async with asyncio.timeout(self.timeout):
                reader, writer = await self._connect()
                try:
                    return await _send_then_read(reader, writer, send)
                finally:
                    writer.close()
        except TimeoutError as exc:
            raise ClamdUnavailable(f"clamd at {self.address} timed out") from exc
        except OSError as exc:
            raise ClamdUnavailable(f"clamd at {self.address}: {exc}") from exc

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.address.path:
            return await asyncio.open_unix_connection(self.address.path)
        return await asyncio.open_connection(self.address.host, self.address.port)

    @staticmethod
    async def _send_ping(writer: asyncio.StreamWriter) -> None:
        writer.write(b"zPING\0")
        await writer.drain()

    async def _send_stream(
        self, writer: asyncio.StreamWriter, view: memoryview
    ) -> None:
        writer.write(b"zINSTREAM\0")
        for start in range(0, len(view), self.chunk_size):
            chunk = view[start : start + self.chunk_size]
            writer.write(_LENGTH.pack(len(chunk)))
            writer.write(chunk)
            await writer.drain()
        writer.write(_END_OF_STREAM)
        await writer.drain()


async def _send_then_read(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    send: _Sender,
) -> str:
    """Send while already reading the NUL-terminated reply.

    clamd answers before the stream ends when the stream goes over its
    StreamMaxLength, then closes; reading from the start catches that reply
    before the failed write that follows could hide it.
    """
    reading = asyncio.create_task(reader.readuntil(b"\0"))
    sending = asyncio.create_task(send(writer))
    try:
        await asyncio.wait((reading, sending), return_when=asyncio.FIRST_COMPLETED)
        if not reading.done():
            await _sent(sending)
        reply = await reading
    except asyncio.IncompleteReadError as exc:
        reply = exc.partial
    except asyncio.LimitOverrunError as exc:
        raise ClamdUnavailable("clamd reply is too long") from exc
    finally:
        await _settle(reading, sending)
    return reply.rstrip(b"\0").decode("utf-8", errors="replace").strip()


async def _sent(sending: asyncio.Task[None]) -> None:
    """Wait for the stream to be sent; a connection clamd closed is not an
    error yet, as its reply may be waiting."""
    try:
        await sending
    except ConnectionError:
        log.debug("clamd closed the connection while the stream was sent")


async def _settle(*tasks: asyncio.Task[Any]) -> None:
    """Cancel what is still running and collect every outcome."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _parse_scan_reply(reply: str, address: ClamdAddress) -> ScanResult:
    """Read `stream: OK`, `stream: <signature> FOUND` or `... ERROR`."""
    if not reply:
        raise ClamdUnavailable(f"clamd at {address} closed without a reply")
    if reply.endswith("ERROR"):
        raise ClamdUnavailable(f"clamd at {address}: {reply}")
    _, _, verdict = reply.partition(": ")
    if verdict == "OK":
        return CLEAN
    if verdict.endswith(" FOUND"):
        return ScanResult(signature=verdict.removesuffix(" FOUND"))
    raise ClamdUnavailable(f"clamd at {address} answered {reply!r}")
