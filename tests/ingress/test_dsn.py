"""The bounce (RFC 3464, RFC 6522): read back with the standard library's
parser, it is a multipart/report of three parts whatever the route
answered and whatever the original held, and it stays small."""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import Iterator
from email.message import EmailMessage, Message, MIMEPart
from email.utils import parsedate_to_datetime

import pytest

from services.ingress import dsn
from services.ingress.dsn import HEADERS_LIMIT, Failure, bounce

HOST = "mx.example.org"
QUEUE_ID = "0123456789ABCDEF"
SENDER = "alice@sender.example"
RECEIVED = 1_700_000_000.0
NOW = RECEIVED + 3600
BODY_MARKER = b"BODY-MARKER-7f3a"
HEADERS = (
    b"From: Alice <alice@sender.example>\r\n"
    b"To: bob@example.com\r\n"
    b"Subject: quarterly figures\r\n"
    b"Message-ID: <1234@sender.example>\r\n"
)
ORIGINAL = HEADERS + b"\r\n" + BODY_MARKER + b"\r\nsecond body line\r\n"
BARE_LINE_END = re.compile(rb"\r(?!\n)|(?<!\r)\n")


def make(
    failures: list[Failure] | None = None,
    original: bytes = ORIGINAL,
    sender: str = SENDER,
) -> bytes:
    if failures is None:
        failures = [Failure("bob@example.com", 550, "5.1.1 no such user", "mx.ex")]
    return bounce(
        hostname=HOST,
        queue_id=QUEUE_ID,
        sender=sender,
        received=RECEIVED,
        failures=failures,
        original=original,
        now=NOW,
    )


