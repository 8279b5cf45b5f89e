"""A real DNS server for tests, on 127.0.0.1, answering from a table.

Tests write their records the way a zone file would, and may change them
while the server runs:

    dns.zone("example.test")                      # SOA for negative answers
    dns.add("example.test", "MX", "10 mx.example.test")
    dns.add("mx.example.test", "A", "127.0.0.1", ttl=1)
    dns.add("192.0.2.1", "PTR", "host.example.test")  # an IP stands for its PTR name
    dns.silence("slow.test")                      # never answers, to time out
    dns.fail("broken.test")                       # SERVFAIL

A name with records answers them, or NODATA for another type; any other name
is NXDOMAIN. Negative answers under a declared zone carry its SOA in the
authority section (RFC 2308 §3). The server listens on UDP and TCP on the
same free port and counts the questions it was asked, so tests can tell a
cached answer from a fresh one.
"""

from __future__ import annotations

import ipaddress
import threading
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Iterator

import pytest
from dnslib import QTYPE, RCODE, RR, TXT, DNSError, DNSRecord
from dnslib.server import DNSHandler, DNSLogger, DNSServer

from shared.dns import Resolver

Row = tuple[str, str, str] | tuple[str, str, str, int]


class DnsServer:
    """An authoritative-looking server for whatever the test declares."""

    host = "127.0.0.1"

    def __init__(self) -> None:
        self.port = 0
        self._records: dict[str, list[RR]] = {}
        self._zones: dict[str, RR] = {}
        self._silenced: set[str] = set()
        self._failing: set[str] = set()
        self._asked: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()
        self._servers: list[DNSServer] = []
        self._baseline: list[Row] = []

    def baseline(self, rows: Iterable[Row]) -> None:
        """Records that stay through `clear()`: the world every test shares."""
        self._baseline = list(rows)
        self.load(self._baseline)

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def start(self) -> None:
        for _ in range(20):
            try:
                self._servers = self._listen()
                break
            except OSError:
                continue  # the UDP port was free, the TCP one was not
        else:
            raise RuntimeError("no free port for UDP and TCP together")
        for server in self._servers:
            threading.Thread(
                target=server.server.serve_forever,
                kwargs={"poll_interval": 0.05},  # so that stop() is quick
                daemon=True,
            ).start()

    def stop(self) -> None:
        for server in self._servers:
            server.stop()
            server.server.server_close()
        self._servers = []

    def add(self, name: str, rdtype: str, value: str, ttl: int = 60) -> None:
        """Add one record; `value` is written as in a zone file."""
        owner = _owner(name)
        with self._lock:
            self._records.setdefault(owner, []).append(_rr(owner, rdtype, value, ttl))

    def load(self, rows: Iterable[Row]) -> None:
        """Add a table of `(name, type, value[, ttl])` rows."""
        for row in rows:
            self.add(*row)

    def remove(self, name: str) -> None:
        with self._lock:
            self._records.pop(_owner(name), None)

    def zone(self, name: str, minimum: int = 60, ttl: int = 60) -> None:
        """Declare a zone: its apex has an SOA record, and negative answers
        under it carry that SOA, whose MINIMUM is `minimum`."""
        apex = _norm(name)
        value = f"ns.{apex}. hostmaster.{apex}. 1 3600 600 86400 {minimum}"
        soa = _rr(apex, "SOA", value, ttl)
        with self._lock:
            self._zones[apex] = soa
            self._records.setdefault(apex, []).append(soa)

    def silence(self, suffix: str) -> None:
        """Names at or under `suffix` get no answer at all."""
        with self._lock:
            self._silenced.add(_owner(suffix))

    def fail(self, suffix: str) -> None:
        """Names at or under `suffix` get SERVFAIL."""
        with self._lock:
            self._failing.add(_owner(suffix))

    def recover(self, suffix: str) -> None:
        """Names at or under `suffix` are answered again."""
        with self._lock:
            self._silenced.discard(_owner(suffix))
            self._failing.discard(_owner(suffix))

    def clear(self) -> None:
        with self._lock:
            for table in (self._records, self._zones, self._silenced, self._failing):
                table.clear()
            self._asked.clear()
        self.load(self._baseline)

    def asked(self, name: str, rdtype: str) -> int:
        """How many times the question (name, type) reached the server."""
        with self._lock:
            return self._asked[_owner(name), rdtype.upper()]

    def resolve(self, request: DNSRecord, handler: DNSHandler) -> DNSRecord:
        """dnslib's resolver interface: one reply per request."""
        name = _norm(str(request.q.qname))
        rdtype = QTYPE[request.q.qtype]
        with self._lock:
            self._asked[name, rdtype] += 1
            if _under(name, self._silenced):
                raise DNSError(f"{name} is silenced")  # dnslib then sends nothing
            return self._reply(request, name, rdtype)

    def _reply(self, request: DNSRecord, name: str, rdtype: str) -> DNSRecord:
        reply = request.reply()
        if _under(name, self._failing):
            reply.header.rcode = RCODE.SERVFAIL
            return reply

        # As a recursive resolver answers: an alias is followed, and the
        # chain comes before the records at its end (RFC 1034 §3.6.2).
        for _ in range(8):
            records = self._records.get(name)
            matching = [rr for rr in records or () if QTYPE[rr.rtype] == rdtype]
            alias = [rr for rr in records or () if QTYPE[rr.rtype] == "CNAME"]
            if matching or not alias or rdtype == "CNAME":
                break
            reply.add_answer(alias[0])
            name = _norm(str(alias[0].rdata))
        for rr in matching:
            reply.add_answer(rr)
        if not matching:
            self._negative(reply, name, exists=records is not None)
        return reply

    def _negative(self, reply: DNSRecord, name: str, exists: bool) -> None:
        if not exists:
            reply.header.rcode = RCODE.NXDOMAIN
        zone = _enclosing(name, self._zones)
        if zone is not None:
            reply.add_auth(self._zones[zone])

    def _listen(self) -> list[DNSServer]:
        quiet = DNSLogger(log="-request,-reply,-truncated,-error", prefix=False)
        udp = DNSServer(
            self, port=0, address=self.host, logger=quiet, handler=_ClassicHandler
        )
        self.port = udp.server.server_address[1]
        try:
            tcp = DNSServer(
                self, port=self.port, address=self.host, tcp=True, logger=quiet
            )
        except OSError:
            udp.server.server_close()
            raise
        return [udp, tcp]


