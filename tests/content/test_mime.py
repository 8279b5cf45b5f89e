"""The offsets-based MIME walk: it must see the parts the stdlib parser sees
(type, fields, decoded payload) on well-formed and awkward messages alike,
and its memory must not grow with the message."""

from __future__ import annotations

import base64
import email
import email.policy
import os
import tracemalloc
from email.message import Message

import pytest

from services.content import mime
from services.content.mime import MimeLimits, MimeTooComplex


def stdlib_parts(message: bytes) -> list[tuple[str, list[str], bytes]]:
    root = email.message_from_bytes(message, policy=email.policy.compat32)
    return [_summary_stdlib(part) for part in root.walk()]


def _summary_stdlib(part: Message) -> tuple[str, list[str], bytes]:
    names = [str(v) for v in part.get_all("content-disposition", [])]
    payload = b"" if part.is_multipart() else part.get_payload(decode=True) or b""
    return part.get_content_type(), names, payload


def walked_parts(message: bytes) -> list[tuple[str, list[str], bytes]]:
    return [_summary_walk(part) for part in mime.walk(message)]


def _summary_walk(part: mime.Part) -> tuple[str, list[str], bytes]:
    names = part.get_all("content-disposition")
    if part.boundary is not None or part.encapsulates:
        return part.content_type, names, b""
    body = bytes(part.body)
    if part.encoding == "base64":
        body = base64.b64decode(body)
    return part.content_type, names, body


def crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode()


B64 = base64.encodebytes(b"PK\x03\x04 some zip bytes" * 40).decode()

CASES = {
    "single-part": crlf("Subject: x\n\nhello\n"),
    "no-body": crlf("Subject: x\n"),
    "multipart-with-preamble-and-epilogue": crlf(
        'Content-Type: multipart/mixed; boundary="b"\n\n'
        "preamble\n--b\nContent-Type: text/plain\n\none\n"
        "--b\nContent-Disposition: attachment; filename=a.zip\n"
        f"Content-Transfer-Encoding: base64\n\n{B64}--b--\nepilogue\n"
    ),
    "nested-multiparts-with-prefix-boundaries": crlf(
        'Content-Type: multipart/mixed; boundary="b"\n\n'
        '--b\nContent-Type: multipart/alternative; boundary="bb"\n\n'
        "--bb\n\nplain\n--bb\nContent-Type: text/html\n\n<p>x</p>\n--bb--\n"
        '--b\nContent-Disposition: attachment;\n filename="folded.txt"\n\nfile\n'
        "--b--\n"
    ),
    "transport-padding-after-delimiters": crlf(
        'Content-Type: multipart/mixed; boundary="b"\n\n'
        "--b  \n\none\n--b\t\n\ntwo\n--b-- \n"
    ),
    "a-line-that-only-starts-with-the-delimiter": crlf(
        'Content-Type: multipart/mixed; boundary="b"\n\n--b\n\n--bx is text\n--b--\n'
    ),
    "no-close-delimiter": crlf(
        'Content-Type: multipart/mixed; boundary="b"\n\n'
        "--b\n\none\n--b\nContent-Type: text/csv\n\ntwo\n"
    ),
    "empty-parts": crlf(
        'Content-Type: multipart/mixed; boundary="b"\n\n--b\n\n--b\n\n\n--b--\n'
    ),
    "multipart-without-boundary": crlf("Content-Type: multipart/mixed\n\n--b\n\nx\n"),
    "forwarded-message": crlf(
        'Content-Type: multipart/mixed; boundary="b"\n\n'
        "--b\nContent-Type: message/rfc822\n\n"
        'Subject: inner\nContent-Type: multipart/mixed; boundary="c"\n\n'
        "--c\nContent-Disposition: attachment; filename=inner.pdf\n\n%PDF\n--c--\n"
        "--b--\n"
    ),
    "digest-parts-default-to-messages": crlf(
        'Content-Type: multipart/digest; boundary="d"\n\n'
        "--d\n\nSubject: one\n\nfirst\n--d\n\nSubject: two\n\nsecond\n--d--\n"
    ),
    "part-headers-without-blank-line": crlf(
        'Content-Type: multipart/mixed; boundary="b"\n\n'
        "--b\nContent-Type: text/plain\nthis line is not a header\n--b--\n"
    ),
    "bare-lf-line-ends": (
        b'Content-Type: multipart/mixed; boundary="b"\n\n'
        b"--b\nContent-Disposition: attachment; filename=x.bin\n\nbinary\n--b--\n"
    ),
    "rfc2231-boundary": crlf(
        'Content-Type: multipart/mixed; boundary*0="ab"; boundary*1="cd"\n\n'
        "--abcd\n\none\n--abcd--\n"
    ),
}