def parse(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def parts(raw: bytes) -> list[MIMEPart]:
    return list(parse(raw).iter_parts())


def blocks(raw: bytes) -> list[Message]:
    """The delivery-status field blocks: per-message, then per recipient."""
    payload = parts(raw)[1].get_payload()
    assert isinstance(payload, list)
    assert all(isinstance(block, Message) for block in payload)
    return [block for block in payload if isinstance(block, Message)]


def body(part: Message) -> bytes:
    payload = part.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload


def raw_bodies(raw: bytes) -> list[bytes]:
    """The parts' bodies as written, split at the delimiters by hand."""
    boundary = parse(raw).get_boundary()
    assert boundary is not None
    pieces = raw.split(b"\r\n--" + boundary.encode())
    assert pieces[-1] == b"--\r\n"
    return [piece.split(b"\r\n\r\n", 1)[1] for piece in pieces[1:-1]]


def top_headers(raw: bytes) -> bytes:
    return raw.split(b"\r\n\r\n", 1)[0]


# The structure


def test_a_bounce_is_a_multipart_report_of_three_parts_in_order() -> None:
    message = parse(make())

    assert message.get_content_type() == "multipart/report"
    assert message.get_param("report-type") == "delivery-status"
    assert [part.get_content_type() for part in message.iter_parts()] == [
        "text/plain",
        "message/delivery-status",
        "text/rfc822-headers",
    ]
    assert message.defects == []
    assert all(part.defects == [] for part in message.iter_parts())


def test_the_top_level_fields_address_the_sender_from_the_mailer_daemon() -> None:
    message = parse(make())

    assert message["From"] == f"Mail Delivery System <MAILER-DAEMON@{HOST}>"
    assert message["To"] == SENDER
    assert message["Subject"] == "Undelivered Mail Returned to Sender"
    assert message["Date"].datetime.timestamp() == NOW
    assert re.fullmatch(rf"<[^<>@\s]+@{re.escape(HOST)}>", message["Message-ID"])
    assert message["MIME-Version"] == "1.0"
    assert message["Auto-Submitted"] == "auto-replied"
    assert message["X-Perimeter-Queue-Id"] == QUEUE_ID


def test_every_bounce_has_its_own_message_id_and_boundary() -> None:
    first, second = parse(make()), parse(make())

    assert first["Message-ID"] != second["Message-ID"]
    assert first.get_boundary() != second.get_boundary()


# Part 1: the text


def test_the_text_names_each_recipient_with_the_answer_and_the_queue_id() -> None:
    failures = [
        Failure("bob@example.com", 550, "5.1.1 no such user\nsee the FAQ", "mx.ex"),
        Failure("carol@example.com", 451, "4.4.7 gave up after 5 days"),
    ]
    text = parts(make(failures))[0].get_content()

    assert QUEUE_ID in text
    assert "<bob@example.com>: mx.ex answered:\r\n" in text
    assert "    550 5.1.1 no such user\r\n    see the FAQ\r\n" in text
    assert "<carol@example.com>: delivery failed:\r\n" in text
    assert "    451 4.4.7 gave up after 5 days\r\n" in text


def test_the_lines_we_write_are_under_78_characters() -> None:
    text = parts(make())[0].get_content()

    assert all(len(line) < 78 for line in text.split("\r\n"))


# Part 2: the delivery status


def test_the_per_message_fields_name_us_and_the_arrival() -> None:
    per_message = blocks(make())[0]

    assert per_message["Reporting-MTA"] == f"dns; {HOST}"
    assert parsedate_to_datetime(per_message["Arrival-Date"]).timestamp() == RECEIVED


def test_each_recipient_has_its_fields_and_a_remote_mta_only_when_known() -> None:
    failures = [
        Failure("bob@example.com", 550, "5.1.1 no such user", "mx.example.com"),
        Failure("carol@example.com", 451, "gave up after max age"),
    ]
    bob, carol = blocks(make(failures))[1:]

    assert bob.items() == [
        ("Final-Recipient", "rfc822; bob@example.com"),
        ("Action", "failed"),
        ("Status", "5.1.1"),
        ("Remote-MTA", "dns; mx.example.com"),
        ("Diagnostic-Code", "smtp; 550 5.1.1 no such user"),
    ]
    assert carol.items() == [
        ("Final-Recipient", "rfc822; carol@example.com"),
        ("Action", "failed"),
        ("Status", "4.0.0"),
        ("Diagnostic-Code", "smtp; 451 gave up after max age"),
    ]


@pytest.mark.parametrize(
    ("code", "text", "status"),
    [
        (550, "5.1.1 no such user", "5.1.1"),
        (554, "5.7.1 rejected by policy", "5.7.1"),
        (452, "4.2.2 mailbox full", "4.2.2"),
        (451, "4.4.7 gave up after max age", "4.4.7"),
        (550, "5.1.10 null MX", "5.1.10"),
        (550, "  5.2.1 leading space", "5.2.1"),
        (550, "no such user", "5.0.0"),
        (451, "gave up after max age", "4.0.0"),
        (550, "4.2.2 class does not match", "5.0.0"),
        (451, "5.7.1 class does not match", "4.0.0"),
        (550, "2.0.0 not a failure class", "5.0.0"),
        (550, "5.1.1. ends a sentence", "5.1.1"),
        (550, "5.1.1.1 not a code", "5.0.0"),
        (550, "5.1.1234 not a code", "5.0.0"),
        (550, "see 5.1.1 later in the text", "5.0.0"),
        (550, "", "5.0.0"),
    ],
)
def test_the_status_is_the_enhanced_code_when_it_agrees_else_derived(
    code: int, text: str, status: str
) -> None:
    recipient = blocks(make([Failure("bob@example.com", code, text)]))[1]

    assert recipient["Status"] == status


def test_the_diagnostic_code_is_the_reply_unfolded_in_ascii() -> None:
    text = "5.7.1 refusé\r\nsecond line\rthird\nfourth"
    raw = make([Failure("bob@example.com", 554, text, "mx.example.com")])

    assert blocks(raw)[1]["Diagnostic-Code"] == (
        "smtp; 554 5.7.1 refus? second line third fourth"
    )
    assert raw_bodies(raw)[1].isascii()


def test_a_long_diagnostic_code_is_folded_into_short_lines() -> None:
    text = "5.7.1 " + " ".join(f"word{n}" for n in range(60))
    raw = make([Failure("bob@example.com", 554, text)])
    status = raw_bodies(raw)[1]

    assert all(len(line) <= 78 for line in status.split(b"\r\n"))
    assert blocks(raw)[1]["Diagnostic-Code"] == f"smtp; 554 {text}"


def test_a_non_ascii_recipient_has_the_utf8_address_type() -> None:
    raw = make([Failure("jörg+1=2@bücher.example", 550, "5.1.1 unknown")])
    recipient = blocks(raw)[1]

    # RFC 6533 §3: utf-8-addr-xtext, so the part stays 7-bit.
    assert recipient["Final-Recipient"] == (
        "utf-8; j\\x{F6}rg\\x{2B}1\\x{3D}2@b\\x{FC}cher.example"
    )
    assert raw_bodies(raw)[1].isascii()
    assert "<jörg+1=2@bücher.example>" in parts(raw)[0].get_content()


# Part 3: the original's headers


def test_the_headers_part_holds_the_headers_and_not_the_body() -> None:
    raw = make()
    headers = body(parts(raw)[2])

    assert headers == HEADERS
    assert BODY_MARKER not in raw


def test_a_25_mb_original_gives_a_bounce_under_100_kb() -> None:
    original = HEADERS + b"\r\n" + (BODY_MARKER + b"x" * 990 + b"\r\n") * 25_000
    assert len(original) > 25_000_000

    raw = make(original=original)

    assert len(raw) < 100_000
    assert body(parts(raw)[2]) == HEADERS
    assert BODY_MARKER not in raw


def test_an_original_without_an_empty_line_is_all_headers_up_to_the_cap() -> None:
    lines = [f"X-Line: {n:07d} {'y' * 60}\r\n".encode() for n in range(400_000)]
    original = b"".join(lines)  # 29 MB, no empty line

    raw = make(original=original)
    headers = body(parts(raw)[2])

    assert len(raw) < 100_000
    assert HEADERS_LIMIT - len(lines[0]) < len(headers) <= HEADERS_LIMIT
    # Cut at a line end: whole lines only.
    assert headers == b"".join(lines[: len(headers) // len(lines[0])])


def test_a_short_original_without_an_empty_line_comes_back_whole() -> None:
    raw = make(original=b"Subject: no body\r\nFrom: a@b")

    assert body(parts(raw)[2]) == b"Subject: no body\r\nFrom: a@b\r\n"


def test_an_original_with_one_huge_line_is_cut_inside_it() -> None:
    raw = make(original=b"X-Huge: " + b"z" * 1_000_000)
    headers = body(parts(raw)[2])

    assert len(headers) == HEADERS_LIMIT
    assert headers.startswith(b"X-Huge: zzz") and headers.endswith(b"z\r\n")


def test_an_empty_original_gives_an_empty_headers_part() -> None:
    raw = make(original=b"")

    assert len(parts(raw)) == 3
    assert body(parts(raw)[2]) == b""


def test_an_original_that_starts_with_the_empty_line_has_no_headers() -> None:
    raw = make(original=b"\r\n" + BODY_MARKER + b"\r\n\r\nmore body\r\n")

    assert body(parts(raw)[2]) == b""
    assert BODY_MARKER not in raw


def test_8bit_header_bytes_are_kept_as_they_are() -> None:
    headers = b"Subject: caf\xc3\xa9 \xff\xfe\r\nFrom: a@b\r\n"
    raw = make(original=headers + b"\r\nbody\r\n")

    assert body(parts(raw)[2]) == headers
    assert top_headers(raw).isascii()


# Robustness: nothing from outside breaks the structure


def _tokens(*values: str) -> Iterator[str]:
    yield from values


def test_a_remote_text_cannot_inject_a_boundary_or_a_line_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The route "knows" the boundary the first draw gives; it gets another.
    tokens = _tokens("guessed", "fresh")
    monkeypatch.setattr(dsn, "_token", lambda: next(tokens))
    evil = (
        "5.1.1 no\r\n--=_perimeter_guessed\r\nContent-Type: text/html\r\n\r\n"
        "<b>fake</b>\r--=_perimeter_guessed--\nbare\rCR and bare\nLF\r\n\r\n"
    )
    raw = make([Failure("bob@example.com", 550, evil, "mx.example.com")])
    message = parse(raw)

    assert message.get_boundary() == "=_perimeter_fresh"
    assert len(list(message.iter_parts())) == 3
    assert not re.search(rb"(?m)^--=_perimeter_guessed", raw)
    assert not BARE_LINE_END.search(raw)
    text = message.get_body(("plain",))
    assert text is not None
    assert "    --=_perimeter_guessed--\r\n" in text.get_content()
    assert "    bare\r\n    CR and bare\r\n    LF\r\n" in text.get_content()
    assert blocks(raw)[1]["Status"] == "5.1.1"


def test_a_boundary_found_in_the_original_headers_is_drawn_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tokens = _tokens("guessed", "fresh")
    monkeypatch.setattr(dsn, "_token", lambda: next(tokens))
    original = b"Subject: x\r\n--=_perimeter_guessed--\r\n\r\nbody\r\n"

    message = parse(make(original=original))

    assert message.get_boundary() == "=_perimeter_fresh"
    assert len(list(message.iter_parts())) == 3


def test_controls_in_addresses_and_hosts_cannot_start_a_line() -> None:
    failure = Failure("bob@example.com\r\nX-Evil: 1", 550, "no", "mx\r\n--x")
    raw = make([failure], sender="alice@sender.example\r\nBcc: eve@evil.example")
    message = parse(raw)

    assert message["Bcc"] is None
    assert len(list(message.iter_parts())) == 3
    recipient = blocks(raw)[1]
    assert recipient["X-Evil"] is None
    assert recipient["Final-Recipient"] == "rfc822; bob@example.comX-Evil: 1"
    assert recipient["Remote-MTA"] == "dns; mx--x"
    assert not BARE_LINE_END.search(raw)


@pytest.mark.parametrize(
    "original",
    [
        ORIGINAL,
        b"",
        b"Subject: x",
        b"Subject: bare\nLF: 1\rCR: 2\r\n\r\nbody\n",
        b"A: 1\n\nbody",
    ],
    ids=["usual", "empty", "no-line-end", "bare-ends", "lf-only"],
)
def test_every_line_ends_with_crlf(original: bytes) -> None:
    failures = [Failure("bob@example.com", 550, "one\ntwo\rthree\r\n", "mx.ex")]
    raw = make(failures, original=original)

    assert not BARE_LINE_END.search(raw)
    assert raw.endswith(b"\r\n")
    assert len(parts(raw)) == 3


def test_the_top_level_headers_are_ascii_for_a_non_ascii_sender() -> None:
    raw = make(
        [Failure("jörg@bücher.example", 550, "5.1.1 unbekannt: Jörg")],
        original=b"Subject: \xc3\xa9t\xc3\xa9\r\n\r\nbody\r\n",
        sender="zoë@bücher.example",
    )
    message = parse(raw)

    assert top_headers(raw).isascii()
    # An encoded-word shows the address; the domain is in A-labels.
    assert "zoë@xn--bcher-kva.example" in str(message["To"])
    assert len(list(message.iter_parts())) == 3


def test_an_internationalised_sender_domain_becomes_a_labels() -> None:
    message = parse(make(sender="zoe@bücher.example"))

    assert message["To"] == "zoe@xn--bcher-kva.example"


def test_very_long_texts_keep_every_line_within_998_octets() -> None:
    failures = [
        Failure("bob@example.com", 550, "5.1.1 " + "é" * 50_000, "mx.example.com"),
        Failure("carol@example.com", 550, "5.1.1 " + "long words " * 10_000),
        Failure("dan@example.com", 550, "x\n" * 10_000),
    ]
    raw = make(failures)

    assert len(raw) < 100_000
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    assert [block["Status"] for block in blocks(raw)[1:]] == ["5.1.1"] * 2 + ["5.0.0"]


def test_a_very_long_non_ascii_recipient_still_fits_a_line() -> None:
    raw = make([Failure("😀" * 300 + "@example.com", 550, "no")])

    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    assert blocks(raw)[1]["Final-Recipient"].startswith("utf-8; \\x{1F600}")


# What the caller must not ask for


@pytest.mark.parametrize("sender", ["", "<>"])
def test_the_null_sender_gets_no_bounce(sender: str) -> None:
    # RFC 5321 §4.5.5: notices are sent with the null reverse-path, and a
    # message that had one is never answered, so bounces cannot loop.
    with pytest.raises(ValueError):
        make(sender=sender)


def test_a_bounce_needs_a_failure() -> None:
    with pytest.raises(ValueError):
        make([])
