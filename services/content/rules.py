"""The end-of-DATA rules of SPEC §3, as `evaluate` runs them: which
exemption skips each one, what it asks of its check module (`attachments`,
`antivirus`, `prohibitions`, `dkim`), and the verdict it gives.

A message the attachment walk cannot finish within its bounds (a MIME bomb,
a zip bomb, archives nested too deep or holding too much) can be said
neither free of blocked names nor safely scanned. The `antivirus` rule
refuses it, with the catalog's "rejected due to security policies":
`blocked_extension` records itself skipped for such a message, and the
bounds follow the antivirus rule's mode and `av_exemptions`. They apply
whether or not clamd is configured, since they protect the walk, not clamd.

CPU-bound work (the MIME and zip walk, the header block, subject patterns)
on a large message runs in a thread (`cpu.offload`), so the worker's event
loop keeps answering NATS while it is read.
"""

from __future__ import annotations

import logging
import re
from typing import TypeVar

from services.content import dkim as signatures
from services.content import prohibitions
from services.content.antivirus import Clamd, ClamdUnavailable, ScanResult
from services.content.attachments import Finding, find_blocked_attachment
from services.content.context import Context, Walk
from services.content.cpu import offload
from shared import metrics
from shared.errors import DependencyUnavailable
from shared.evaluate import PASS, SKIP, Found, Reject

log = logging.getLogger(__name__)

T = TypeVar("T")

_END_OF_HEADERS = b"\r\n\r\n"
# RFC 6376 §3.5: the header field a signature travels in.
_SIGNATURE_HEADER = re.compile(rb"^dkim-signature[ \t]*:", re.IGNORECASE | re.MULTILINE)
_DOMAIN_TAG = re.compile(r"(?:^|;)\s*d\s*=\s*([^;]*)")
# RFC 8601 §2.2: resinfo entries are separated by ";"; one per line here,
# folded the way the ingress folds the header's other entries.
_RESINFO_SEPARATOR = ";\r\n\t"
_DETAIL_CHARS = 200


async def blocked_extension(ctx: Context) -> Found:
    """DATA step 1: an attachment whose name, or the name of a file in a
    zip it is, ends in a blocked extension."""
    walk = await _walk(ctx, ctx.lists.extensions())
    if walk.finding is None:
        return PASS
    if walk.too_complex is not None:
        log.debug("blocked_extension skipped: %s", walk.too_complex.reason)
        return SKIP  # the antivirus rule refuses it
    return Reject(detail=_finding_detail(walk.finding))


async def antivirus(ctx: Context) -> Found:
    """DATA step 2: the message is within the walk's bounds, and clamd
    finds no signature in it."""
    if ctx.lists.ip_in("av_exemptions", ctx.client):
        return SKIP
    too_complex = await _too_complex(ctx)
    if too_complex is not None:
        return Reject(detail=_finding_detail(too_complex))

    clamd = ctx.scanners.clamd
    if clamd is None:
        return SKIP
    result = await _scan(clamd, ctx.message)
    if result.infected:
        return Reject(detail=f"clamd found {result.signature}")
    return PASS


async def admin_prohibited(ctx: Context) -> Found:
    """DATA step 3: a Subject in `blocked_subjects`, or a Reply-To present
    and blank unless the client or the sender is exempt."""
    entries = sorted(entry.value for entry in ctx.lists.entries("blocked_subjects"))
    subjects = prohibitions.subject_rules(entries)
    found = await offload(
        len(ctx.message),
        prohibitions.find_prohibition,
        ctx.message,
        subjects,
        check_reply_to=not _reply_to_exempt(ctx),
    )
    if found is None:
        return PASS
    detail = f"{found.reason}: {found.entry}" if found.entry else str(found.reason)
    return Reject(detail=_short(detail))


