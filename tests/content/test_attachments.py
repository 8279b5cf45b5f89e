"""blocked_extension: attachment names, zip archives, and the bounds that
keep a MIME or zip bomb from costing more than a fixed amount of work."""

from __future__ import annotations

import base64
import io
import os
import time
import zipfile

import pytest

from services.content.archives import ArchiveLimits
from services.content.attachments import (
    Finding,
    Limits,
    Reason,
    extension,
    find_blocked_attachment,
)

BLOCKED = ["exe", "pif", "bat", "scr", "lnk", "com"]
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << >>\n%%EOF\n"


def message(*parts: str, boundary: str = "b") -> bytes:
    """A multipart/mixed message whose parts are written out in full."""
    body = "".join(f"--{boundary}\r\n{part}\r\n" for part in parts)
    head = (
        "From: <sender@example.test>\r\n"
        "To: <rcpt@example.test>\r\n"
        "Subject: files\r\n"
        "MIME-Version: 1.0\r\n"
        f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n'
    )
    return f"{head}{body}--{boundary}--\r\n".encode()


def attachment(headers: str, payload: bytes = b"MZ payload") -> str:
    """One base64 part; `headers` are its header lines."""
    encoded = base64.encodebytes(payload).decode().replace("\n", "\r\n")
    return f"{headers}\r\nContent-Transfer-Encoding: base64\r\n\r\n{encoded}"


def named(filename_param: str) -> str:
    """An attachment whose Content-Disposition carries `filename_param`."""
    return attachment(
        "Content-Type: application/octet-stream\r\n"
        f"Content-Disposition: attachment; {filename_param}"
    )


