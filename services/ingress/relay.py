"""SMTP connections to the routes, kept open between messages.

Opening a connection and saying EHLO costs two round trips and a good part
of a millisecond of CPU; a gateway relays thousands of messages a minute to
the same few routes, so connections are pooled per route and reused.

On an open connection a transaction is MAIL, a RCPT per recipient, DATA,
then the message: at least four round trips when each command waits for
its reply. A route that offers PIPELINING (RFC 2920) takes MAIL, the RCPTs
and DATA in one write and answers them together, so a message costs two
round trips, the envelope and the content. That is why this is a small
client of our own rather than aiosmtplib, which waits for every reply.

The message is written as stored, trace headers then body, without joining
them; dot-stuffing copies the body only when it has a line starting with a
dot. A gateway's memory goes on message bodies.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections import defaultdict
from contextlib import suppress
from dataclasses import dataclass

log = logging.getLogger(__name__)

Route = tuple[str, int]

_IDLE_SECONDS = 30.0
_PER_ROUTE = 16
# The longest reply line we read: far more than any real route sends (RFC
# 5321 §4.5.3.1.5 allows 512 octets), little enough to bound the buffer.
_LINE_LIMIT = 64 * 1024
# The most lines one reply may have; an EHLO reply has a dozen or two.
_REPLY_LINES = 100
# The message is written in slices of this size; see _Connection.write.
_SLICE = 1024 * 1024
# Messages up to this size are joined into one write; see _Connection.write.
_JOIN_BYTES = 64 * 1024
# How long close() waits for a route to answer QUIT.
_QUIT_SECONDS = 5.0


@dataclass(slots=True)
class RecipientResult:
    code: int
    message: str

    @property
    def delivered(self) -> bool:
        return 200 <= self.code < 300

    @property
    def permanent(self) -> bool:
        return self.code >= 500


class RouteError(Exception):
    """The route refused the whole message; `code` says how."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code} {message}")
        self.code = code
        self.message = message

    @property
    def permanent(self) -> bool:
        return self.code >= 500


class RouteUnreachable(RouteError):
    """No SMTP session could be opened with the route: another host of the
    same domain may still take the message."""


@dataclass(slots=True, frozen=True)
class _Reply:
    code: int
    text: str

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 300


@dataclass(slots=True, frozen=True)
class _Message:
    sender: str
    recipients: list[str]
    prepend: bytes
    body: bytes


class _Broken(Exception):
    """The connection is of no more use: it timed out, or the route said
    something that is not SMTP. The message will be tried again (451)."""

    def __init__(self, text: str, code: int = 451) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


class _Closed(_Broken):
    """The route closed the connection, or said it would (421, RFC 5321
    §3.8)."""


class _Stale(Exception):
    """A pooled connection the route had closed while it sat idle."""


