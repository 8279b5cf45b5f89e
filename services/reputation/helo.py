"""HELO rules: helo_ip at HELO/EHLO, helo_required at MAIL (SPEC §3)."""

from __future__ import annotations

from ipaddress import ip_address

from services.reputation.context import Context
from shared.evaluate import PASS, Found, Reject


async def helo_ip(ctx: Context) -> Found:
    """A bare IPv4 or IPv6 address; RFC 5321 §4.1.3's literal `[…]` is fine."""
    helo = ctx.request.session.helo or ""
    try:
        ip_address(helo)
    except ValueError:
        return PASS
    return Reject(detail=f"HELO {helo}")


async def helo_required(ctx: Context) -> Found:
    if ctx.request.session.helo:
        return PASS
    return Reject(detail="MAIL before HELO/EHLO")
