"""The DNS-based rules at RCPT: rbl, rdns, sender_verification, spf."""

from __future__ import annotations

from services.reputation import rbl as dnsbl
from services.reputation.context import Context
from services.reputation.rdns import Ptr, reverse_dns
from services.reputation.senders import SenderStatus, check_domain
from services.reputation.spf import Spf, check_spf
from shared.errors import DependencyUnavailable
from shared.evaluate import PASS, SKIP, Found, Reject

# pyspf's own budget, inside the stage's (RFC 7208 §4.6.4 suggests 20 s).
_SPF_SECONDS = 5.0
_SPF_CACHE_SECONDS = 300


async def rbl(ctx: Context) -> Found:
    if ctx.approved or ctx.lists.ip_in("dnsbl_exemptions", ctx.client):
        return SKIP
    zones = ctx.tools.zones(ctx.lists.rbl_zones())
    results = await dnsbl.lookup(ctx.tools.resolver, ctx.client, zones)
    listed = next((r for r in results if r.listed), None)
    if listed is not None:
        detail = f"{listed.zone} answered {','.join(listed.answers)}"
        return Reject({"zone": listed.zone}, detail)
    dead = [r.zone for r in results if r.listing is dnsbl.Listing.UNAVAILABLE]
    if dead:
        raise DependencyUnavailable(f"no answer from {', '.join(dead)}")
    return PASS


async def rdns(ctx: Context) -> Found:
    if ctx.approved:
        return SKIP
    found = await reverse_dns(ctx.tools.resolver, ctx.client)
    ctx.results["iprev"] = found.iprev.value
    if found.ptr is Ptr.UNAVAILABLE:
        raise DependencyUnavailable(f"no PTR answer for {ctx.client}")
    if found.ptr is Ptr.NONE:
        return Reject({"ip": ctx.client}, "no PTR record")
    return PASS


async def sender_verification(ctx: Context) -> Found:
    mode = ctx.settings.sender_verification
    if ctx.approved or mode == "off" or not ctx.sender:
        return SKIP
    if mode == "callout":
        result = await ctx.tools.senders.verify(ctx.sender)
    else:
        result = await check_domain(ctx.tools.resolver, ctx.sender)
    if result.status is SenderStatus.UNAVAILABLE:
        raise DependencyUnavailable(result.reason)
    if result.status is SenderStatus.FAIL:
        return Reject(detail=result.reason)
    return PASS


async def spf(ctx: Context) -> Found:
    """Only `fail` rejects; softfail, neutral, none and errors pass."""
    if ctx.approved or ctx.lists.domain_in("spf_exemptions", ctx.sender_domain):
        return SKIP
    helo = ctx.request.session.helo or ""
    key = (ctx.client, ctx.sender, helo)
    found = ctx.tools.spf_cache.get(key)
    if found is None:
        found = await check_spf(
            ctx.tools.resolver, ctx.client, ctx.sender, helo, query_time=_SPF_SECONDS
        )
        ctx.tools.spf_cache.put(key, found, _SPF_CACHE_SECONDS)
    ctx.results["spf"] = found.result.value
    if found.result is Spf.FAIL:
        return Reject(detail=found.explanation)
    return PASS