def zipped(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def zip_part(data: bytes, name: str = "files.zip") -> str:
    return attachment(
        f'Content-Type: application/zip; name="{name}"\r\n'
        f'Content-Disposition: attachment; filename="{name}"',
        data,
    )


def nested_zip(levels: int, innermost: dict[str, bytes]) -> bytes:
    data = zipped(innermost)
    for level in range(levels - 1):
        data = zipped({f"level{level}.zip": data})
    return data


def encrypted_flag(data: bytes) -> bytes:
    """The same zip with every entry marked encrypted (APPNOTE 4.4.4 bit 0),
    as an archive made with a password has it."""
    raw = bytearray(data)
    for magic, flag_offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        start = raw.find(magic)
        while start != -1:
            raw[start + flag_offset] |= 0x01
            start = raw.find(magic, start + 4)
    return bytes(raw)


def truncated(data: bytes) -> bytes:
    """The zip cut before its central directory."""
    return data[: data.find(b"PK\x01\x02")]


def forwarded(inner: bytes) -> str:
    return f"Content-Type: message/rfc822\r\n\r\n{inner.decode()}"


BLOCKED_CASES = [
    pytest.param(named('filename="setup.exe"'), "setup.exe", id="plain-name"),
    pytest.param(
        named("filename*=utf-8''%E2%82%AC-setup.exe"),
        "€-setup.exe",
        id="rfc2231-encoded",
    ),
    pytest.param(
        named('filename*0="set"; filename*1="up.e"; filename*2="xe"'),
        "setup.exe",
        id="rfc2231-continued",
    ),
    pytest.param(
        named("filename*0*=utf-8''r%C3%A9; filename*1*=sum%C3%A9.exe"),
        "résumé.exe",
        id="rfc2231-continued-and-encoded",
    ),
    pytest.param(
        named('filename="=?utf-8?B?csOpc3Vtw6kuZXhl?="'),
        "résumé.exe",
        id="rfc2047-base64",
    ),
    pytest.param(
        named('filename="=?iso-8859-1?Q?r=E9sum=E9=2Eexe?="'),
        "résumé.exe",
        id="rfc2047-quoted-printable",
    ),
    pytest.param(named('filename="SETUP.EXE"'), "SETUP.EXE", id="uppercase"),
    pytest.param(
        named('filename="invoice.pdf.exe"'), "invoice.pdf.exe", id="double-extension"
    ),
    pytest.param(named('filename="a.exe."'), "a.exe.", id="trailing-dot"),
    pytest.param(named('filename="a.exe  "'), "a.exe  ", id="trailing-spaces"),
    pytest.param(
        named('filename="a.exe. . "'), "a.exe. . ", id="trailing-dots-and-spaces"
    ),
    pytest.param(named('filename="docs/run.bat"'), "docs/run.bat", id="path-in-name"),
    pytest.param(
        attachment('Content-Type: application/octet-stream; name="screen.scr"'),
        "screen.scr",
        id="name-only-in-content-type",
    ),
    pytest.param(
        attachment(
            'Content-Type: application/octet-stream; name="harmless.txt"\r\n'
            'Content-Disposition: attachment; filename="notes.txt"\r\n'
            'Content-Type: application/octet-stream; name="second.pif"'
        ),
        "second.pif",
        id="second-content-type-header",
    ),
    pytest.param(
        zip_part(zipped({"readme.txt": b"hi", "payload.exe": b"MZ"})),
        "payload.exe",
        id="zip-containing-exe",
    ),
    pytest.param(
        zip_part(zipped({"payload.exe": b"MZ"}), name="scan.dat"),
        "payload.exe",
        id="zip-found-by-magic-bytes",
    ),
    pytest.param(
        zip_part(nested_zip(3, {"deep/payload.lnk": b"L"})),
        "deep/payload.lnk",
        id="nested-zip",
    ),
    pytest.param(
        zip_part(encrypted_flag(zipped({"payload.exe": b"MZ"}))),
        "payload.exe",
        id="encrypted-zip",
    ),
    pytest.param(
        zip_part(truncated(zipped({"a.txt": b"a", "payload.com": b"MZ"}))),
        "payload.com",
        id="zip-without-central-directory",
    ),
    pytest.param(
        forwarded(message(named('filename="inner.exe"'), boundary="inner")),
        "inner.exe",
        id="attachment-of-a-forwarded-message",
    ),
]


@pytest.mark.parametrize(("part", "name"), BLOCKED_CASES)
def test_a_blocked_extension_is_found(part: str, name: str) -> None:
    finding = find_blocked_attachment(message(part), BLOCKED)

    assert finding is not None
    assert finding.reason is Reason.BLOCKED_EXTENSION
    assert finding.name == name


PASSING_CASES = [
    pytest.param(
        attachment(
            'Content-Type: application/pdf; name="report.pdf"\r\n'
            'Content-Disposition: attachment; filename="report.pdf"',
            PDF,
        ),
        id="benign-pdf",
    ),
    pytest.param(named('filename="exe.pdf"'), id="blocked-word-before-the-dot"),
    pytest.param(named('filename="setup.exe.pdf"'), id="blocked-extension-not-last"),
    pytest.param(named('filename="README"'), id="no-extension"),
    pytest.param(named('filename="archive.exes"'), id="longer-extension"),
    pytest.param(
        zip_part(zipped({"a.pdf": PDF, "b.txt": b"text"})), id="zip-of-documents"
    ),
    pytest.param(
        "Content-Type: text/plain\r\n\r\nplease run setup.exe", id="name-in-body-text"
    ),
]


@pytest.mark.parametrize("part", PASSING_CASES)
def test_a_message_without_blocked_names_passes(part: str) -> None:
    assert find_blocked_attachment(message(part), BLOCKED) is None


def test_the_blocked_list_is_compared_case_folded_and_without_dots() -> None:
    found = find_blocked_attachment(message(named('filename="a.exe"')), [".EXE"])

    assert found == Finding("a.exe", Reason.BLOCKED_EXTENSION)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.EXE", "exe"),
        ("a.exe.", "exe"),
        ("a.exe\t \r\n", "exe"),
        ("dir\\a.bat", "bat"),
        ("noext", ""),
        (".hidden", "hidden"),
        ("a.tar.gz", "gz"),
    ],
    ids=["upper", "dot", "white-space", "backslash-path", "none", "dotfile", "last"],
)
def test_the_extension_is_the_last_one_as_windows_reads_it(
    name: str, expected: str
) -> None:
    assert extension(name) == expected


def test_a_name_cut_at_a_nul_is_checked_too() -> None:
    part = named('filename="payload.exe\x00.pdf"')

    finding = find_blocked_attachment(message(part), BLOCKED)

    assert finding is not None and finding.reason is Reason.BLOCKED_EXTENSION


