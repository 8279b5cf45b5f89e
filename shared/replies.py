"""The reply catalog of SPEC §2: the only place reply texts live.

A `Reply` pairs an SMTP code with its RFC 3463 enhanced status code and a
text template. The class of the two must agree (a 5xx reply carries a 5.x.x
code, a 4xx a 4.x.x), which `Reply` checks when the catalog is built, so a
permanent rejection cannot be written with a temporary status by mistake.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Any

from shared.rules import Rule


@dataclass(frozen=True, slots=True)
class Reply:
    code: int
    status: str
    text: str
    close: bool = False

    def __post_init__(self) -> None:
        klass = self.code // 100
        if klass not in (2, 3, 4, 5):
            raise ValueError(f"{self.code} is not an SMTP reply code")
        if klass in (2, 4, 5) and not self.status.startswith(f"{klass}."):
            raise ValueError(f"{self.code} cannot carry status {self.status}")

    @property
    def fields(self) -> frozenset[str]:
        """The `{…}` names the text asks for."""
        names = (f for _, f, _, _ in string.Formatter().parse(self.text) if f)
        return frozenset(names)

    def render(self, **values: Any) -> str:
        """The reply line as the client reads it."""
        text = self.text.format(**values)
        return " ".join(part for part in (str(self.code), self.status, text) if part)

    @property
    def permanent(self) -> bool:
        return self.code >= 500

    @property
    def temporary(self) -> bool:
        return 400 <= self.code < 500


RULE_REPLIES: dict[Rule, Reply] = {
    Rule.BANNED_IP: Reply(554, "5.7.1", "The sender {ip} is banned", close=True),
    Rule.AUTH_BRUTEFORCE: Reply(
        554,
        "5.7.1",
        "The sender is blacklisted due to repeated auth failures",
        close=True,
    ),
    Rule.HELO_IP: Reply(550, "5.7.1", "The sender presented HELO as an IP address"),
    Rule.HELO_REQUIRED: Reply(
        503, "5.5.1", "The sender did not present a HELO/EHLO greeting"
    ),
    Rule.AUTH_ONCE: Reply(
        503, "5.5.1", "Authentication is allowed only once per message"
    ),
    Rule.RATE_LIMIT: Reply(451, "4.7.1", "You can only send {limit} msgs per {period}"),
    Rule.BANNED_DOMAIN: Reply(550, "5.7.1", "The domain {domain} is banned"),
    Rule.DICTIONARY_ATTACK: Reply(
        550, "5.7.1", "Dictionary attack detected", close=True
    ),
    Rule.BOUNCE_RECIPIENTS: Reply(
        550,
        "5.7.1",
        "Legitimate bounces are never sent to more than one recipient.",
        close=True,
    ),
    Rule.RESTRICTED_CHARACTERS: Reply(550, "5.1.3", "Restricted characters in address"),
    Rule.RELAY: Reply(550, "5.7.1", "Relay not permitted"),
    Rule.RBL: Reply(554, "5.7.1", "The sender is in a black list {zone}"),
    Rule.RDNS: Reply(550, "5.7.25", "The sender {ip} has no reverse DNS record"),
    Rule.SENDER_VERIFICATION: Reply(550, "5.1.7", "Sender verification failed"),
    Rule.UNKNOWN_RECIPIENT: Reply(550, "5.1.1", "The email address does not exist"),
    Rule.RECIPIENT_VERIFICATION: Reply(550, "5.1.1", "Recipient verification failed"),
    Rule.SPF: Reply(550, "5.7.23", "The message failed SPF checks"),
    Rule.BLOCKED_EXTENSION: Reply(554, "5.7.1", "Blacklisted file extension detected."),
    Rule.ANTIVIRUS: Reply(
        554, "5.7.1", "The message was rejected due to security policies"
    ),
    Rule.ADMIN_PROHIBITED: Reply(
        550, "5.7.1", "This message is administratively prohibited"
    ),
    Rule.DKIM: Reply(550, "5.7.20", "DKIM failure: {reason}"),
}

TEMPORARY_FAILURE = Reply(451, "4.3.0", "Temporary failure, please try again later")
AUTH_INVALID = Reply(535, "5.7.8", "Authentication credentials invalid")
AUTH_NEEDS_TLS = Reply(
    538, "5.7.11", "Encryption required for requested authentication mechanism"
)
AUTH_OK = Reply(235, "2.7.0", "Authentication successful")
TOO_BIG = Reply(552, "5.3.4", "Message size exceeds fixed maximum message size")
TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "Too many recipients")
QUEUED = Reply(250, "2.0.0", "Ok: queued as {id}")
SHUTTING_DOWN = Reply(421, "4.3.2", "Service shutting down", close=True)

# Protocol replies the catalog of SPEC §2 does not list; RFC 5321 §4.2 and
# RFC 3463 give their codes.
OK = Reply(250, "2.0.0", "Ok")
SENDER_OK = Reply(250, "2.1.0", "Ok")
RECIPIENT_OK = Reply(250, "2.1.5", "Ok")
START_DATA = Reply(354, "", "End data with <CR><LF>.<CR><LF>")
BAD_SEQUENCE = Reply(503, "5.5.1", "Bad sequence of commands")
NESTED_MAIL = Reply(503, "5.5.1", "Sender already specified")
NEED_MAIL = Reply(503, "5.5.1", "Need MAIL command")
NEED_RCPT = Reply(503, "5.5.1", "Need RCPT command")
SYNTAX_ERROR = Reply(501, "5.5.4", "Syntax error in parameters or arguments")
BAD_ADDRESS = Reply(553, "5.1.3", "Malformed address")
AUTH_MALFORMED = Reply(501, "5.5.2", "Cannot decode the authentication data")
AUTH_UNKNOWN_MECHANISM = Reply(504, "5.5.4", "Unrecognized authentication type")
TIMEOUT = Reply(421, "4.4.2", "Timeout exceeded, closing connection", close=True)
