"""Running a stage's rules in order and turning what they find into a verdict.

A rule is an async function of the stage's context that returns `PASS`,
a `Reject`, `SKIP` (it does not apply here), or `ACCEPT` (the stage is
decided in the transaction's favour and later rules do not run: SPEC §3,
RCPT steps 4 and 5). A rule whose dependency is down raises
`DependencyUnavailable`; that is 451 4.3.0 unless the operator listed the
rule in `fail_open`. The rule's mode decides what a rejection does:
`enforce` rejects, `monitor` records "would reject" and goes on, `off`
does not run the rule at all.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Generic, TypeVar

from shared import metrics
from shared.errors import DependencyUnavailable
from shared.messages import Check, Outcome, Result, Verdict
from shared.rules import Rule
from shared.settings import Settings

log = logging.getLogger(__name__)


class Decision(Enum):
    PASS = "pass"
    SKIP = "skip"
    ACCEPT = "accept"


PASS = Decision.PASS
SKIP = Decision.SKIP
ACCEPT = Decision.ACCEPT


@dataclass(frozen=True, slots=True)
class Reject:
    """A rule's rejection: the values its reply needs, and why."""

    values: dict[str, str] = field(default_factory=dict)
    detail: str = ""


Ctx = TypeVar("Ctx")
Found = Decision | Reject


@dataclass(frozen=True, slots=True)
class Step(Generic[Ctx]):
    """One rule of a stage; `rule` None for steps without a mode."""

    name: str
    check: Callable[[Ctx], Awaitable[Found]]
    rule: Rule | None = None

    @classmethod
    def of(cls, rule: Rule, check: Callable[[Ctx], Awaitable[Found]]) -> Step[Ctx]:
        """A step that is a rule of the catalog, named for it."""
        return cls(rule.value, check, rule)


async def evaluate(
    steps: Sequence[Step[Ctx]], ctx: Ctx, settings: Settings, stage: str
) -> Verdict:
    """Run the steps in order; the first rejection in force wins."""
    checks: list[Check] = []
    for step in steps:
        if step.rule is not None and settings.mode(step.rule) == "off":
            continue
        started = time.perf_counter()
        try:
            found = await step.check(ctx)
        except DependencyUnavailable as exc:
            ms = _ms(started)
            verdict = _unavailable(step, settings, checks, ms, str(exc), stage)
            if verdict is not None:
                return verdict
            continue
        verdict = _judge(step, settings, checks, found, _ms(started), stage)
        if verdict is not None:
            return verdict
    return Verdict(Outcome.PASS, checks=checks)


def _judge(
    step: Step[Ctx],
    settings: Settings,
    checks: list[Check],
    found: Found,
    ms: float,
    stage: str,
) -> Verdict | None:
    if found is ACCEPT:
        checks.append(Check(step.name, Result.PASS, ms, "accepted here"))
        return Verdict(Outcome.PASS, checks=checks)
    if not isinstance(found, Reject):
        result = Result.SKIPPED if found is SKIP else Result.PASS
        checks.append(Check(step.name, result, ms))
        return None
    if step.rule is not None and settings.mode(step.rule) == "monitor":
        checks.append(Check(step.name, Result.WOULD_REJECT, ms, found.detail))
        metrics.RULE_WOULD_REJECT.labels(rule=step.name).inc()
        return None
    checks.append(Check(step.name, Result.REJECT, ms, found.detail))
    metrics.RULE_REJECTS.labels(rule=step.name, stage=stage).inc()
    return Verdict(Outcome.REJECT, step.rule, found.values, checks)


def _unavailable(
    step: Step[Ctx],
    settings: Settings,
    checks: list[Check],
    ms: float,
    detail: str,
    stage: str,
) -> Verdict | None:
    """SPEC §1: a dependency that is down is 451, unless the rule fails open
    or only monitors (a rule that may not reject may not defer either)."""
    metrics.RULE_ERRORS.labels(rule=step.name).inc()
    lenient = step.rule is not None and (
        settings.fails_open(step.rule) or settings.mode(step.rule) == "monitor"
    )
    if lenient:
        log.warning("%s unavailable, failing open: %s", step.name, detail)
        checks.append(Check(step.name, Result.ERROR, ms, f"fail open: {detail}"))
        return None
    log.warning("%s unavailable: %s", step.name, detail)
    checks.append(Check(step.name, Result.TEMPFAIL, ms, detail))
    return Verdict(Outcome.TEMPFAIL, step.rule, checks=checks)


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000
