"""The order of the reputation checks at each stage (SPEC §3).

The connect and HELO checks read only the session and the lists; the
ingress runs them itself (services/ingress/session_checks.py)."""

from __future__ import annotations

from services.reputation import (
    addresses,
    auth,
    bans,
    dictionary,
    dnsrules,
    helo,
    ratelimit,
    relay,
    verification,
)
from services.reputation.context import Context
from shared.evaluate import Step
from shared.rules import Rule, Stage

STAGES: dict[Stage, list[Step[Context]]] = {
    Stage.AUTH: [
        Step.of(Rule.AUTH_ONCE, auth.auth_once),
    ],
    Stage.MAIL: [
        Step.of(Rule.HELO_REQUIRED, helo.helo_required),
        Step.of(Rule.RATE_LIMIT, ratelimit.rate_limit),
        Step.of(Rule.BANNED_DOMAIN, bans.banned_domain),
    ],
    Stage.RCPT: [
        Step.of(Rule.DICTIONARY_ATTACK, dictionary.dictionary_attack),
        Step.of(Rule.BOUNCE_RECIPIENTS, addresses.bounce_recipients),
        Step.of(Rule.RESTRICTED_CHARACTERS, addresses.restricted_characters),
        Step("postmaster", relay.postmaster),
        Step("trusted_client", relay.trusted_client),
        Step.of(Rule.RELAY, relay.relay),
        Step("approved", addresses.approved),
        Step.of(Rule.RBL, dnsrules.rbl),
        Step.of(Rule.RDNS, dnsrules.rdns),
        Step.of(Rule.SENDER_VERIFICATION, dnsrules.sender_verification),
        Step.of(Rule.UNKNOWN_RECIPIENT, verification.unknown_recipient),
        Step.of(Rule.RECIPIENT_VERIFICATION, verification.recipient_verification),
        Step.of(Rule.SPF, dnsrules.spf),
    ],
}
