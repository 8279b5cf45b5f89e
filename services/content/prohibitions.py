"""The admin_prohibited check (SPEC §3, DATA step 3).

A message is administratively prohibited when its Subject matches an entry
of `blocked_subjects` (plain text: a case-insensitive substring; `re:` and a
pattern: a case-insensitive regular expression), or when it carries a
Reply-To header that is empty or only white space. Exemptions
(`empty_reply_exemptions`) are the caller's: it passes `check_reply_to=False`.

Only the header block is read (RFC 5322 §2.1: it ends at the first empty
line), so a 25 MB message costs a search for that line, not a parse.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from email.errors import HeaderParseError
from email.header import decode_header, make_header
from enum import StrEnum

log = logging.getLogger(__name__)

REGEX_PREFIX = "re:"
_END_OF_HEADERS = b"\r\n\r\n"
# Characters that render as nothing: a Reply-To made only of these and white
# space is as empty as a blank one.
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff"))

Header = tuple[str, str]


class Reason(StrEnum):
    BLOCKED_SUBJECT = "blocked subject"
    EMPTY_REPLY_TO = "empty reply-to"


@dataclass(frozen=True, slots=True)
class Prohibition:
    """Why the message is prohibited; `entry` is the blocked_subjects entry
    that matched, for the decision record."""

    reason: Reason
    entry: str = ""


def validate_subject_entry(value: str) -> None:
    """Raise ValueError with a readable message when a blocked_subjects
    entry cannot be used (an empty text or a pattern that does not compile)."""
    if not value.strip():
        raise ValueError("a blocked subject must not be empty")
    if not value.startswith(REGEX_PREFIX):
        return
    try:
        re.compile(value[len(REGEX_PREFIX) :], re.IGNORECASE)
    except re.error as exc:
        raise ValueError(f"not a regular expression: {exc}") from exc


class SubjectRules:
    """The blocked_subjects list, compiled; build it with `subject_rules`."""

    def __init__(self, entries: Iterable[str]) -> None:
        self._texts: list[tuple[str, str]] = []
        self._patterns: list[tuple[str, re.Pattern[str]]] = []
        for entry in entries:
            self._add(entry)

    def _add(self, entry: str) -> None:
        if not entry.startswith(REGEX_PREFIX):
            if entry.strip():
                self._texts.append((entry, entry.casefold()))
            return
        try:
            pattern = re.compile(entry[len(REGEX_PREFIX) :], re.IGNORECASE)
        except re.error as exc:
            log.warning("blocked subject %r is skipped: %s", entry, exc)
            return
        self._patterns.append((entry, pattern))

    def match(self, subject: str) -> str | None:
        """The first entry matching the decoded subject, or None."""
        folded = subject.casefold()
        for entry, text in self._texts:
            if text in folded:
                return entry
        for entry, pattern in self._patterns:
            if pattern.search(subject):
                return entry
        return None


@functools.lru_cache(maxsize=8)
def _compiled(entries: tuple[str, ...]) -> SubjectRules:
    return SubjectRules(entries)


def subject_rules(entries: Iterable[str]) -> SubjectRules:
    """The compiled rules for this list, cached while the list is unchanged."""
    return _compiled(tuple(entries))


def read_headers(message: bytes) -> list[Header]:
    """The header fields, unfolded (RFC 5322 §2.2.3), names in lower case,
    values undecoded."""
    if message.startswith(b"\r\n"):
        return []
    end = message.find(_END_OF_HEADERS)
    block = message[: end if end != -1 else len(message)]
    headers: list[Header] = []
    for line in block.decode("utf-8", errors="replace").split("\r\n"):
        if line[:1] in (" ", "\t") and headers:
            name, value = headers[-1]
            headers[-1] = (name, value + line)
        elif ":" in line:
            name, _, value = line.partition(":")
            headers.append((name.strip().lower(), value.strip()))
    return headers


def decode_words(value: str) -> str:
    """A header value with RFC 2047 encoded-words decoded; undecodable
    words are left as written."""
    if "=?" not in value:
        return value
    try:
        return str(make_header(decode_header(value)))
    except (HeaderParseError, LookupError, UnicodeError, ValueError):
        return value


def blocked_subject(headers: list[Header], rules: SubjectRules) -> Prohibition | None:
    """A Subject (any of them, when there are several) that matches."""
    for name, value in headers:
        if name != "subject":
            continue
        entry = rules.match(decode_words(value))
        if entry is not None:
            return Prohibition(Reason.BLOCKED_SUBJECT, entry)
    return None


def empty_reply_to(headers: list[Header]) -> Prohibition | None:
    """A Reply-To that is present and blank, also once decoded."""
    for name, value in headers:
        if name == "reply-to" and _blank(value):
            return Prohibition(Reason.EMPTY_REPLY_TO)
    return None


def _blank(value: str) -> bool:
    if not value.strip():
        return True
    return not decode_words(value).translate(_INVISIBLE).strip()


def find_prohibition(
    message: bytes, rules: SubjectRules, *, check_reply_to: bool = True
) -> Prohibition | None:
    """The first administrative prohibition the message falls under."""
    headers = read_headers(message)
    found = blocked_subject(headers, rules)
    if found is None and check_reply_to:
        found = empty_reply_to(headers)
    return found
