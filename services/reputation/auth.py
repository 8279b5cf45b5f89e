"""AUTH (SPEC §3): credentials against smtp_users, failures counted per
client IP across connections and replicas, and the ban that follows.

The ingress runs the SASL exchange (RFC 4954) and sends the credentials;
this answers pass (with the user), invalid (535) or auth_bruteforce.
"""

from __future__ import annotations

import asyncio
import logging

from nats.js.errors import KeyWrongLastSequenceError
from pydantic import SecretStr

from services.reputation.context import Context
from shared.evaluate import PASS, Found, Reject
from shared.lists import EntryRequest, SmtpUserEntry, entry_key, new_entry
from shared.messages import Check, Outcome, Result, Verdict
from shared.rules import Rule
from shared.settings import seconds
from shared.store import LISTS_BUCKET

log = logging.getLogger(__name__)

KIND = "authfail"
INVALID = "invalid"

# A hash to verify against when the user does not exist, so that a wrong
# user name costs as long as a wrong password.
_DUMMY = new_entry(
    "smtp_users",
    EntryRequest(value="nobody", password=SecretStr("not-a-password")),
)


async def auth_once(ctx: Context) -> Found:
    """RFC 4954 §4: one successful AUTH per session."""
    if ctx.request.session.user:
        return Reject(detail=f"already authenticated as {ctx.request.session.user}")
    return PASS


async def credentials(ctx: Context, verdict: Verdict) -> Verdict:
    """Check the password; on failure count it, and ban at the limit."""
    auth = ctx.request.auth or {}
    user, password = auth.get("user", ""), auth.get("password", "")
    entry = ctx.lists.smtp_user(user) or _DUMMY
    assert isinstance(entry, SmtpUserEntry)
    valid = await asyncio.to_thread(entry.check_password, password)
    if valid and entry is not _DUMMY:
        verdict.results["auth_user"] = user
        return verdict
    return await _failed(ctx, verdict, user)


async def _failed(ctx: Context, verdict: Verdict, user: str) -> Verdict:
    limits = ctx.settings.auth_failures
    failures = await ctx.tools.events.record_and_count(
        KIND, ctx.client, seconds(limits.period)
    )
    detail = f"{failures} failed AUTH for {user!r} in {limits.period}"
    mode = ctx.settings.mode(Rule.AUTH_BRUTEFORCE)
    if failures < limits.limit or mode == "off":
        return _invalid(verdict, detail)
    if mode == "monitor":
        verdict.checks.append(
            Check(Rule.AUTH_BRUTEFORCE, Result.WOULD_REJECT, 0, detail)
        )
        return _invalid(verdict, detail)
    await _ban(ctx, limits.ban)
    verdict.checks.append(Check(Rule.AUTH_BRUTEFORCE, Result.REJECT, 0, detail))
    return Verdict(Outcome.REJECT, Rule.AUTH_BRUTEFORCE, checks=verdict.checks)


def _invalid(verdict: Verdict, detail: str) -> Verdict:
    verdict.checks.append(Check("credentials", Result.REJECT, 0, detail))
    return Verdict(Outcome.REJECT, checks=verdict.checks, results={"auth": INVALID})


async def _ban(ctx: Context, ban: str) -> None:
    """Put the client on auth_blacklist for the ban time (SPEC §5)."""
    if ctx.lists.ip_in("auth_blacklist", ctx.client):
        return
    entry = new_entry(
        "auth_blacklist",
        EntryRequest(value=ctx.client, comment="auth_bruteforce", expires_in=ban),
    )
    kv = await ctx.tools.events.bus.js.key_value(LISTS_BUCKET)
    try:
        await kv.create(entry_key("auth_blacklist", entry.id), entry.to_json())
    except KeyWrongLastSequenceError:
        log.debug("ban of %s already written", ctx.client)
    log.warning("banned %s for %s after repeated AUTH failures", ctx.client, ban)
