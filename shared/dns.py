"""DNS lookups for the checks: one resolver, a bounded cache, answers as values.

`Resolver` asks the nameservers of `PERIMETER_DNS_NAMESERVERS` (or the
system's when that list is empty) through the lean stub client of
`shared.dnswire` for the types the checks read, and through dnspython for
anything else and for blocking callers (pyspf); it never raises for
what the DNS says: every lookup ends in an `Answer` whose `Status` tells a
name that does not exist (NXDOMAIN), a name without records of that type
(NODATA), a lookup that ran out of time (TIMEOUT) and any other failure
(ERROR: SERVFAIL, REFUSED, a malformed reply). The checks need exactly that
distinction: a DNSBL zone that times out must not reject, an SPF temperror
passes, a sender domain that does not exist fails verification.

Answers are cached by (name, type) for as long as the DNS allows: positive
answers for their TTL (at most `max_ttl`), NXDOMAIN and NODATA per RFC 2308
§5 (at most `max_negative_ttl`). Timeouts and errors are never cached, so the
next lookup asks again. Identical lookups made while one is on the wire wait
for that one instead of sending their own.

`Answer.records` is always a tuple of strings, whatever the type:

- A, AAAA: the address as text (`192.0.2.1`, `2001:db8::1`);
- PTR, CNAME, NS: the target name without the trailing dot;
- MX: `"<preference> <exchange>"`, the exchange without the trailing dot and
  the root written `.`, so a null MX (RFC 7505) reads `"0 ."`; sorted by
  preference. `parse_mx` splits one into an `MxRecord`;
- TXT (and SPF): the character-strings of each record joined into one string
  (RFC 7208 §3.3), decoded as UTF-8 with undecodable bytes replaced;
- any other type: dnspython's presentation text.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

import dns.asyncresolver
import dns.exception
import dns.message
import dns.name
import dns.nameserver
import dns.rdata
import dns.rdatatype
import dns.resolver
import dns.rrset
from dns.rdtypes.ANY.MX import MX
from dns.rdtypes.IN.A import A
from dns.rdtypes.IN.AAAA import AAAA
from dns.rdtypes.nsbase import NSBase
from dns.rdtypes.txtbase import TXTBase

from shared import dnswire
from shared.ttlcache import TTLCache

_CNAME = dnswire.QTYPES["CNAME"]
_MAX_CNAMES = 16

logger = logging.getLogger(__name__)

Key = tuple[str, str]


class Status(StrEnum):
    OK = "ok"
    NXDOMAIN = "nxdomain"
    NODATA = "nodata"
    TIMEOUT = "timeout"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class Answer:
    """What the DNS said about one (name, type); `ttl` is how long it is
    cached, 0 when it is not."""

    status: Status
    records: tuple[str, ...] = ()
    ttl: int = 0

    @property
    def found(self) -> bool:
        return self.status is Status.OK

    @property
    def absent(self) -> bool:
        """The DNS answered that there is nothing: NXDOMAIN or NODATA."""
        return self.status in (Status.NXDOMAIN, Status.NODATA)

    @property
    def unavailable(self) -> bool:
        """No answer could be had: a timeout or an error."""
        return self.status in (Status.TIMEOUT, Status.ERROR)


class MxRecord(NamedTuple):
    preference: int
    exchange: str

    @property
    def is_null(self) -> bool:
        """The exchange is the root: RFC 7505 §3 null MX."""
        return self.exchange == "."


def parse_mx(record: str) -> MxRecord:
    """Split an MX record as `Answer.records` holds it."""
    preference, exchange = record.split(" ", 1)
    return MxRecord(int(preference), exchange)


def reverse_pointer(ip: str) -> str:
    """The PTR name of an address: `in-addr.arpa` for IPv4 (and IPv4-mapped
    IPv6), nibbles under `ip6.arpa` for IPv6 (RFC 3596 §2.5)."""
    address = ipaddress.ip_address(ip)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped.reverse_pointer
    return address.reverse_pointer


class Resolver:
    """Cached lookups on a fixed list of (host, port) nameservers.

    `nameservers` are IP addresses with their port; an empty list means the
    system's resolver configuration (`/etc/resolv.conf`). `lifetime` bounds
    each lookup, retries included.
    """

    def __init__(
        self,
        nameservers: Sequence[tuple[str, int]],
        *,
        lifetime: float = 3.0,
        cache_size: int = 10_000,
        max_ttl: int = 3600,
        max_negative_ttl: int = 900,
        negative_ttl_without_soa: int = 60,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lifetime = lifetime
        self.max_ttl = max_ttl
        self.max_negative_ttl = max_negative_ttl
        self.negative_ttl_without_soa = negative_ttl_without_soa
        self._cache: TTLCache[Key, Answer] = TTLCache(cache_size, clock)
        self._inflight: dict[Key, asyncio.Task[Answer]] = {}
        self._async = dns.asyncresolver.Resolver(configure=not nameservers)
        self._sync = dns.resolver.Resolver(configure=not nameservers)
        if nameservers:
            _use_nameservers(self._async, nameservers)
            _use_nameservers(self._sync, nameservers)
        self._stub = dnswire.StubClient(nameservers or _system_servers(self._async))

    @property
    def cache_hits(self) -> int:
        return self._cache.hits

    @property
    def cache_misses(self) -> int:
        return self._cache.misses

    @property
    def cache_size(self) -> int:
        return len(self._cache)

    async def query(self, name: str, rdtype: str) -> Answer:
        """Look `name` up for `rdtype` (`"A"`, `"MX"`, ...), from the cache
        when it can, sharing a lookup already on the wire."""
        key = _key(name, rdtype)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        return await self._ask(key)

    async def _ask(self, key: Key) -> Answer:
        """The answer from the wire, sharing a lookup already on it."""
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.create_task(self._fetch(key))
            self._inflight[key] = task
            task.add_done_callback(lambda done: self._forget(key, done))
        # A caller that gives up must not cancel the lookup others wait for.
        return await asyncio.shield(task)

    async def query_all(self, queries: Sequence[tuple[str, str]]) -> list[Answer]:
        """Several (name, rdtype) lookups, answers in order: those in the
        cache at once, the rest concurrently. Most lookups of a busy
        gateway are cache hits, and a task per hit costs more than it."""
        keys = [_key(name, rdtype) for name, rdtype in queries]
        answers: list[Answer | None] = [self._cache.get(key) for key in keys]
        missing = [index for index, answer in enumerate(answers) if answer is None]
        if missing:
            fetched = await asyncio.gather(*(self._ask(keys[i]) for i in missing))
            for index, answer in zip(missing, fetched, strict=True):
                answers[index] = answer
        return [answer for answer in answers if answer is not None]

    async def a_aaaa(self, name: str) -> Answer:
        """A and AAAA together: OK with every address when either has some."""
        v4, v6 = await self.query_all([(name, "A"), (name, "AAAA")])
        return merge(v4, v6)

    async def ptr(self, ip: str) -> Answer:
        """PTR names of an IPv4 or IPv6 address; ValueError if `ip` is not one."""
        return await self.query(reverse_pointer(ip), "PTR")

    async def mx(self, domain: str) -> Answer:
        """MX records, `"<preference> <exchange>"`, lowest preference first."""
        return await self.query(domain, "MX")

    async def txt(self, name: str) -> Answer:
        return await self.query(name, "TXT")

    def lookup_sync(
        self, name: str, rdtype: str, lifetime: float | None = None
    ) -> Answer:
        """The blocking twin of `query`, for code that runs in a thread
        (pyspf). It shares the cache but not the in-flight lookups."""
        key = _key(name, rdtype)
        cached = self._cache.get(key)
        if cached is not None:
            return cached

        limit = self.lifetime if lifetime is None else min(lifetime, self.lifetime)
        question = _stub_question(key)
        if question is not None and self._stub.servers:
            try:
                reply = self._stub.ask_sync(*question, limit)
            except (dnswire.Timeout, dnswire.Unanswered, OSError) as exc:
                return self._settle_stub(key, question[1], exc)
            return self._settle_stub(key, question[1], reply)
        qname = _qname(key[0])
        if qname is None:
            return Answer(Status.NXDOMAIN)
        try:
            result = self._sync.resolve(
                qname, key[1], lifetime=limit, raise_on_no_answer=False, search=False
            )
        except (dns.exception.DNSException, OSError) as exc:
            return self._settle(key, exc)
        return self._settle(key, result)

    async def aclose(self) -> None:
        """Cancel lookups still on the wire."""
        tasks = list(self._inflight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _fetch(self, key: Key) -> Answer:
        question = _stub_question(key)
        if question is None or not self._stub.servers:
            return await self._fetch_general(key)
        try:
            reply = await self._stub.ask(*question, self.lifetime)
        except (dnswire.Timeout, dnswire.Unanswered, OSError) as exc:
            return self._settle_stub(key, question[1], exc)
        return self._settle_stub(key, question[1], reply)

    def _settle_stub(
        self, key: Key, qtype: int, outcome: dnswire.Reply | BaseException
    ) -> Answer:
        """Turn what the stub client got into an Answer, and cache it."""
        if isinstance(outcome, dnswire.Reply):
            answer = self._from_reply(key[0], qtype, outcome)
        elif isinstance(outcome, dnswire.Timeout):
            answer = Answer(Status.TIMEOUT)
        else:
            logger.debug("dns %s %s failed: %r", key[0], key[1], outcome)
            answer = Answer(Status.ERROR)
        logger.debug("dns %s %s: %s %s", key[0], key[1], answer.status, answer.records)
        self._cache.put(key, answer, answer.ttl)
        return answer

    def _from_reply(self, name: str, qtype: int, reply: dnswire.Reply) -> Answer:
        """The records of `qtype` at `name`, following CNAMEs (RFC 1034
        §3.6.2); the TTL is the smallest along the chain."""
        owner = name.rstrip(".").lower()
        ttl: int | None = None
        for _ in range(_MAX_CNAMES):
            found = [r for r in reply.answers if r.owner == owner and r.rtype == qtype]
            if found:
                lowest = min(record.ttl for record in found)
                ttl = lowest if ttl is None else min(ttl, lowest)
                found.sort(key=lambda record: record.sort_key)
                records = tuple(record.text for record in found)
                return Answer(Status.OK, records, min(ttl, self.max_ttl))
            alias = next(
                (r for r in reply.answers if r.owner == owner and r.rtype == _CNAME),
                None,
            )
            if alias is None:
                break
            ttl = alias.ttl if ttl is None else min(ttl, alias.ttl)
            owner = alias.text.lower()
        status = Status.NXDOMAIN if reply.rcode == dnswire.NXDOMAIN else Status.NODATA
        return Answer(status, (), self._soa_ttl(reply.soa))

    def _soa_ttl(self, soa: tuple[int, int] | None) -> int:
        """RFC 2308 §5, from the authority SOA's TTL and MINIMUM."""
        ttl = self.negative_ttl_without_soa if soa is None else min(soa)
        return min(ttl, self.max_negative_ttl)

    async def _fetch_general(self, key: Key) -> Answer:
        """Through dnspython: names that are not plain ASCII host names,
        types the stub does not read, and the system's resolver setup."""
        qname = _qname(key[0])
        if qname is None:
            return Answer(Status.NXDOMAIN)

        try:
            result = await self._async.resolve(
                qname,
                key[1],
                lifetime=self.lifetime,
                raise_on_no_answer=False,
                search=False,
            )
        except (dns.exception.DNSException, OSError) as exc:
            return self._settle(key, exc)
        return self._settle(key, result)

    def _forget(self, key: Key, task: asyncio.Task[Answer]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]

    def _settle(self, key: Key, outcome: dns.resolver.Answer | BaseException) -> Answer:
        """Turn what dnspython returned or raised into an Answer, and cache it."""
        if isinstance(outcome, dns.resolver.Answer):
            answer = self._positive(outcome)
        else:
            answer = self._failure(key, outcome)

        logger.debug("dns %s %s: %s %s", key[0], key[1], answer.status, answer.records)
        self._cache.put(key, answer, answer.ttl)
        return answer

    def _positive(self, result: dns.resolver.Answer) -> Answer:
        if result.rrset is None:
            return Answer(Status.NODATA, (), self._negative_ttl(result.response))

        ttl = min(result.chaining_result.minimum_ttl, self.max_ttl)
        return Answer(Status.OK, _records(result.rrset), ttl)

    def _failure(self, key: Key, exc: BaseException) -> Answer:
        if isinstance(exc, dns.resolver.NXDOMAIN):
            responses = list(exc.responses().values())
            response = responses[0] if responses else None
            return Answer(Status.NXDOMAIN, (), self._negative_ttl(response))
        if isinstance(exc, dns.exception.Timeout):
            return Answer(Status.TIMEOUT)

        logger.debug("dns %s %s failed: %r", key[0], key[1], exc)
        return Answer(Status.ERROR)

    def _negative_ttl(self, response: dns.message.Message | None) -> int:
        """RFC 2308 §5: a negative answer lives for the smaller of the SOA's
        own TTL and its MINIMUM field; without an SOA, a short default."""
        for rrset in response.authority if response is not None else ():
            if rrset.rdtype == dns.rdatatype.SOA:
                return self._soa_ttl((rrset.ttl, rrset[0].minimum))
        return self._soa_ttl(None)


