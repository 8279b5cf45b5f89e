"""admin_prohibited: blocked subjects and an empty Reply-To, read from the
header block only."""

from __future__ import annotations

import logging
import time

import pytest

from services.content.prohibitions import (
    Prohibition,
    Reason,
    find_prohibition,
    read_headers,
    subject_rules,
    validate_subject_entry,
)

ENTRIES = ["Cheap watches", "re:^urgent.*wire\\s+transfer", "re:\\bcasino\\b"]


def message(*headers: str, body: str = "Hello.\r\n") -> bytes:
    lines = ["From: <sender@example.test>", "To: <rcpt@example.test>", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


@pytest.mark.parametrize(
    ("subject", "entry"),
    [
        ("Subject: CHEAP WATCHES for you", "Cheap watches"),
        ("Subject: Buy cheap watches now", "Cheap watches"),
        ("Subject: Urgent: please wire  transfer today", ENTRIES[1]),
        ("Subject: the Casino is open", ENTRIES[2]),
        ("Subject: =?utf-8?B?Q2hlYXAgd2F0Y2hlcw==?=", "Cheap watches"),
        ("Subject: =?iso-8859-1?Q?URGENT_=E0_wire_transfer?=", ENTRIES[1]),
        ("Subject: Buy cheap\r\n watches", "Cheap watches"),
        ("Subject: Grand CASINO \u00fcberall", ENTRIES[2]),
    ],
    ids=[
        "substring-in-other-case",
        "substring-inside",
        "regex",
        "regex-word",
        "rfc2047-base64",
        "rfc2047-quoted-printable-regex",
        "folded",
        "utf8-header",
    ],
)
def test_a_blocked_subject_is_prohibited(subject: str, entry: str) -> None:
    found = find_prohibition(message(subject), subject_rules(ENTRIES))

    assert found == Prohibition(Reason.BLOCKED_SUBJECT, entry)


@pytest.mark.parametrize(
    "subject",
    [
        "Subject: Watches, cheap",
        "Subject: casinos nearby",
        "Subject: wire transfer, not urgent",
        "Subject: =?utf-8?B?bm90aGluZyB0byBzZWU=?=",
    ],
    ids=["words-apart", "regex-word-boundary", "regex-anchor", "encoded-harmless"],
)
def test_a_subject_that_matches_no_entry_passes(subject: str) -> None:
    assert find_prohibition(message(subject), subject_rules(ENTRIES)) is None


def test_any_of_several_subject_headers_is_checked() -> None:
    found = find_prohibition(
        message("Subject: hello", "Subject: cheap watches"), subject_rules(ENTRIES)
    )

    assert found is not None and found.reason is Reason.BLOCKED_SUBJECT


def test_a_subject_in_the_body_is_not_read() -> None:
    body = "Subject: cheap watches\r\nReply-To:\r\n"

    found = find_prohibition(message("Subject: hi", body=body), subject_rules(ENTRIES))

    assert found is None


@pytest.mark.parametrize(
    "reply_to",
    [
        "Reply-To:",
        "Reply-To:    ",
        "Reply-To:\t",
        "Reply-To: \r\n \t",
        "Reply-To: =?utf-8?Q?_?=",
        "Reply-To: =?utf-8?B?IA==?=",
        "Reply-To: =?utf-8?Q?=E2=80=8B?=",
    ],
    ids=[
        "empty",
        "spaces",
        "tab",
        "folded-white-space",
        "encoded-space",
        "encoded-space-base64",
        "encoded-zero-width-space",
    ],
)
def test_a_blank_reply_to_is_prohibited(reply_to: str) -> None:
    found = find_prohibition(message("Subject: hi", reply_to), subject_rules([]))

    assert found == Prohibition(Reason.EMPTY_REPLY_TO)


def test_a_normal_reply_to_passes() -> None:
    headers = ("Subject: hi", "Reply-To: Help Desk <help@example.test>")

    assert find_prohibition(message(*headers), subject_rules([])) is None


def test_a_message_without_reply_to_passes() -> None:
    assert find_prohibition(message("Subject: hi"), subject_rules([])) is None


def test_an_exempt_client_skips_the_reply_to_check() -> None:
    found = find_prohibition(
        message("Reply-To:"), subject_rules([]), check_reply_to=False
    )

    assert found is None


def test_the_subject_rules_are_compiled_once_per_list() -> None:
    first = subject_rules(["a", "re:b+"])

    assert subject_rules(["a", "re:b+"]) is first
    assert subject_rules(["a", "re:c+"]) is not first


def test_a_pattern_that_does_not_compile_is_skipped_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        rules = subject_rules(["re:(unclosed", "spam"])

    assert rules.match("spam here") == "spam"
    assert rules.match("(unclosed") is None
    assert "re:(unclosed" in caplog.text


@pytest.mark.parametrize(
    "entry", ["re:(unclosed", "   ", "re:[z-a]"], ids=["open-group", "blank", "range"]
)
def test_an_unusable_entry_is_refused_with_a_readable_message(entry: str) -> None:
    with pytest.raises(ValueError, match="."):
        validate_subject_entry(entry)


def test_a_usable_entry_is_accepted() -> None:
    validate_subject_entry("re:^(urgent|important)\\b")
    validate_subject_entry("cheap watches")


def test_headers_are_unfolded_and_named_in_lower_case() -> None:
    raw = b"Subject: one\r\n two\r\nX-Empty:\r\n\r\nbody: not a header\r\n"

    assert read_headers(raw) == [("subject", "one two"), ("x-empty", "")]


def test_a_25_mb_message_is_judged_from_its_header_block_alone() -> None:
    big = message("Subject: hi", "Reply-To: <a@example.test>", body="x" * 25_000_000)

    started = time.monotonic()
    found = find_prohibition(big, subject_rules(ENTRIES))

    assert found is None
    assert time.monotonic() - started < 0.1