class RelayPool:
    """Per-route pools of open SMTP connections."""

    def __init__(self, hostname: str, timeout: float = 60.0) -> None:
        self.hostname = hostname
        self.timeout = timeout
        self._idle: dict[Route, list[tuple[float, _Connection]]] = defaultdict(list)
        self._limits: dict[Route, asyncio.Semaphore] = defaultdict(
            lambda: asyncio.Semaphore(_PER_ROUTE)
        )
        self._tls: ssl.SSLContext | None = None

    async def send(
        self,
        route: Route,
        sender: str,
        recipients: list[str],
        message: bytes,
        prepend: bytes = b"",
    ) -> dict[str, RecipientResult]:
        """Relay `prepend` then `message` (CRLF line ends, not dot-stuffed);
        per-recipient results, or RouteError."""
        envelope = _Message(sender, recipients, prepend, message)
        async with self._limits[route]:
            conn = self._reuse(route)
            if conn is not None:
                try:
                    return await self._send_on(route, conn, envelope)
                except _Stale:
                    log.debug("pooled connection to %s:%d had closed", *route)
            conn = await self._connect(route)
            return await self._send_on(route, conn, envelope)

    async def close(self) -> None:
        """Say QUIT on the idle connections and close them."""
        idle = [conn for conns in self._idle.values() for _, conn in conns]
        self._idle.clear()
        await asyncio.gather(*(conn.quit() for conn in idle))

    async def _send_on(
        self, route: Route, conn: _Connection, message: _Message
    ) -> dict[str, RecipientResult]:
        try:
            results = await _transaction(conn, message)
        except _Broken as exc:
            conn.close()
            # Closed before the route answered anything: it had dropped
            # the connection while idle, and has nothing of this message.
            if isinstance(exc, _Closed) and conn.reused and not conn.heard:
                raise _Stale from exc
            raise RouteError(exc.code, exc.text) from exc
        except BaseException:
            # A refusal of the whole message, or a cancellation, leaves the
            # session in a state that depends on where it stopped and,
            # pipelined, on what the route made of the commands after it.
            # Refusals are rare; a new connection is simpler than RSET.
            conn.close()
            raise
        if conn.usable:
            self._idle[route].append((time.monotonic(), conn))
        else:
            conn.close()
        return results

    def _reuse(self, route: Route) -> _Connection | None:
        """The most recently used connection, if it is still open and has
        been idle less than _IDLE_SECONDS; older ones are closed."""
        idle = self._idle[route]
        while idle:
            since, conn = idle.pop()
            if conn.usable and time.monotonic() - since < _IDLE_SECONDS:
                conn.reused = True
                return conn
            conn.close()
        return None

    async def _connect(self, route: Route) -> _Connection:
        host, port = route
        try:
            async with asyncio.timeout(self.timeout):
                reader, writer = await asyncio.open_connection(
                    host, port, limit=_LINE_LIMIT
                )
        except OSError as exc:  # TimeoutError is one too
            detail = str(exc) or type(exc).__name__
            text = f"cannot connect to {host}:{port}: {detail}"
            raise RouteUnreachable(451, text) from exc
        conn = _Connection(reader, writer, self.timeout)
        try:
            await self._open_session(conn, host)
        except _Broken as exc:
            conn.close()
            text = f"cannot connect to {host}:{port}: {exc}"
            raise RouteUnreachable(451, text) from exc
        except BaseException:
            conn.close()
            raise
        return conn

    async def _open_session(self, conn: _Connection, host: str) -> None:
        """The greeting, EHLO, and STARTTLS when the route offers it."""
        greeting = await conn.reply()
        if greeting.code != 220:
            raise _Broken(f"{greeting.code} {greeting.text}")
        await self._hello(conn)
        if "STARTTLS" not in conn.extensions:
            return
        reply = await conn.command(b"STARTTLS\r\n")
        if reply.code != 220:
            # TLS is opportunistic: a route that offers it and then cannot
            # start it gets the message in the clear, like one that does
            # not offer it (RFC 3207 §4 leaves this to the client).
            return
        await conn.start_tls(self._tls_context(), host)
        # Everything learnt before TLS is forgotten (RFC 3207 §4.2).
        await self._hello(conn)

    async def _hello(self, conn: _Connection) -> None:
        """EHLO; HELO, without extensions, when the route refuses EHLO
        (RFC 5321 §4.1.4)."""
        name = self.hostname.encode()
        reply = await conn.command(b"EHLO %s\r\n" % name)
        conn.extensions = _extensions(reply.text) if reply.ok else {}
        if reply.code >= 500:
            reply = await conn.command(b"HELO %s\r\n" % name)
        if not reply.ok:
            raise _Broken(f"{reply.code} {reply.text}")

    def _tls_context(self) -> ssl.SSLContext:
        # Routes are named by the operator and often carry self-signed or
        # internal certificates, so TLS here guards against eavesdropping,
        # not impersonation: no verification.
        if self._tls is None:
            self._tls = ssl.create_default_context()
            self._tls.check_hostname = False
            self._tls.verify_mode = ssl.CERT_NONE
        return self._tls


