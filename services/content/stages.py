"""The end-of-DATA checks, in the order of SPEC §3."""

from __future__ import annotations

from services.content import rules
from services.content.context import Context
from shared.evaluate import Step
from shared.rules import Rule

DATA_STEPS: list[Step[Context]] = [
    Step.of(Rule.BLOCKED_EXTENSION, rules.blocked_extension),
    Step.of(Rule.ANTIVIRUS, rules.antivirus),
    Step.of(Rule.ADMIN_PROHIBITED, rules.admin_prohibited),
    Step.of(Rule.DKIM, rules.dkim),
]