@pytest.mark.parametrize("message", CASES.values(), ids=CASES.keys())
def test_the_walk_sees_the_parts_the_stdlib_parser_sees(message: bytes) -> None:
    assert walked_parts(message) == stdlib_parts(message)


def test_a_part_body_is_a_view_into_the_message_not_a_copy() -> None:
    message = CASES["multipart-with-preamble-and-epilogue"]
    parts = list(mime.walk(message))
    attachment = parts[-1]
    assert attachment.body.obj is message
    assert bytes(attachment.body).startswith(B64[:20].encode())


def test_rfc2231_names_and_folded_fields_are_read() -> None:
    message = crlf(
        "Content-Type: application/pdf;\n\tname*=utf-8''%E2%82%AC.pdf\n\nx\n"
    )
    (part,) = mime.walk(message)
    assert part.content_type == "application/pdf"
    assert part.param("name") == "€.pdf"


def test_too_many_parts_or_levels_raise_as_the_walk_reaches_them() -> None:
    flat = "".join("--b\n\nx\n" for _ in range(50))
    message = crlf(f'Content-Type: multipart/mixed; boundary="b"\n\n{flat}--b--\n')
    assert len(list(mime.walk(message, MimeLimits(max_parts=51)))) == 51
    with pytest.raises(MimeTooComplex, match="more than 50 MIME parts"):
        list(mime.walk(message, MimeLimits(max_parts=50)))

    nested = "x"
    for level in range(5):
        head = f'Content-Type: multipart/mixed; boundary="l{level}"\n\n'
        nested = f"{head}--l{level}\n{nested}\n--l{level}--"
    deep = crlf(nested + "\n")
    assert len(list(mime.walk(deep, MimeLimits(max_depth=5)))) == 6
    with pytest.raises(MimeTooComplex, match="deeper than 4"):
        list(mime.walk(deep, MimeLimits(max_depth=4)))


def test_a_header_block_made_huge_costs_no_memory_per_field() -> None:
    fields = "Content-Disposition: inline\n" * 200
    message = crlf(f"{fields}\nbody\n")
    with pytest.raises(MimeTooComplex, match="more than 100 header fields"):
        list(mime.walk(message))

    long_value = crlf(f"Content-Type: text/plain; x={'a' * 100_000}\n\nbody\n")
    (part,) = mime.walk(long_value)
    assert len(part.get("content-type")) == MimeLimits().max_field_bytes
    assert bytes(part.body) == b"body\r\n"


def test_walking_a_25_mb_message_allocates_its_header_blocks_only() -> None:
    payload = base64.encodebytes(os.urandom(18_000_000)).replace(b"\n", b"\r\n")
    message = (
        crlf(
            'Subject: big\nContent-Type: multipart/mixed; boundary="b"\n\n'
            "--b\n\nsee attached\n--b\nContent-Type: application/pdf\n"
            "Content-Transfer-Encoding: base64\n\n"
        )
        + payload
        + b"--b--\r\n"
    )
    assert len(message) > 24_000_000
    tracemalloc.start()
    try:
        parts = list(mime.walk(message))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    kinds = [p.content_type for p in parts]
    assert kinds == ["multipart/mixed", "text/plain", "application/pdf"]
    assert peak < 100_000, f"the walk allocated {peak} bytes"