class _ClassicHandler(DNSHandler):
    """UDP answers as a resolver gives them to a query without EDNS: at
    most 512 octets, truncated (TC) beyond that (RFC 1035 §4.2.1)."""

    udplen = 512


def _norm(name: str) -> str:
    return name.rstrip(".").lower()


def _owner(name: str) -> str:
    """A name as the tables key it; an IP address stands for its reverse
    (PTR) name."""
    try:
        return _norm(ipaddress.ip_address(name).reverse_pointer)
    except ValueError:
        return _norm(name)


def _rr(owner: str, rdtype: str, value: str, ttl: int) -> RR:
    if rdtype.upper() == "TXT":
        chunks = [value[i : i + 255] for i in range(0, len(value), 255)] or [""]
        return RR(owner, QTYPE.TXT, ttl=ttl, rdata=TXT(chunks))
    return RR.fromZone(f"{owner}. {ttl} IN {rdtype.upper()} {value}")[0]


def _under(name: str, suffixes: Iterable[str]) -> bool:
    return any(name == s or name.endswith("." + s) for s in suffixes)


def _enclosing(name: str, zones: Iterable[str]) -> str | None:
    """The longest declared zone at or above `name`."""
    found = [zone for zone in zones if _under(name, [zone])]
    return max(found, key=len, default=None)


@pytest.fixture(scope="session")
def dns_server_session() -> Iterator[DnsServer]:
    """One DNS server for the whole run."""
    server = DnsServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def dns_server(dns_server_session: DnsServer) -> Iterator[DnsServer]:
    """The shared DNS server, empty at the start of each test."""
    dns_server_session.clear()
    yield dns_server_session
    dns_server_session.clear()


@pytest.fixture
async def resolver(dns_server: DnsServer) -> AsyncIterator[Resolver]:
    """A Resolver on the test DNS server only, with a cold cache and a short
    lifetime so silenced names time out quickly."""
    resolver = Resolver([dns_server.address], lifetime=0.5)
    yield resolver
    await resolver.aclose()
