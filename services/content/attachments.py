"""The blocked_extension check (SPEC §3, DATA step 1): attachment names.

Names come from the `filename` parameter of Content-Disposition (RFC 2183)
and the `name` parameter of Content-Type (RFC 2045), from every occurrence of
either header, with RFC 2231 continuations and charsets and RFC 2047
encoded-words decoded. The extension is the text after the last dot of the
last path segment, case folded, once trailing dots and white space are gone
(Windows drops them: `a.exe.` opens as `a.exe`). Names inside zip archives,
found by name or by their magic bytes, are checked the same way.

The walk is bounded (see `mime` and `archives`); a message over a bound is a
`Finding` with `TOO_COMPLEX` or `ARCHIVE_LIMITS`, which the caller rejects
with the security-policy reply. This is CPU work: run it in a thread.
"""

from __future__ import annotations

import binascii
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from email.errors import HeaderParseError
from email.header import decode_header, make_header
from email.utils import collapse_rfc2231_value
from enum import StrEnum

from services.content import mime
from services.content.archives import (
    ArchiveLimits,
    ArchiveTooComplex,
    looks_like_zip,
    zip_entries,
)
from services.content.mime import MimeLimits, MimeTooComplex, ParamValue, Part

log = logging.getLogger(__name__)

_NAME_HEADERS = ("content-disposition", "content-type")
_NAME_PARAMS = ("filename", "name")
_PATH_SEPARATOR = re.compile(r"[/\\]")
_TRAILING = re.compile(r"[\s.\x00]+$")
_SNIFF_BYTES = 256
_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/]")


class Reason(StrEnum):
    BLOCKED_EXTENSION = "blocked extension"
    TOO_COMPLEX = "too complex"
    ARCHIVE_LIMITS = "archive limits"


@dataclass(frozen=True, slots=True)
class Finding:
    """Why the message is refused: `name` is the offending file name (empty
    when the MIME structure itself is the problem); `detail` is for the
    decision record, never for the SMTP reply."""

    name: str
    reason: Reason
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Limits:
    mime: MimeLimits = field(default_factory=MimeLimits)
    archive: ArchiveLimits = field(default_factory=ArchiveLimits)


def extension_set(blocked: Iterable[str]) -> frozenset[str]:
    """The blocked_extensions list as compared: case folded, no dot."""
    return frozenset(e.strip().lstrip(".").casefold() for e in blocked if e.strip())


def extension(name: str) -> str:
    """The last extension of a file name, case folded; '' when none."""
    base = _PATH_SEPARATOR.split(name)[-1]
    base = _TRAILING.sub("", base)
    _, dot, ext = base.rpartition(".")
    return ext.casefold() if dot else ""


def is_blocked(name: str, extensions: frozenset[str]) -> bool:
    """Whether `name` ends in a blocked extension, also when read up to a
    NUL the way C string handling in some clients would."""
    candidates = {name, name.split("\x00", 1)[0]}
    return any(extension(candidate) in extensions for candidate in candidates)


def find_blocked_attachment(
    message: bytes, blocked: Iterable[str], limits: Limits | None = None
) -> Finding | None:
    """The first attachment whose name is blocked, or a bound the message
    goes over; None when the message passes."""
    limits = limits or Limits()
    extensions = extension_set(blocked)
    try:
        for part in mime.walk(message, limits.mime):
            finding = _check_part(part, extensions, limits.archive)
            if finding is not None:
                return finding
    except MimeTooComplex as exc:
        return Finding("", Reason.TOO_COMPLEX, str(exc))
    return None


def attachment_names(part: Part) -> list[str]:
    """The decoded file names one MIME part announces, in header order."""
    names: list[str] = []
    for header in _NAME_HEADERS:
        for value in part.get_all(header):
            names.extend(_names_in(value))
    return names


def _names_in(header_value: str) -> list[str]:
    values = [value for key, value in mime.params(header_value) if key in _NAME_PARAMS]
    decoded = (_decode_name(value) for value in values)
    return [name for name in decoded if name]


def _decode_name(value: ParamValue) -> str:
    # RFC 2231 §3 and §4: continuations are joined by email.message; the
    # charset'language'value form is decoded here.
    text = collapse_rfc2231_value(value)
    # RFC 2047 §5 forbids encoded-words in parameters, but common mail
    # clients write them and read them back, so they are decoded too.
    if "=?" in text:
        text = _decode_words(text)
    # Raw 8-bit names (RFC 6532) were read as UTF-8 with surrogates for
    # bytes that are not; those become U+FFFD here, printable everywhere.
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _decode_words(text: str) -> str:
    try:
        return str(make_header(decode_header(text)))
    except (HeaderParseError, LookupError, UnicodeError, ValueError):
        return text


def _check_part(
    part: Part, extensions: frozenset[str], limits: ArchiveLimits
) -> Finding | None:
    names = attachment_names(part)
    for name in names:
        if is_blocked(name, extensions):
            return Finding(name, Reason.BLOCKED_EXTENSION)
    if part.boundary is not None or part.encapsulates or not _holds_zip(part, names):
        return None
    return _check_archive(part, names[0] if names else "", extensions, limits)


def _holds_zip(part: Part, names: list[str]) -> bool:
    if any(extension(name) == "zip" for name in names):
        return True
    return looks_like_zip(_payload_head(part))


def _payload_head(part: Part) -> bytes:
    """The first bytes of the decoded payload, decoding only its start."""
    head = bytes(part.body[:_SNIFF_BYTES])
    encoding = part.encoding
    if encoding == "base64":
        chars = b"".join(head.split())[:8]
        try:
            return binascii.a2b_base64(chars + b"=" * (-len(chars) % 4))
        except (binascii.Error, ValueError):
            return b""
    return binascii.a2b_qp(head) if encoding == "quoted-printable" else head


def _decoded_payload(part: Part) -> bytes:
    """The part's payload decoded in one step (RFC 2045 §6) straight from
    the message: the decoded bytes are the only copy made."""
    body = part.body
    encoding = part.encoding
    try:
        if encoding == "base64":
            return binascii.a2b_base64(body)
        if encoding == "quoted-printable":
            return binascii.a2b_qp(body)
    except (binascii.Error, ValueError):
        return _lenient_base64(body)
    return bytes(body)


def _lenient_base64(body: memoryview) -> bytes:
    """Bad padding or stray characters: decode what is there, the way mail
    clients do (RFC 2045 §6.8 says to ignore characters outside the
    alphabet), dropping an incomplete last quantum."""
    chars = _NOT_BASE64.sub(b"", body)
    chars = chars[: len(chars) - len(chars) % 4]
    try:
        return binascii.a2b_base64(chars)
    except (binascii.Error, ValueError):
        return b""


def _check_archive(
    part: Part, name: str, extensions: frozenset[str], limits: ArchiveLimits
) -> Finding | None:
    data = _decoded_payload(part)
    label = name or "(unnamed zip)"
    try:
        for entry in zip_entries(data, label, limits):
            if is_blocked(entry.name, extensions):
                detail = f"inside {entry.archive}"
                return Finding(entry.name, Reason.BLOCKED_EXTENSION, detail)
    except ArchiveTooComplex as exc:
        return Finding(label, Reason.ARCHIVE_LIMITS, str(exc))
    return None
