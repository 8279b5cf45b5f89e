"""The messages on the bus: a stage request and its verdict.

Both travel as msgpack maps with a version field `v`. A worker refuses a
version it does not know rather than guess, and the ingress answers such a
refusal like any other failed check (451 4.3.0).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import msgpack

from shared.rules import Rule, Stage

WIRE_VERSION = 1


class WireError(ValueError):
    """A bus message this code cannot read."""


class Outcome(StrEnum):
    PASS = "pass"
    REJECT = "reject"
    TEMPFAIL = "tempfail"


class Result(StrEnum):
    """What one check found, as the decision record shows it."""

    PASS = "pass"
    REJECT = "reject"
    WOULD_REJECT = "would_reject"
    TEMPFAIL = "tempfail"
    ERROR = "error"
    SKIPPED = "skipped"


@dataclass(slots=True)
class Session:
    """What the workers need to know of the SMTP session."""

    id: str
    client: str
    helo: str | None = None
    tls: bool = False
    user: str | None = None
    failed_recipients: int = 0


@dataclass(slots=True)
class Check:
    rule: str
    result: Result
    ms: float
    detail: str = ""


@dataclass(slots=True)
class StageRequest:
    stage: Stage
    session: Session
    sender: str | None = None
    recipients: list[str] = field(default_factory=list)
    recipient: str | None = None
    body: bytes | None = None
    body_ref: str | None = None
    auth: dict[str, str] | None = None

    def encode(self) -> bytes:
        s = self.session
        return _pack(
            {
                "v": WIRE_VERSION,
                "stage": self.stage.value,
                "session": [s.id, s.client, s.helo, s.tls, s.user, s.failed_recipients],
                "sender": self.sender,
                "recipients": self.recipients,
                "recipient": self.recipient,
                "body": self.body,
                "body_ref": self.body_ref,
                "auth": self.auth,
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> StageRequest:
        raw = _unpack(data)
        try:
            return cls(
                stage=Stage(raw["stage"]),
                session=Session(*raw["session"]),
                sender=raw["sender"],
                recipients=raw["recipients"],
                recipient=raw["recipient"],
                body=raw["body"],
                body_ref=raw["body_ref"],
                auth=raw["auth"],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise WireError("malformed stage request") from exc


@dataclass(slots=True)
class Verdict:
    """A worker's answer: go on, reject under a rule, or fail for now.

    `values` fill the rule's reply template; `results` carry findings the
    ingress writes into Authentication-Results (spf, iprev, dkim) or needs
    for the session (the AUTH user).
    """

    outcome: Outcome
    rule: Rule | None = None
    values: dict[str, str] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    results: dict[str, str] = field(default_factory=dict)

    def encode(self) -> bytes:
        return _pack(
            {
                "v": WIRE_VERSION,
                "outcome": self.outcome.value,
                "rule": self.rule.value if self.rule else None,
                "values": self.values,
                "checks": [
                    [c.rule, c.result.value, c.ms, c.detail] for c in self.checks
                ],
                "results": self.results,
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> Verdict:
        raw = _unpack(data)
        try:
            return cls(
                outcome=Outcome(raw["outcome"]),
                rule=Rule(raw["rule"]) if raw["rule"] else None,
                values=raw["values"],
                checks=[Check(r, Result(x), ms, d) for r, x, ms, d in raw["checks"]],
                results=raw["results"],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise WireError("malformed verdict") from exc


def _pack(payload: dict[str, Any]) -> bytes:
    return msgpack.packb(payload, use_bin_type=True)  # type: ignore[no-any-return]


def _unpack(data: bytes) -> dict[str, Any]:
    try:
        raw = msgpack.unpackb(data, raw=False)
    except (ValueError, msgpack.UnpackException) as exc:
        raise WireError("not a msgpack message") from exc
    if not isinstance(raw, dict) or raw.get("v") != WIRE_VERSION:
        raise WireError("unknown message version")
    return raw
