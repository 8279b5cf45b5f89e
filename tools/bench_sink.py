"""Sinks for the benchmark, each run as its own process.

`fast`: the route behind the gateway. A minimal SMTP server written as an
asyncio protocol: it answers 220/250/354/250, takes PIPELINING and many
transactions per connection, and counts messages by finding the
`<CRLF>.<CRLF>` that ends DATA, without parsing anything. It costs the
machine as little as a route can, so the gateway's CPU stands out.

`aiosmtpd`: the bare baseline of issue 2, an aiosmtpd server whose handler
answers 250 to every message and does nothing else.

Both print `{"ready": {"port": N}}`, answer `count` on stdin with the
number of messages and the monotonic time of the first and the last one,
and exit when stdin closes.

    python -m tools.bench_sink fast|aiosmtpd
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass

from aiosmtpd.smtp import SMTP, Envelope, Session

from tools.bench_proc import say, stdin_lines

_END = b"\r\n.\r\n"


@dataclass
class Tally:
    messages: int = 0
    first_at: float = 0.0
    last_at: float = 0.0

    def count(self) -> None:
        now = time.monotonic()
        if not self.messages:
            self.first_at = now
        self.messages += 1
        self.last_at = now


_EHLO = (
    b"250-sink.bench\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 SIZE\r\n"
)
_REPLIES = {
    b"HELO": b"250 sink.bench\r\n",
    b"MAIL": b"250 2.1.0 Ok\r\n",
    b"RCPT": b"250 2.1.5 Ok\r\n",
    b"RSET": b"250 2.0.0 Ok\r\n",
    b"NOOP": b"250 2.0.0 Ok\r\n",
    b"VRFY": b"252 2.0.0 Send some mail\r\n",
    b"EHLO": _EHLO,
}


class FastSession(asyncio.Protocol):
    """One connection to the fast sink."""

    def __init__(self, tally: Tally) -> None:
        self.tally = tally
        self.buffer = bytearray()
        self.in_data = False
        self.scanned = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(b"220 sink.bench ESMTP\r\n")

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.buffer and not self.transport.is_closing():
            done = self._data() if self.in_data else self._command()
            if not done:
                return

    def _data(self) -> bool:
        """Look for the end of the message; False when more must come."""
        end = self.buffer.find(_END, self.scanned)
        if end < 0:
            self.scanned = max(0, len(self.buffer) - len(_END))
            return False
        del self.buffer[: end + len(_END)]
        self.in_data = False
        self.tally.count()
        self.transport.write(b"250 2.0.0 Ok: queued\r\n")
        return True

    def _command(self) -> bool:
        """Answer one command line; False when no whole line is there."""
        end = self.buffer.find(b"\r\n")
        if end < 0:
            return False
        verb = bytes(self.buffer[:4]).upper()
        del self.buffer[: end + 2]
        if verb == b"DATA":
            self._begin_data()
        elif verb == b"QUIT":
            self.transport.write(b"221 2.0.0 Bye\r\n")
            self.transport.close()
        else:
            self.transport.write(_REPLIES.get(verb, b"500 5.5.2 Unknown\r\n"))
        return True

    def _begin_data(self) -> None:
        # The CRLF before DATA's content lets an empty message end too.
        self.buffer[:0] = b"\r\n"
        self.in_data = True
        self.scanned = 0
        self.transport.write(b"354 End data with <CR><LF>.<CR><LF>\r\n")


class BareHandler:
    """aiosmtpd handler that takes every message and does nothing."""

    def __init__(self, tally: Tally) -> None:
        self.tally = tally

    async def handle_DATA(
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        self.tally.count()
        return "250 2.0.0 Ok: queued"


async def serve(kind: str) -> None:
    tally = Tally()
    loop = asyncio.get_running_loop()
    if kind == "fast":
        server = await loop.create_server(lambda: FastSession(tally), "127.0.0.1", 0)
    else:
        handler = BareHandler(tally)
        server = await loop.create_server(
            lambda: SMTP(handler, hostname="bare.bench"), "127.0.0.1", 0
        )
    say("ready", {"port": server.sockets[0].getsockname()[1]})
    commands = await stdin_lines()
    while await commands.readline():
        say("count", vars(tally))
    server.close()


def main() -> None:
    kind = sys.argv[1] if len(sys.argv) > 1 else "fast"
    if kind not in ("fast", "aiosmtpd"):
        raise SystemExit("usage: python -m tools.bench_sink fast|aiosmtpd")
    try:
        asyncio.run(serve(kind))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
