"""SPF (RFC 7208) for the envelope sender, by pyspf, through our nameservers.

pyspf is synchronous, so a check runs in a worker thread. pyspf resolves
through its module function `spf.DNSLookup`; importing this module replaces
that function with one that asks the `Resolver` of the running check (handed
to the thread in a context variable), so SPF uses the configured nameservers
and the shared cache. A lookup made outside `check_spf` has no resolver and
is a TempError: pyspf never falls back to the system's DNS.

The explanation is pyspf's text (the domain's `exp=`, or what went wrong):
for logs and the decision record, never for the client.
"""

from __future__ import annotations

import asyncio
import logging
from contextvars import ContextVar
from dataclasses import dataclass
from enum import StrEnum

import spf as pyspf

from shared.dns import Resolver, parse_mx

logger = logging.getLogger(__name__)

# RFC 7208 §4.6.4 suggests at least 20 seconds for a whole check.
DEFAULT_QUERY_TIME = 20.0

_resolver: ContextVar[Resolver | None] = ContextVar("spf_resolver", default=None)

PyspfRecord = tuple[tuple[str, str], object]


class Spf(StrEnum):
    """The results of RFC 7208 §2.6."""

    PASS = "pass"
    FAIL = "fail"
    SOFTFAIL = "softfail"
    NEUTRAL = "neutral"
    NONE = "none"
    TEMPERROR = "temperror"
    PERMERROR = "permerror"


@dataclass(frozen=True, slots=True)
class SpfResult:
    result: Spf
    explanation: str


async def check_spf(
    resolver: Resolver,
    ip: str,
    sender: str,
    helo: str,
    *,
    query_time: float = DEFAULT_QUERY_TIME,
) -> SpfResult:
    """The SPF result for `sender` sending from `ip` after `helo`."""
    # RFC 7208 §2.4: a null reverse-path is checked as postmaster@<HELO>.
    identity = sender or f"postmaster@{helo}"
    result, explanation = await asyncio.to_thread(
        _check, resolver, ip, identity, helo, query_time
    )

    logger.debug("spf %s from %s: %s (%s)", identity, ip, result, explanation)
    return SpfResult(result, explanation)


def _check(
    resolver: Resolver, ip: str, sender: str, helo: str, query_time: float
) -> tuple[Spf, str]:
    """Run pyspf in this thread, whose context is a copy made for it alone."""
    _resolver.set(resolver)
    try:
        result, explanation = pyspf.check2(i=ip, s=sender, h=helo, querytime=query_time)
    except Exception:
        # check2 turns every SPF and DNS problem into a result; anything it
        # lets through is a bug below us, and SPF errors must not reject.
        logger.exception("pyspf failed for %s from %s", sender, ip)
        return Spf.TEMPERROR, "internal error"
    return _result(result), str(explanation)


def _result(value: str) -> Spf:
    try:
        return Spf(value)
    except ValueError:
        logger.warning("pyspf gave an unknown result %r", value)
        return Spf.TEMPERROR


def dns_lookup(
    name: str, qtype: str, tcpfallback: bool = True, timeout: float = 30
) -> list[PyspfRecord]:
    """pyspf's `DNSLookup`, answered by the check's Resolver.

    pyspf wants `[((name, type), value), ...]`: addresses and PTR names as
    str, MX as `(preference, exchange)`, TXT as a tuple of bytes strings; an
    empty list for NXDOMAIN and NODATA, and `spf.TempError` raised when the
    DNS could not answer.
    """
    resolver = _resolver.get()
    if resolver is None:
        raise pyspf.TempError("DNS: no resolver for this SPF check")

    answer = resolver.lookup_sync(name, qtype, lifetime=timeout)
    if answer.unavailable:
        raise pyspf.TempError(f"DNS {answer.status} for {name} {qtype}")
    return [((name, qtype), _pyspf_value(qtype, record)) for record in answer.records]


def _pyspf_value(qtype: str, record: str) -> object:
    if qtype in ("TXT", "SPF"):
        return (record.encode("utf-8"),)
    if qtype == "MX":
        return tuple(parse_mx(record))
    return record


pyspf.DNSLookup = dns_lookup