def merge(*answers: Answer) -> Answer:
    """One answer from several lookups of the same name (A and AAAA).

    OK when any found records; otherwise NXDOMAIN (the name does not exist
    for any type), then TIMEOUT, ERROR, and NODATA only when every lookup
    said NODATA.
    """
    found = [answer for answer in answers if answer.found]
    if found:
        records = tuple(record for answer in found for record in answer.records)
        return Answer(Status.OK, records, min(answer.ttl for answer in found))

    ttl = min(answer.ttl for answer in answers)
    for status in (Status.NXDOMAIN, Status.TIMEOUT, Status.ERROR):
        if any(answer.status is status for answer in answers):
            return Answer(status, (), ttl)
    return Answer(Status.NODATA, (), ttl)


class MailHosts(NamedTuple):
    """Where a domain's mail goes (RFC 5321 §5.1): `hosts` best preference
    first when `status` is OK; NXDOMAIN, or NODATA for a domain that takes
    no mail (a null MX, RFC 7505 §3, or no MX, A or AAAA record); TIMEOUT
    or ERROR when the DNS could not say. `reason` is for logs."""

    status: Status
    reason: str
    hosts: tuple[str, ...] = ()


async def mail_hosts(resolver: Resolver, domain: str) -> MailHosts:
    """The hosts that take `domain`'s mail, from its MX records, or the
    domain itself as its implicit MX when it has none."""
    mx = await resolver.mx(domain)
    if mx.unavailable:
        return MailHosts(mx.status, f"MX lookup {mx.status}")
    if mx.status is Status.NXDOMAIN:
        return MailHosts(Status.NXDOMAIN, "domain does not exist")
    if mx.found:
        exchanges = [parse_mx(record) for record in mx.records]
        # RFC 7505 §3: an MX "0 ." (alone, as it must be) says the domain
        # takes no mail at all.
        if all(exchange.is_null for exchange in exchanges):
            return MailHosts(Status.NODATA, "null MX")
        hosts = tuple(e.exchange for e in exchanges if not e.is_null)
        return MailHosts(Status.OK, "MX", hosts)
    address = await resolver.a_aaaa(domain)
    if address.found:
        return MailHosts(Status.OK, "implicit MX", (domain,))
    if address.unavailable:
        return MailHosts(address.status, f"A/AAAA lookup {address.status}")
    return MailHosts(Status.NODATA, "no MX, A or AAAA record")


