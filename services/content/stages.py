"""The end-of-DATA checks, in the order of SPEC §3."""

from __future__ import annotations

from services.content import rules
from services.content.context import Context
from shared.evaluate import Step
from shared.rules import Rule

DATA_STEPS: list[Step[Context]] = [
    Step(Rule.BLOCKED_EXTENSION, rules.blocked_extension, Rule.BLOCKED_EXTENSION),
    Step(Rule.ANTIVIRUS, rules.antivirus, Rule.ANTIVIRUS),
    Step(Rule.ADMIN_PROHIBITED, rules.admin_prohibited, Rule.ADMIN_PROHIBITED),
    Step(Rule.DKIM, rules.dkim, Rule.DKIM),
]
