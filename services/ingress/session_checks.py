"""The connect and HELO checks, which the ingress runs itself.

`banned_ip` and `auth_bruteforce` at connect, and `helo_ip` at HELO/EHLO,
read nothing but the session and the lists (SPEC §3). The ingress follows
the same lists as every worker (`shared.watch`), so it answers them from
its own copy, through the same `evaluate`, with the same modes, decision
records and metrics as a worker's verdict. Asking the reputation service
instead cost two bus round trips per connection, about a third of all the
CPU a one-message connection takes (README.md, "Hops"). Every stage
that needs DNS, shared counters, credentials or callouts (AUTH, MAIL, RCPT)
and the end of DATA still ask their service over NATS.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import ip_address

from shared.evaluate import PASS, Found, Reject, Step
from shared.lists import ListIndex
from shared.messages import Session
from shared.rules import Rule, Stage


@dataclass(frozen=True, slots=True)
class SessionContext:
    session: Session
    lists: ListIndex

    @property
    def client(self) -> str:
        return self.session.client


async def banned_ip(ctx: SessionContext) -> Found:
    entry = ctx.lists.ip_in("banned_ips", ctx.client)
    if entry is None:
        return PASS
    return Reject({"ip": ctx.client}, f"banned_ips {entry.value}")


async def auth_blacklisted(ctx: SessionContext) -> Found:
    """The auth_blacklist that brute force fills (SPEC §3, AUTH)."""
    entry = ctx.lists.ip_in("auth_blacklist", ctx.client)
    if entry is None:
        return PASS
    return Reject(detail=f"auth_blacklist until {entry.expires_at}")


async def helo_ip(ctx: SessionContext) -> Found:
    """A bare IPv4 or IPv6 address; RFC 5321 §4.1.3's literal `[…]` is fine."""
    helo = ctx.session.helo or ""
    try:
        ip_address(helo)
    except ValueError:
        return PASS
    return Reject(detail=f"HELO {helo}")


STEPS: dict[Stage, list[Step[SessionContext]]] = {
    Stage.CONNECT: [
        Step.of(Rule.BANNED_IP, banned_ip),
        Step.of(Rule.AUTH_BRUTEFORCE, auth_blacklisted),
    ],
    Stage.HELO: [
        Step.of(Rule.HELO_IP, helo_ip),
    ],
}
