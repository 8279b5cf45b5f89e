"""A lean DNS stub client for the lookups the checks make.

A cold RCPT asks about ten questions (six DNSBL zones, PTR and its forward
confirmation, MX, SPF), and dnspython's general resolver, which builds and
parses every message as objects, spent more of the reputation service's CPU
on them than the rules themselves. This module asks the configured
recursive nameservers (RFC 1035 §4) for the record types the checks read,
and reads the answers straight from the bytes:

- a query goes over UDP from a socket of its own, connected to the server,
  so the kernel picks a random source port and drops datagrams from anyone
  else; its id comes from the operating system's random source. A reply
  whose id or question does not match is ignored, not taken (RFC 5452).
- without EDNS a UDP answer holds 512 octets; a truncated one is asked
  again over TCP (RFC 7766 §5), which is how long TXT records arrive.
- a server that answers SERVFAIL, REFUSED or something unreadable is not
  asked again for that question; one that does not answer is asked again
  until the lifetime is spent, the servers in turn.

It returns what was said (`Reply`) or raises `Timeout`/`Unanswered`;
`shared.dns` turns that into an `Answer` and caches it.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import struct
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

QTYPES = {
    "A": 1,
    "NS": 2,
    "CNAME": 5,
    "PTR": 12,
    "MX": 15,
    "TXT": 16,
    "AAAA": 28,
    "SPF": 99,
}
_SOA = 6
_CLASS_IN = 1
NOERROR = 0
NXDOMAIN = 3

_HEADER = struct.Struct("!HHHHHH")
_RR = struct.Struct("!HHIH")
_QUESTION_TAIL = struct.Struct("!HH")
_RD = 0x0100  # recursion desired
_QR = 0x8000
_TC = 0x0200
# One attempt at one server waits this long (dnspython's default too).
_ATTEMPT_SECONDS = 2.0
_MAX_CNAMES = 16
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_-]{1,63}(?:\.[A-Za-z0-9_-]{1,63})*\.?")
_PLAIN_LABEL = re.compile(rb"[A-Za-z0-9_-]*")
_ESCAPED = frozenset(b'"().;\\@$')


class WireError(Exception):
    """A reply that cannot be read."""


class Timeout(Exception):
    """No server answered within the lifetime."""


class Unanswered(Exception):
    """Every server refused or failed the question (SERVFAIL, REFUSED, ...)."""


@dataclass(frozen=True, slots=True)
class Record:
    owner: str  # lower case, no final dot
    rtype: int
    ttl: int
    text: str  # as shared.dns documents for each type
    sort_key: tuple[int, tuple[bytes, ...]] = (0, ())


@dataclass(slots=True)
class Reply:
    rcode: int
    answers: list[Record] = field(default_factory=list)
    soa: tuple[int, int] | None = None  # (ttl, minimum) of the authority SOA


def encode_name(name: str) -> bytes | None:
    """The wire form of a plain ASCII host name; None for any other text,
    which the caller hands to a full name parser."""
    if not _PLAIN_NAME.fullmatch(name):
        return None
    labels = name.rstrip(".").split(".")
    wire = b"".join(bytes((len(label),)) + label.encode() for label in labels)
    return wire + b"\0" if len(wire) < 255 else None


def query(qid: int, qname: bytes, qtype: int) -> bytes:
    header = _HEADER.pack(qid, _RD, 1, 0, 0, 0)
    return header + qname + _QUESTION_TAIL.pack(qtype, _CLASS_IN)


class Ids:
    """Query ids from os.urandom, read 256 at a time; threads may share."""

    def __init__(self) -> None:
        self._pool = memoryview(b"")
        self._lock = threading.Lock()

    def next(self) -> int:
        with self._lock:
            if len(self._pool) < 2:
                self._pool = memoryview(os.urandom(512))
            value = int.from_bytes(self._pool[:2], "big")
            self._pool = self._pool[2:]
        return value


class StubClient:
    def __init__(self, servers: Sequence[tuple[str, int]]) -> None:
        self.servers = list(servers)
        self._ids = Ids()

    async def ask(self, qname: bytes, qtype: int, lifetime: float) -> Reply:
        """The first usable reply to (qname, qtype) from the servers."""
        turns = _Turns(self.servers, lifetime)
        while True:
            server, timeout = turns.next()
            try:
                reply = await self._attempt(server, qname, qtype, timeout)
            except TimeoutError:
                continue
            except (OSError, WireError):
                reply = None
            if turns.usable(server, reply):
                assert reply is not None
                return reply

    def ask_sync(self, qname: bytes, qtype: int, lifetime: float) -> Reply:
        """The blocking twin of `ask`, for code that runs in a thread."""
        turns = _Turns(self.servers, lifetime)
        while True:
            server, timeout = turns.next()
            try:
                reply = self._attempt_sync(server, qname, qtype, timeout)
            except TimeoutError:
                continue
            except (OSError, WireError):
                reply = None
            if turns.usable(server, reply):
                assert reply is not None
                return reply

    def _attempt_sync(
        self, server: tuple[str, int], qname: bytes, qtype: int, timeout: float
    ) -> Reply:
        qid = self._ids.next()
        message = query(qid, qname, qtype)
        deadline = time.monotonic() + timeout
        raw = _udp_sync(server, message, qid, deadline)
        try:
            return parse(raw, qid, qname, qtype)
        except _Truncated:
            return parse(_tcp_sync(server, message, deadline), qid, qname, qtype)

    async def _attempt(
        self, server: tuple[str, int], qname: bytes, qtype: int, timeout: float
    ) -> Reply:
        qid = self._ids.next()
        message = query(qid, qname, qtype)
        async with asyncio.timeout(timeout):
            raw = await _udp(server, message, qid)
            try:
                return parse(raw, qid, qname, qtype)
            except _Truncated:
                raw = await _tcp(server, message)
                return parse(raw, qid, qname, qtype)


class _Turns:
    """The servers in turn until the lifetime is spent. A server that
    fails a question (SERVFAIL, REFUSED, an unreadable reply) is not asked
    it again; one that does not answer is, in its turn."""

    def __init__(self, servers: Sequence[tuple[str, int]], lifetime: float) -> None:
        self.servers = list(servers)
        self.deadline = time.monotonic() + lifetime
        self.turn = 0

    def next(self) -> tuple[tuple[str, int], float]:
        if not self.servers:
            raise Unanswered
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise Timeout
        server = self.servers[self.turn % len(self.servers)]
        self.turn += 1
        return server, min(remaining, _ATTEMPT_SECONDS)

    def usable(self, server: tuple[str, int], reply: Reply | None) -> bool:
        """Whether `reply` answers the question; drops the server if not."""
        if reply is not None and reply.rcode in (NOERROR, NXDOMAIN):
            return True
        self.servers.remove(server)
        return False


class _Truncated(WireError):
    """Over UDP: ask again over TCP. Over TCP: a server that cannot answer."""


async def _udp(server: tuple[str, int], message: bytes, qid: int) -> bytes:
    loop = asyncio.get_running_loop()
    host, port = server
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        sock.connect((host, port))
        await loop.sock_sendall(sock, message)
        while True:
            raw = await loop.sock_recv(sock, 65535)
            # Another query's late reply, or a forgery: keep waiting.
            if len(raw) >= 2 and int.from_bytes(raw[:2], "big") == qid:
                return raw


def _udp_sync(
    server: tuple[str, int], message: bytes, qid: int, deadline: float
) -> bytes:
    family = socket.AF_INET6 if ":" in server[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.connect(server)
        sock.sendall(message)
        while True:
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            raw = sock.recv(65535)
            if len(raw) >= 2 and int.from_bytes(raw[:2], "big") == qid:
                return raw


def _tcp_sync(server: tuple[str, int], message: bytes, deadline: float) -> bytes:
    timeout = max(deadline - time.monotonic(), 0.001)
    with socket.create_connection(server, timeout=timeout) as sock:
        sock.sendall(len(message).to_bytes(2, "big") + message)
        stream = sock.makefile("rb")
        length = int.from_bytes(stream.read(2), "big")
        raw = stream.read(length)
        if len(raw) != length:
            raise WireError("the server closed the TCP connection")
        return raw


async def _tcp(server: tuple[str, int], message: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(*server)
    try:
        writer.write(len(message).to_bytes(2, "big") + message)
        length = int.from_bytes(await reader.readexactly(2), "big")
        return await reader.readexactly(length)
    except asyncio.IncompleteReadError as exc:
        raise WireError("the server closed the TCP connection") from exc
    finally:
        writer.close()


def parse(raw: bytes, qid: int, qname: bytes, qtype: int) -> Reply:
    """Read a reply to our question: its rcode, the answer section, and
    the SOA of the authority section (for negative caching)."""
    try:
        return _parse(raw, qid, qname, qtype)
    except (IndexError, struct.error, UnicodeDecodeError) as exc:
        raise WireError(f"unreadable reply: {exc}") from exc


def _parse(raw: bytes, qid: int, qname: bytes, qtype: int) -> Reply:
    rid, flags, questions, answers, authority, _ = _HEADER.unpack_from(raw)
    if rid != qid or not flags & _QR:
        raise WireError("not a reply to this query")
    if flags & _TC:
        # Some servers send a truncated reply with no question at all.
        raise _Truncated
    if questions != 1:
        raise WireError("not a reply to this question")
    # The question is the first name of the message, so never compressed;
    # lower() folds only letters (a label length is at most 63, below "A").
    question = qname + _QUESTION_TAIL.pack(qtype, _CLASS_IN)
    offset = 12 + len(question)
    if raw[12:offset].lower() != question.lower():
        raise WireError("the reply is to another question")
    reply = Reply(flags & 0x000F)
    for _ in range(answers):
        record, offset = _record(raw, offset)
        if record is not None:
            reply.answers.append(record)
    for _ in range(authority):
        owner, offset = read_name(raw, offset)
        rtype, rclass, ttl, length = _RR.unpack_from(raw, offset)
        offset += 10
        if rtype == _SOA and reply.soa is None:
            _, at = read_name(raw, offset)
            _, at = read_name(raw, at)
            minimum = struct.unpack_from("!I", raw, at + 16)[0]
            reply.soa = (ttl, minimum)
        offset += length
    return reply


def _record(raw: bytes, offset: int) -> tuple[Record | None, int]:
    owner, offset = read_name(raw, offset)
    rtype, rclass, ttl, length = _RR.unpack_from(raw, offset)
    offset += 10
    end = offset + length
    if end > len(raw):
        raise WireError("record runs past the reply")
    if rclass != _CLASS_IN:
        return None, end
    text = _rdata(raw, rtype, offset, end)
    if text is None:
        return None, end
    record = Record(owner.lower(), rtype, ttl, text[0], text[1])
    return record, end


def _rdata(
    raw: bytes, rtype: int, start: int, end: int
) -> tuple[str, tuple[int, tuple[bytes, ...]]] | None:
    data = raw[start:end]
    if rtype == 1 and len(data) == 4:
        return socket.inet_ntop(socket.AF_INET, data), (0, ())
    if rtype == 28 and len(data) == 16:
        return socket.inet_ntop(socket.AF_INET6, data), (0, ())
    if rtype in (2, 5, 12):
        name, _ = read_name(raw, start)
        return name or ".", (0, ())
    if rtype == 15:
        preference = int.from_bytes(data[:2], "big")
        exchange, _ = read_name(raw, start + 2)
        # Equal preferences sort as dnspython sorts names (RFC 4034 §6.1).
        labels = tuple(reversed(exchange.lower().encode().split(b".")))
        return f"{preference} {exchange or '.'}", (preference, labels)
    if rtype in (16, 99):
        strings, at = [], 0
        while at < len(data):
            size = data[at]
            strings.append(data[at + 1 : at + 1 + size])
            at += 1 + size
        return b"".join(strings).decode("utf-8", errors="replace"), (0, ())
    return None


def read_name(raw: bytes, offset: int) -> tuple[str, int]:
    """The name at `offset` as text, no final dot, in the case the reply
    wrote it; and the offset after it. Compression pointers (RFC 1035
    §4.1.4) are followed, at most a message's length of them."""
    labels: list[str] = []
    after: int | None = None
    jumps = 0
    while True:
        length = raw[offset]
        if length >= 0xC0:
            if after is None:
                after = offset + 2
            jumps += 1
            if jumps > len(raw):
                raise WireError("a compression loop")
            offset = ((length & 0x3F) << 8) | raw[offset + 1]
            continue
        if length >= 0x40:
            raise WireError("an unknown label type")
        offset += 1
        if length == 0:
            break
        labels.append(_label(raw[offset : offset + length]))
        offset += length
    return ".".join(labels), after if after is not None else offset


def _label(raw: bytes) -> str:
    if _PLAIN_LABEL.fullmatch(raw):
        return raw.decode("ascii")
    # Presentation form, as dnspython writes it (RFC 1035 §5.1).
    out = []
    for byte in raw:
        if byte in _ESCAPED:
            out.append("\\" + chr(byte))
        elif 0x20 < byte < 0x7F:
            out.append(chr(byte))
        else:
            out.append(f"\\{byte:03d}")
    return "".join(out)
