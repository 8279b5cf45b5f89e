"""Decision records: what the gateway did with each SMTP transaction.

The ingress publishes one JSON record per transaction on
`perimeter.decisions.{outcome}` (stream PERIMETER_DECISIONS, bounded by age
and size). GET /api/v1/decisions reads the newest ones back, filtered.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, ValidationError

from services.admin.auth import token_name
from services.admin.problems import ApiError, responses
from services.admin.runtime import RuntimeDep
from services.admin.tail import SCAN_LIMIT, newest
from shared.rules import Rule
from shared.store import DECISIONS_STREAM, DECISIONS_SUBJECTS

log = logging.getLogger(__name__)

Outcome = Literal["accepted", "rejected", "tempfail", "aborted"]
# Results of a check that mean the rule did not act on the transaction.
QUIET = frozenset({"pass", "skipped"})


class CheckRecord(BaseModel):
    """One check of the transaction and what it found."""

    model_config = ConfigDict(extra="allow")

    stage: str | None = None
    rule: str | None = None
    result: str
    ms: float | None = None
    detail: str | None = None


class Decision(BaseModel):
    """One SMTP transaction as the ingress recorded it."""

    model_config = ConfigDict(extra="allow")

    session: str
    time: str
    client: str
    helo: str | None = None
    sender: str | None = None
    recipients: list[str] = []
    checks: list[CheckRecord] = []
    reply: str | None = None
    outcome: str
    queue_id: str | None = None


Match = Callable[[Decision], bool]


def by_ip(text: str) -> Match:
    """Records from the address, or from inside the network."""
    try:
        network = ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise ApiError(
            422, f"ip: '{text[:60]}' is not an IP address or CIDR network"
        ) from None
    return lambda record: _client_in(record.client, network)


def _client_in(
    client: str, network: ipaddress.IPv4Network | ipaddress.IPv6Network
) -> bool:
    try:
        address = ipaddress.ip_address(client)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return address.version == network.version and address in network


def by_sender(text: str) -> Match:
    """Records from the address (with @), the null sender (`<>`), or any
    address of the domain and its subdomains (without @)."""
    wanted = text.strip().strip("<>").casefold()
    if "@" in wanted or not wanted:
        return lambda record: (record.sender or "").strip("<>").casefold() == wanted
    return lambda record: _sender_domain_in(record.sender or "", wanted)


def _sender_domain_in(sender: str, domain: str) -> bool:
    found = sender.strip("<>").rpartition("@")[2].casefold().rstrip(".")
    return found == domain or found.endswith("." + domain)


def by_rule(rule: Rule) -> Match:
    """Records where the rule acted: any result but pass or skipped."""
    return lambda record: any(
        check.rule == rule.value and check.result not in QUIET
        for check in record.checks
    )


def _picker(matches: list[Match]) -> Callable[[bytes], Decision | None]:
    def pick(data: bytes) -> Decision | None:
        try:
            record = Decision.model_validate_json(data)
        except ValidationError:
            log.debug("skipping an unreadable decision record")
            return None
        return record if all(match(record) for match in matches) else None

    return pick


router = APIRouter(
    prefix="/api/v1",
    tags=["decisions"],
    dependencies=[Depends(token_name)],
    responses=responses(400, 401, 422, 503),
)


@router.get(
    "/decisions",
    summary="Recent SMTP transactions, newest first",
    description="Each record holds the client, HELO, sender, recipients, "
    "every check with its result and time in ms, and the final reply. "
    f"Only the last {SCAN_LIMIT:,} records of the stream are searched, so a "
    "narrow filter on a busy gateway sees the recent past only.",
    responses=responses(422),
)
async def read_decisions(
    runtime: RuntimeDep,
    ip: Annotated[
        str | None, Query(description="client address or CIDR network")
    ] = None,
    sender: Annotated[
        str | None,
        Query(description="an address, a domain (with subdomains), or <>"),
    ] = None,
    rule: Annotated[Rule | None, Query(description="a rule that did not pass")] = None,
    outcome: Outcome | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> list[Decision]:
    matches = [by_ip(ip)] if ip is not None else []
    matches += [by_sender(sender)] if sender is not None else []
    matches += [by_rule(rule)] if rule is not None else []
    subject = f"perimeter.decisions.{outcome}" if outcome else DECISIONS_SUBJECTS
    js = runtime.bus.js
    return await newest(js, DECISIONS_STREAM, subject, limit, _picker(matches))
