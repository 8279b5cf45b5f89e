"""The order of the reputation checks at each stage (SPEC §3)."""

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
    Stage.CONNECT: [
        Step(Rule.BANNED_IP, bans.banned_ip, Rule.BANNED_IP),
        Step(Rule.AUTH_BRUTEFORCE, bans.auth_blacklisted, Rule.AUTH_BRUTEFORCE),
    ],
    Stage.HELO: [
        Step(Rule.HELO_IP, helo.helo_ip, Rule.HELO_IP),
    ],
    Stage.AUTH: [
        Step(Rule.AUTH_ONCE, auth.auth_once, Rule.AUTH_ONCE),
    ],
    Stage.MAIL: [
        Step(Rule.HELO_REQUIRED, helo.helo_required, Rule.HELO_REQUIRED),
        Step(Rule.RATE_LIMIT, ratelimit.rate_limit, Rule.RATE_LIMIT),
        Step(Rule.BANNED_DOMAIN, bans.banned_domain, Rule.BANNED_DOMAIN),
    ],
    Stage.RCPT: [
        Step(
            Rule.DICTIONARY_ATTACK, dictionary.dictionary_attack, Rule.DICTIONARY_ATTACK
        ),
        Step(
            Rule.BOUNCE_RECIPIENTS, addresses.bounce_recipients, Rule.BOUNCE_RECIPIENTS
        ),
        Step(
            Rule.RESTRICTED_CHARACTERS,
            addresses.restricted_characters,
            Rule.RESTRICTED_CHARACTERS,
        ),
        Step("postmaster", relay.postmaster),
        Step("trusted_client", relay.trusted_client),
        Step(Rule.RELAY, relay.relay, Rule.RELAY),
        Step("approved", addresses.approved),
        Step(Rule.RBL, dnsrules.rbl, Rule.RBL),
        Step(Rule.RDNS, dnsrules.rdns, Rule.RDNS),
        Step(
            Rule.SENDER_VERIFICATION,
            dnsrules.sender_verification,
            Rule.SENDER_VERIFICATION,
        ),
        Step(
            Rule.UNKNOWN_RECIPIENT,
            verification.unknown_recipient,
            Rule.UNKNOWN_RECIPIENT,
        ),
        Step(
            Rule.RECIPIENT_VERIFICATION,
            verification.recipient_verification,
            Rule.RECIPIENT_VERIFICATION,
        ),
        Step(Rule.SPF, dnsrules.spf, Rule.SPF),
    ],
}