async def dkim(ctx: Context) -> Found:
    """DATA step 4: the message has DKIM signatures and none verifies.

    Sets the `dkim` result, and `dkim_header` with one RFC 8601 resinfo per
    signature, for the Authentication-Results header of accepted mail. A
    key that cannot be fetched now is a dependency down; `dkim` is in
    `fail_open` by default, so such mail goes on with `dkim=temperror`.
    """
    if ctx.lists.ip_in("dkim_exemptions", ctx.client):
        return SKIP
    domains = await offload(len(ctx.message), _signing_domains, ctx.message)
    if not domains:
        # Without this shortcut dkim.verify would slice off the body first.
        ctx.results["dkim"] = "none"
        return PASS
    exempt = [d for d in domains if d and ctx.lists.domain_in("dkim_exemptions", d)]
    if exempt:
        log.debug("dkim skipped: %s is in dkim_exemptions", exempt[0])
        return SKIP

    verdict = await signatures.verify(ctx.message, ctx.scanners.txt_lookup)
    _record_dkim(ctx, verdict)
    if verdict.unavailable:
        raise DependencyUnavailable(_short(f"DKIM {_dkim_detail(verdict)}"))
    if not verdict.failed:
        return PASS
    reason = verdict.reason or signatures.Reason.BAD_SIGNATURE
    return Reject({"reason": reason.value}, _short(_dkim_detail(verdict)))


# Attachments --------------------------------------------------------------


async def _walk(ctx: Context, blocked: frozenset[str]) -> Walk:
    """Walk the attachment names in a thread, a few messages at a time."""
    async with ctx.scanners.cpu:
        finding = await offload(
            len(ctx.message), find_blocked_attachment, ctx.message, blocked
        )
    ctx.walk = Walk(finding)
    return ctx.walk


async def _too_complex(ctx: Context) -> Finding | None:
    """What bound the message goes over, reusing the walk of step 1 when it
    saw the whole message (it stops early at a blocked name in monitor
    mode, and does not run when the rule is off)."""
    walk = ctx.walk
    if walk is None or not walk.complete:
        walk = await _walk(ctx, frozenset())
    return walk.too_complex


def _finding_detail(found: Finding) -> str:
    detail = f"{found.reason}: {found.name}" if found.name else str(found.reason)
    return _short(f"{detail} ({found.detail})" if found.detail else detail)


async def _scan(clamd: Clamd, message: bytes) -> ScanResult:
    """clamd's verdict; clamd down is a dependency down (SPEC §2: 451)."""
    try:
        return await clamd.scan(message)
    except ClamdUnavailable as exc:
        metrics.CLAMD_ERRORS.inc()
        raise DependencyUnavailable(str(exc)) from exc


# Prohibitions -------------------------------------------------------------


def _reply_to_exempt(ctx: Context) -> bool:
    """SPEC §5 empty_reply_exemptions: the client's address or network, the
    sender's address, or its domain or a parent of it."""
    if ctx.lists.ip_in("empty_reply_exemptions", ctx.client):
        return True
    if not ctx.sender:
        return False
    return ctx.lists.address_in("empty_reply_exemptions", ctx.sender) is not None


# DKIM ---------------------------------------------------------------------


def _signing_domains(message: bytes) -> list[str]:
    """The `d=` of every DKIM-Signature, lower case ('' where it has none);
    empty when the message is not signed. Only the header block is read."""
    end = message.find(_END_OF_HEADERS)
    if not _SIGNATURE_HEADER.search(message, 0, end if end != -1 else len(message)):
        return []
    domains = []
    for name, value in prohibitions.read_headers(message):
        if name == "dkim-signature":
            found = _DOMAIN_TAG.search(value)
            domain = re.sub(r"\s+", "", found.group(1)) if found else ""
            domains.append(domain.rstrip(".").lower())
    # A field dkimpy reads but the unfolding above does not still counts.
    return domains or [""]


def _record_dkim(ctx: Context, verdict: signatures.DkimVerdict) -> None:
    ctx.results["dkim"] = verdict.outcome
    if verdict.signatures:
        ctx.results["dkim_header"] = _RESINFO_SEPARATOR.join(verdict.authres())


def _dkim_detail(verdict: signatures.DkimVerdict) -> str:
    return "; ".join(
        f"d={s.domain} s={s.selector} {s.outcome}: {s.detail or s.reason}"
        for s in verdict.signatures
    )


def _short(text: str) -> str:
    """Detail for the decision record, bounded: names come from senders."""
    if len(text) <= _DETAIL_CHARS:
        return text
    return text[: _DETAIL_CHARS - 3] + "..."