class _Connection:
    """One SMTP session with a route; between transactions it is in
    command mode, ready for MAIL."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.timeout = timeout
        self.extensions: dict[str, str] = {}
        # Taken from the pool: the route may have closed it meanwhile.
        self.reused = False
        # The route has answered in the current transaction.
        self.heard = False

    @property
    def usable(self) -> bool:
        return not (self.writer.is_closing() or self.reader.at_eof())

    async def command(self, line: bytes) -> _Reply:
        await self.write(line)
        return await self.reply()

    async def write(self, *pieces: bytes) -> None:
        """Write the pieces as they are, without joining them.

        StreamWriter.writelines would be the obvious call, but on Python
        3.11 the socket transport's writelines joins its arguments into one
        new bytes object, a copy of the whole message. write() sends from
        the object it is given and keeps only what the socket did not take;
        writing in slices and draining between them bounds that copy, and
        the memory it takes, to a slice. A small message is joined and
        written at once: one send, and one wake-up of the route, not three.
        """
        if sum(map(len, pieces)) <= _JOIN_BYTES:
            pieces = (b"".join(pieces),)
        try:
            for piece in pieces:
                view = memoryview(piece)
                for start in range(0, len(view), _SLICE):
                    self.writer.write(view[start : start + _SLICE])
                    async with asyncio.timeout(self.timeout):
                        await self.writer.drain()
        except TimeoutError as exc:
            raise _Broken(f"the route took nothing for {self.timeout:g}s") from exc
        except OSError as exc:
            raise _Closed(f"the connection to the route failed: {exc}") from exc

    async def reply(self) -> _Reply:
        """The next reply, all its lines, text joined with newlines."""
        try:
            async with asyncio.timeout(self.timeout):
                reply = await self._read_reply()
        except TimeoutError as exc:
            raise _Broken(f"no reply from the route in {self.timeout:g}s") from exc
        if reply.code == 421:
            raise _Closed(reply.text, code=421)
        self.heard = True
        return reply

    async def _read_reply(self) -> _Reply:
        texts: list[str] = []
        while len(texts) < _REPLY_LINES:
            code, last, text = _parse_line(await self._readline())
            texts.append(text)
            if last:
                # The code is the last line's; RFC 5321 §4.2.1 has every
                # line carry the same one, and a mismatch changes nothing.
                return _Reply(code, "\n".join(texts))
        raise _Broken(f"a reply of more than {_REPLY_LINES} lines from the route")

    async def _readline(self) -> bytes:
        try:
            return await self.reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:
            raise _Closed("the route closed the connection") from exc
        except asyncio.LimitOverrunError as exc:
            raise _Broken(f"a reply line of more than {_LINE_LIMIT} bytes") from exc
        except OSError as exc:
            raise _Closed(f"the connection to the route failed: {exc}") from exc

    async def start_tls(self, context: ssl.SSLContext, host: str) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                await self.writer.start_tls(context, server_hostname=host)
        except TimeoutError as exc:
            raise _Broken(f"no TLS handshake in {self.timeout:g}s") from exc
        except OSError as exc:  # ssl.SSLError is one too
            raise _Broken(f"TLS failed: {exc}") from exc

    async def quit(self) -> None:
        """QUIT (RFC 5321 §4.1.1.10), waiting a little for the answer, and
        close."""
        with suppress(_Broken, TimeoutError):
            async with asyncio.timeout(min(self.timeout, _QUIT_SECONDS)):
                await self.command(b"QUIT\r\n")
        self.close()

    def close(self) -> None:
        self.writer.close()


async def _transaction(
    conn: _Connection, message: _Message
) -> dict[str, RecipientResult]:
    """One message on an open connection: MAIL, RCPTs, DATA, content."""
    conn.heard = False
    commands = _envelope(conn.extensions, message)
    data: _Reply | None = None
    if "PIPELINING" in conn.extensions:
        mail, rcpts, data = await _pipelined(conn, commands)
    else:
        mail, rcpts = await _one_by_one(conn, commands)
    if not mail.ok:
        raise RouteError(mail.code, mail.text)
    results = {
        rcpt: RecipientResult(reply.code, reply.text)
        for rcpt, reply in zip(message.recipients, rcpts, strict=True)
    }
    if not any(result.delivered for result in results.values()):
        await _abandon(conn, data)
        return results
    if data is None:
        data = await conn.command(b"DATA\r\n")
    if data.code != 354:
        raise RouteError(data.code, data.text)
    await conn.write(*_content(message.prepend, message.body))
    done = await conn.reply()
    if not done.ok:
        raise RouteError(done.code, done.text)
    return {
        rcpt: RecipientResult(done.code, done.text) if result.delivered else result
        for rcpt, result in results.items()
    }


async def _pipelined(
    conn: _Connection, commands: list[bytes]
) -> tuple[_Reply, list[_Reply], _Reply]:
    """MAIL, the RCPTs and DATA in one write, then their replies in order.
    DATA must end the group (RFC 2920 §3.1): what follows depends on it."""
    await conn.write(b"".join([*commands, b"DATA\r\n"]))
    replies = [await conn.reply() for _ in range(len(commands) + 1)]
    return replies[0], replies[1:-1], replies[-1]


async def _one_by_one(
    conn: _Connection, commands: list[bytes]
) -> tuple[_Reply, list[_Reply]]:
    """MAIL, then the RCPTs if it was accepted, each awaiting its reply."""
    mail = await conn.command(commands[0])
    if not mail.ok:
        return mail, []
    return mail, [await conn.command(rcpt) for rcpt in commands[1:]]


async def _abandon(conn: _Connection, data: _Reply | None) -> None:
    """End a transaction the route accepted no recipient for, leaving the
    connection ready for the next one, or closed.

    Pipelined, DATA went out with the RCPTs. The route should have refused
    it (503 or 554, RFC 5321 §3.3), and RSET then ends the transaction. A
    route that answered 354 anyway is waiting for content: following RFC
    2920 §3.1 it gets an empty message, a lone dot, which with no recipient
    is delivered to no one, and its reply to that ends the transaction.
    """
    in_data = data is not None and data.code == 354
    try:
        reply = await conn.command(b".\r\n" if in_data else b"RSET\r\n")
    except _Broken:
        # The recipients' answers stand; only the connection is lost.
        conn.close()
        return
    # Whatever the answer to the dot, the transaction is over; a route that
    # refuses RSET (RFC 5321 §4.1.1.5: it must not) is not trusted again.
    if not (in_data or reply.ok):
        conn.close()


def _envelope(extensions: dict[str, str], message: _Message) -> list[bytes]:
    """MAIL FROM with the parameters the route takes, then a RCPT TO per
    recipient. The null sender is MAIL FROM:<>."""
    addresses = [message.sender, *message.recipients]
    if any("\r" in a or "\n" in a for a in addresses):
        # No address holds a line end (RFC 5321 §4.1.2); written out, one
        # would smuggle in commands of its own.
        raise RouteError(553, "an address holds a line end")
    params = b""
    if not all(a.isascii() for a in addresses):
        if "SMTPUTF8" not in extensions:
            # Only a route that takes SMTPUTF8 (RFC 6531) can be given
            # these addresses, and trying later will not change the route:
            # refused for good, as a mailbox name not allowed (553).
            raise RouteError(553, "the route does not accept SMTPUTF8 addresses")
        params += b" SMTPUTF8"
    # bytes.isascii runs in C and copies nothing.
    if "8BITMIME" in extensions and not (
        message.prepend.isascii() and message.body.isascii()
    ):
        params += b" BODY=8BITMIME"  # RFC 6152
    if "SIZE" in extensions:
        params += b" SIZE=%d" % (len(message.prepend) + len(message.body))  # RFC 1870
    mail = b"MAIL FROM:<%s>%s\r\n" % (message.sender.encode(), params)
    return [mail, *(b"RCPT TO:<%s>\r\n" % r.encode() for r in message.recipients)]


def _content(prepend: bytes, body: bytes) -> list[bytes]:
    """What follows 354: the message, dot-stuffed, and the end-of-data line
    (RFC 5321 §4.1.1.4). `prepend` is whole header lines."""
    pieces = _stuffed(prepend, at_line_start=True)
    pieces += _stuffed(body, at_line_start=not prepend or prepend.endswith(b"\r\n"))
    last = body or prepend
    if last and not last.endswith(b"\r\n"):
        pieces.append(b"\r\n")
    pieces.append(b".\r\n")
    return pieces


def _stuffed(chunk: bytes, at_line_start: bool) -> list[bytes]:
    """A dot before every line that starts with one (RFC 5321 §4.5.2).
    Lines end in CRLF: the ingress wrote every line end so. When nothing
    is replaced, bytes.replace returns the object it was called on, so a
    chunk without such lines is not copied."""
    escaped = chunk.replace(b"\r\n.", b"\r\n..")
    if at_line_start and chunk.startswith(b"."):
        return [b".", escaped]
    return [escaped]


def _parse_line(line: bytes) -> tuple[int, bool, str]:
    """(code, whether it is the reply's last line, text) of a reply line:
    three digits, then "-" if more lines follow, else a space or nothing
    (RFC 5321 §4.2)."""
    line = line.rstrip(b"\r\n")
    code, separator, text = line[:3], line[3:4], line[4:]
    if not (
        len(code) == 3
        and code.isdigit()
        and code[:1] in b"2345"
        and separator in (b"", b" ", b"-")
    ):
        raise _Broken(f"a malformed reply from the route: {line[:80]!r}")
    return int(code), separator != b"-", text.decode("utf-8", "replace")


def _extensions(text: str) -> dict[str, str]:
    """The EHLO keywords, upper-cased, and their parameters; the first
    line is the route's name (RFC 5321 §4.1.1.1)."""
    found: dict[str, str] = {}
    for line in text.split("\n")[1:]:
        keyword, _, params = line.strip().partition(" ")
        found[keyword.upper()] = params
    return found