def _system_servers(resolver: dns.resolver.BaseResolver) -> list[tuple[str, int]]:
    """The plain-DNS servers of the system's configuration (resolv.conf)."""
    servers = []
    for server in resolver.nameservers:
        if isinstance(server, str):
            servers.append((server, resolver.port))
        elif isinstance(server, dns.nameserver.Do53Nameserver):
            servers.append((server.address, server.port))
    return servers


def _use_nameservers(
    resolver: dns.resolver.BaseResolver, nameservers: Sequence[tuple[str, int]]
) -> None:
    resolver.nameservers = [
        dns.nameserver.Do53Nameserver(host, port) for host, port in nameservers
    ]


def _key(name: str, rdtype: str) -> Key:
    return name.rstrip(".").lower(), rdtype.upper()


def _stub_question(key: Key) -> tuple[bytes, int] | None:
    """(wire name, type) when the stub client can ask it; None otherwise."""
    qtype = dnswire.QTYPES.get(key[1])
    wire = dnswire.encode_name(key[0]) if qtype is not None else None
    return None if wire is None or qtype is None else (wire, qtype)


def _qname(name: str) -> dns.name.Name | None:
    """The absolute name to ask for, or None when `name` cannot be a DNS
    name (an empty label, a label over 63 octets): such a name does not
    exist, and is answered NXDOMAIN without asking anyone."""
    try:
        return dns.name.from_text(name)
    except dns.exception.DNSException:
        return None


def _records(rrset: dns.rrset.RRset) -> tuple[str, ...]:
    rdatas = list(rrset)
    if rrset.rdtype == dns.rdatatype.MX:
        rdatas.sort(key=lambda mx: (mx.preference, mx.exchange))
    return tuple(_record(rdata) for rdata in rdatas)


def _record(rdata: dns.rdata.Rdata) -> str:
    if isinstance(rdata, A | AAAA):
        return str(rdata.address)
    if isinstance(rdata, NSBase):
        return rdata.target.to_text(omit_final_dot=True)
    if isinstance(rdata, MX):
        return f"{rdata.preference} {rdata.exchange.to_text(omit_final_dot=True)}"
    if isinstance(rdata, TXTBase):
        return b"".join(rdata.strings).decode("utf-8", errors="replace")
    return rdata.to_text()