def zip_bomb(size: int) -> bytes:
    """A small zip whose single entry inflates to `size` zero bytes."""
    buffer = io.BytesIO()
    block = bytes(1024 * 1024)
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("zeros.txt", "w") as entry:
            for _ in range(size // len(block)):
                entry.write(block)
    return buffer.getvalue()


def test_a_zip_bomb_gets_the_archive_limits_result_quickly() -> None:
    bomb = zip_bomb(20 * 1024 * 1024)
    assert len(bomb) < 100_000

    started = time.monotonic()
    finding = find_blocked_attachment(message(zip_part(bomb)), BLOCKED)

    assert finding is not None
    assert finding.reason is Reason.ARCHIVE_LIMITS
    assert finding.name == "files.zip"
    assert time.monotonic() - started < 1.0


def test_a_zip_bomb_nested_in_a_zip_is_stopped_too() -> None:
    outer = zipped({"inner.zip": zip_bomb(20 * 1024 * 1024)})

    finding = find_blocked_attachment(message(zip_part(outer)), BLOCKED)

    assert finding is not None and finding.reason is Reason.ARCHIVE_LIMITS


def test_zips_nested_deeper_than_the_limit_are_refused() -> None:
    data = nested_zip(4, {"readme.txt": b"hi"})

    finding = find_blocked_attachment(message(zip_part(data)), BLOCKED)

    assert finding is not None
    assert finding.reason is Reason.ARCHIVE_LIMITS
    assert "deeper" in finding.detail


def test_a_zip_with_more_entries_than_the_limit_is_refused() -> None:
    data = zipped({f"file{n}.txt": b"" for n in range(1_001)})

    finding = find_blocked_attachment(message(zip_part(data)), BLOCKED)

    assert finding is not None
    assert finding.reason is Reason.ARCHIVE_LIMITS
    assert "entries" in finding.detail


def test_a_zip_over_the_size_limit_is_refused_without_inflating_it() -> None:
    data = zipped({"random.bin": os.urandom(300_000)})
    limits = Limits(archive=ArchiveLimits(max_bytes=200_000))

    finding = find_blocked_attachment(message(zip_part(data)), BLOCKED, limits)

    assert finding is not None and finding.reason is Reason.ARCHIVE_LIMITS


def test_a_corrupt_zip_part_without_names_passes() -> None:
    part = zip_part(b"PK\x03\x04 this is not really a zip")

    assert find_blocked_attachment(message(part), BLOCKED) is None


def wide_message(parts: int) -> bytes:
    return message(*["Content-Type: text/plain\r\n\r\nx"] * parts)


def deep_message(levels: int) -> bytes:
    head = "".join(
        f'Content-Type: multipart/mixed; boundary="b{n}"\r\n\r\n--b{n}\r\n'
        for n in range(levels)
    )
    tail = "".join(f"\r\n--b{n}--\r\n" for n in reversed(range(levels)))
    return f"{head}Content-Type: text/plain\r\n\r\nhi{tail}".encode()


@pytest.mark.parametrize(
    "bomb",
    [wide_message(10_000), deep_message(100), deep_message(5_000)],
    ids=["10000-parts", "100-levels", "5000-levels"],
)
def test_a_mime_bomb_gets_a_decision_within_a_bound(bomb: bytes) -> None:
    started = time.monotonic()
    finding = find_blocked_attachment(bomb, BLOCKED)

    assert finding is not None
    assert finding.reason is Reason.TOO_COMPLEX
    assert time.monotonic() - started < 1.0


def test_a_message_at_the_part_limit_is_walked_in_full() -> None:
    # The root and 999 parts: 1,000.
    parts = ["Content-Type: text/plain\r\n\r\nx"] * 998 + [named('filename="z.exe"')]

    finding = find_blocked_attachment(message(*parts), BLOCKED)

    assert finding == Finding("z.exe", Reason.BLOCKED_EXTENSION)


def test_nesting_at_the_depth_limit_is_accepted_and_one_more_is_not() -> None:
    assert find_blocked_attachment(deep_message(20), BLOCKED) is None

    finding = find_blocked_attachment(deep_message(21), BLOCKED)

    assert finding is not None and finding.reason is Reason.TOO_COMPLEX
