"""Bans: banned_ip and auth_bruteforce at connect, banned_domain at MAIL."""

from __future__ import annotations

from services.reputation.context import Context
from shared.evaluate import PASS, Found, Reject


async def banned_ip(ctx: Context) -> Found:
    entry = ctx.lists.ip_in("banned_ips", ctx.client)
    if entry is None:
        return PASS
    return Reject({"ip": ctx.client}, f"banned_ips {entry.value}")


async def auth_blacklisted(ctx: Context) -> Found:
    """The auth_blacklist filled by earlier brute force (SPEC §3)."""
    entry = ctx.lists.ip_in("auth_blacklist", ctx.client)
    if entry is None:
        return PASS
    return Reject(detail=f"auth_blacklist until {entry.expires_at}")


async def banned_domain(ctx: Context) -> Found:
    """The sender's domain or any parent of it; the reply names the
    sender's own domain, not the entry (SPEC §2)."""
    domain = ctx.sender_domain
    if not domain:
        return PASS
    entry = ctx.lists.domain_in("banned_domains", domain)
    if entry is None:
        return PASS
    return Reject({"domain": domain}, f"banned_domains {entry.value}")
