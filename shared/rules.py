"""The rule ids of SPEC §2, one per row of the reply catalog."""

from __future__ import annotations

from enum import StrEnum


class Stage(StrEnum):
    """The points of an SMTP transaction where a verdict is asked for."""

    CONNECT = "connect"
    HELO = "helo"
    AUTH = "auth"
    MAIL = "mail"
    RCPT = "rcpt"
    DATA = "data"


class Rule(StrEnum):
    BANNED_IP = "banned_ip"
    AUTH_BRUTEFORCE = "auth_bruteforce"
    HELO_IP = "helo_ip"
    HELO_REQUIRED = "helo_required"
    AUTH_ONCE = "auth_once"
    RATE_LIMIT = "rate_limit"
    BANNED_DOMAIN = "banned_domain"
    DICTIONARY_ATTACK = "dictionary_attack"
    BOUNCE_RECIPIENTS = "bounce_recipients"
    RESTRICTED_CHARACTERS = "restricted_characters"
    RELAY = "relay"
    RBL = "rbl"
    RDNS = "rdns"
    SENDER_VERIFICATION = "sender_verification"
    UNKNOWN_RECIPIENT = "unknown_recipient"
    RECIPIENT_VERIFICATION = "recipient_verification"
    SPF = "spf"
    BLOCKED_EXTENSION = "blocked_extension"
    ANTIVIRUS = "antivirus"
    ADMIN_PROHIBITED = "admin_prohibited"
    DKIM = "dkim"
