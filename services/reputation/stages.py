"""The order of the reputation checks at each stage (SPEC §3)."""

from __future__ import annotations

from services.reputation import helo, relay
from services.reputation.context import Context
from shared.evaluate import Step
from shared.rules import Rule, Stage

STAGES: dict[Stage, list[Step[Context]]] = {
    Stage.CONNECT: [],
    Stage.HELO: [
        Step(Rule.HELO_IP, helo.helo_ip, Rule.HELO_IP),
    ],
    Stage.MAIL: [
        Step(Rule.HELO_REQUIRED, helo.helo_required, Rule.HELO_REQUIRED),
    ],
    Stage.RCPT: [
        Step("postmaster", relay.postmaster),
        Step("trusted_client", relay.trusted_client),
        Step(Rule.RELAY, relay.relay, Rule.RELAY),
    ],
}
