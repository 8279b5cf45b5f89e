"""The end-of-DATA checks, in the order of SPEC §3."""

from __future__ import annotations

from services.content.context import Context
from shared.evaluate import Step

DATA_STEPS: list[Step[Context]] = []
