"""The bounce: a delivery status notification for mail we accepted with 250
and then could not deliver.

Once a server has said 250 to the end of DATA the message is its
responsibility, and when delivery then fails it must tell the sender (RFC
5321 §6.1). The notice is a multipart/report (RFC 6522) of three parts: a
text a person can read, a message/delivery-status for software (RFC 3464
§2), and the original's header block as text/rfc822-headers (RFC 6522 §4).
Only the headers go back: the body may be 25 MB, and a bounce should stay
small whoever the sender really is.

This builds the bytes and nothing else. The caller sends them to `sender`
with the null reverse-path, MAIL FROM:<> (RFC 5321 §4.5.5), so that a
bounce can never cause another; for the same reason a message whose own
sender was null gets no bounce, and `bounce` refuses one.

What came from outside (the route's reply, the addresses, the original's
headers) can hold anything. Everything we write is built so that none of it
can start a line of its own: CR and LF in a reply become indented lines,
the delivery-status fields are single (folded) lines, and the boundary is
random and checked against every part.
"""

from __future__ import annotations

import re
import secrets
import textwrap
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.header import Header
from email.utils import format_datetime

import idna

CRLF = "\r\n"

# Part 3 keeps at most this many bytes of the original's header block.
HEADERS_LIMIT = 64 * 1024
# A route chooses its reply, up to 100 lines of 64 KB each (relay.py); a
# bounce carries the start of it.
_REPLY_LIMIT = 1000
# The reply's lines are wrapped at this many characters, at a space where
# there is one: 4 octets a character and the indent stay under the 998
# octets a line may have (RFC 5322 §2.1.1), while a URL the route gives
# stays whole.
_REPLY_WIDTH = 200
_INDENT = "    "
# A Diagnostic-Code is folded only at spaces; a value this short fits one
# line even when it has none.
_DIAGNOSTIC_LIMIT = 900
# An address has no space to fold at, so its typed form is cut to fit.
_ADDRESS_LIMIT = 900
_FOLD_WIDTH = 76

_PREAMBLE = b"This is a MIME-encapsulated message."
# RFC 3463 §2: class.subject.detail at the start of the reply text. A
# failure is reported with a 4 or 5 class only.
# "5.1.1." ending a sentence is a code, "5.1.1.1" is not.
_ENHANCED = re.compile(r"([45])\.(\d{1,3})\.(\d{1,3})(?!\d|\.\d)")
# Controls (C0, DEL, C1) and the Unicode line and paragraph separators:
# none of them may reach a line of the notice.
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# Lone surrogates (undecodable bytes kept by surrogateescape) have no UTF-8.
_SURROGATES = re.compile(r"[\ud800-\udfff]")
_LINE_END = re.compile(rb"\r\n|\r|\n")
_NOT_ALNUM = re.compile(r"[^A-Za-z0-9]")


@dataclass(frozen=True, slots=True)
class Failure:
    recipient: str  # the address as given in RCPT TO
    code: int  # the SMTP reply code from the route, or ours (554, 550, 451...)
    text: str  # the reply text, perhaps "5.1.1 ..." and several lines
    remote: str = ""  # the route host that answered, "" when none did


def bounce(
    *,
    hostname: str,
    queue_id: str,
    sender: str,
    received: float,
    failures: list[Failure],
    original: bytes,
    now: float | None = None,
) -> bytes:
    """The notice to `sender` that `original`, accepted at `received` as
    `queue_id`, could not be delivered to `failures`: a complete message,
    CRLF line ends, ASCII top-level header fields."""
    if not _one_line(sender, "").strip("<>"):
        raise ValueError("no bounce to the null reverse-path (RFC 5321 §4.5.5)")
    if not failures:
        raise ValueError("a delivery status notification needs a recipient")
    host = _ascii_host(hostname)
    text = _notification(host, queue_id, failures).encode("utf-8")
    status = _delivery_status(host, received, failures).encode("ascii")
    headers = _original_headers(original)
    parts = [
        _part("text/plain; charset=utf-8", "Notification", text),
        _part("message/delivery-status", "Delivery report", status),
        _part("text/rfc822-headers", "Undelivered message headers", headers),
    ]
    boundary = _boundary(parts)
    top = _top_headers(
        host=host,
        queue_id=queue_id,
        sender=sender,
        now=time.time() if now is None else now,
        boundary=boundary,
        eight_bit=not all(part.isascii() for part in parts),
    )
    delimiter = b"--" + boundary.encode("ascii")
    # Each part ends with CRLF and the CRLF before a delimiter belongs to the
    # delimiter (RFC 2046 §5.1.1), so every part keeps its last line end.
    return b"".join(
        [top, b"\r\n", _PREAMBLE, b"\r\n"]
        + [delimiter + b"\r\n" + part + b"\r\n" for part in parts]
        + [delimiter + b"--\r\n"]
    )


def _original_headers(original: bytes) -> bytes:
    """The original's header block for part 3, ending with CRLF: everything
    before its first empty line, or the whole of it when there is none, at
    most HEADERS_LIMIT bytes cut at a line end. 8-bit bytes stay as they
    are; a bare CR or LF becomes CRLF, as the DATA reader writes it
    (data.py)."""
    if original.startswith(b"\r\n"):
        # An empty first line: the message has no header fields at all.
        return b""
    # Searching past the limit would find nothing we keep.
    end = original.find(b"\r\n\r\n", 0, HEADERS_LIMIT + 4)
    block = original[: end + 2] if end >= 0 else original[: HEADERS_LIMIT + 2]
    block = _LINE_END.sub(b"\r\n", block)
    if len(block) > HEADERS_LIMIT:
        cut = block.rfind(b"\r\n", 0, HEADERS_LIMIT)
        # One line longer than the limit is cut inside; better than nothing.
        block = block[: cut + 2] if cut >= 0 else block[: HEADERS_LIMIT - 2]
    if block and not block.endswith(b"\r\n"):
        block += b"\r\n"
    return block


def _notification(host: str, queue_id: str, failures: list[Failure]) -> str:
    """Part 1: what happened, for the person who sent the message."""
    lines = [
        f"This is the mail system at {host}.",
        "",
        "Your message could not be delivered to one or more of its recipients.",
        "Each is listed below with the answer that ended its delivery. Only",
        "the headers of your message are attached, not the message itself.",
        "",
        f"Queue id: {_one_line(queue_id)}",
    ]
    for failure in failures:
        lines += ["", *_explanation(failure)]
    return CRLF.join(lines) + CRLF


def _explanation(failure: Failure) -> list[str]:
    """One recipient and the reply, every reply line indented: a line the
    route wrote can never start a line of the notice, so it cannot be taken
    for a boundary delimiter."""
    remote = _clip(_one_line(failure.remote, ""), _REPLY_WIDTH)
    said = f"{remote} answered" if remote else "delivery failed"
    reply = _lines(_clip(failure.text, _REPLY_LIMIT)) or [""]
    reply[0] = f"{failure.code} {reply[0]}".rstrip()
    wrapped = [
        piece
        for line in reply
        for piece in textwrap.wrap(line, _REPLY_WIDTH, break_on_hyphens=False)
    ]
    recipient = _clip(_one_line(failure.recipient, ""), _REPLY_WIDTH)
    return [f"<{recipient}>: {said}:"] + [_INDENT + piece for piece in wrapped]


def _delivery_status(host: str, received: float, failures: list[Failure]) -> str:
    """Part 2 (RFC 3464 §2): the per-message fields, then a block of
    per-recipient fields for each failure, blocks separated by an empty
    line. All of it ASCII, as the type requires (RFC 3464 §2.1)."""
    blocks = [[f"Reporting-MTA: dns; {host}", f"Arrival-Date: {_date(received)}"]]
    blocks += [_recipient_fields(failure) for failure in failures]
    return CRLF.join(CRLF.join(block) + CRLF for block in blocks)


def _recipient_fields(failure: Failure) -> list[str]:
    """RFC 3464 §2.3, in the order it lists them. There is no
    Original-Recipient: we keep no ORCPT."""
    fields = [
        f"Final-Recipient: {_typed_address(failure.recipient)}",
        "Action: failed",
        f"Status: {_status(failure.code, failure.text)}",
    ]
    remote = _ascii_host(failure.remote)
    if remote:
        fields.append(f"Remote-MTA: dns; {remote}")
    fields.append(_diagnostic(failure.code, failure.text))
    return fields


def _status(code: int, text: str) -> str:
    """The Status field (RFC 3464 §2.3.4): the enhanced code at the start of
    the reply text when its class is the reply code's (RFC 3463 §2: they
    must agree, and when they do not the reply code is the one that
    counts), else the class alone with 0.0 for "other"."""
    found = _ENHANCED.match(text.lstrip())
    if found and int(found.group(1)) == code // 100:
        return ".".join(str(int(number)) for number in found.groups())
    return "5.0.0" if code // 100 == 5 else "4.0.0"


def _diagnostic(code: int, text: str) -> str:
    """`Diagnostic-Code: smtp; code text`: the reply on one logical line in
    ASCII, folded at spaces (RFC 5322 §2.2.3) so a long one still fits."""
    flat = " ".join(_one_line(text).split())
    flat = flat.encode("ascii", "replace").decode("ascii")
    value = _clip(f"{code} {flat}".rstrip(), _DIAGNOSTIC_LIMIT)
    lines = textwrap.wrap(
        f"Diagnostic-Code: smtp; {value}",
        _FOLD_WIDTH,
        break_long_words=False,
        break_on_hyphens=False,
    )
    return (CRLF + " ").join(lines)


def _typed_address(address: str) -> str:
    """`rfc822; addr` for an ASCII address; otherwise RFC 6533 §3's
    `utf-8;` type in its 7-bit utf-8-addr-xtext form, since
    message/delivery-status stays ASCII: every character outside QCHAR
    (printable ASCII but \\, + and =) becomes \\x{HEX}."""
    clean = _one_line(address, "")
    if clean.isascii():
        return f"rfc822; {clean[:_ADDRESS_LIMIT]}"
    escaped = ""
    for char in clean:
        piece = (
            char
            if "!" <= char <= "~" and char not in "\\+="
            else f"\\x{{{ord(char):X}}}"
        )
        if len(escaped) + len(piece) > _ADDRESS_LIMIT:
            break
        escaped += piece
    return f"utf-8; {escaped}"


def _part(content_type: str, description: str, body: bytes) -> bytes:
    """A body part: its header fields, an empty line, the body. An 8-bit
    body says so (RFC 2045 §6.2: 7bit, the default, means 7-bit data)."""
    fields = [f"Content-Type: {content_type}", f"Content-Description: {description}"]
    if not body.isascii():
        fields.append("Content-Transfer-Encoding: 8bit")
    return (CRLF.join(fields) + CRLF + CRLF).encode("ascii") + body


def _boundary(parts: list[bytes]) -> str:
    """A boundary none of the parts contains (RFC 2046 §5.1.1). It is random
    so that nobody can write it in advance; the check makes sure."""
    while True:
        # "=_" cannot occur in quoted-printable or base64 text.
        boundary = f"=_perimeter_{_token()}"
        if not any(boundary.encode("ascii") in part for part in parts):
            return boundary


def _token() -> str:
    return secrets.token_hex(16)


def _top_headers(
    *,
    host: str,
    queue_id: str,
    sender: str,
    now: float,
    boundary: str,
    eight_bit: bool,
) -> bytes:
    """The message's header fields, ASCII only, each ending with CRLF."""
    queue = _NOT_ALNUM.sub("", queue_id)
    message_id = ".".join(filter(None, [secrets.token_hex(10), queue]))
    fields = [
        f"From: Mail Delivery System <MAILER-DAEMON@{host}>",
        _to(sender),
        "Subject: Undelivered Mail Returned to Sender",
        f"Date: {_date(now)}",
        f"Message-ID: <{message_id}@{host}>",
        # RFC 3834 §5: an automatic answer; vacation responders and the
        # like must not answer it in turn.
        "Auto-Submitted: auto-replied",
        f"X-Perimeter-Queue-Id: {_ascii(_one_line(queue_id, ''))}",
        "MIME-Version: 1.0",
        "Content-Type: multipart/report; report-type=delivery-status;"
        f'{CRLF}\tboundary="{boundary}"',
    ]
    if eight_bit:
        # RFC 2045 §6.4: a multipart's encoding covers its parts.
        fields.append("Content-Transfer-Encoding: 8bit")
    return (CRLF.join(fields) + CRLF).encode("ascii")


def _to(sender: str) -> str:
    """The To field: the sender's address, its domain as A-labels. A local
    part that is not ASCII can only be written in UTF-8 (RFC 6532), which a
    top-level field of ours does not use; it goes in an encoded-word as the
    display name of an empty group (RFC 2047 §5), so the reader still sees
    it. The bounce reaches the sender by the envelope, not by this field."""
    address = _one_line(sender, "").removeprefix("<").removesuffix(">")
    local, at, domain = address.rpartition("@")
    if at:
        address = f"{local}@{_ascii_host(domain)}"
    if address.isascii():
        return f"To: <{address}>"
    name = Header(address, "utf-8", header_name="To").encode(linesep=CRLF)
    return f"To: {name}:;"


def _ascii_host(name: str) -> str:
    """A host name as ASCII: A-labels for an internationalised name, and
    without spaces or controls, which could break a field."""
    clean = "".join(_one_line(name).split())
    if clean.isascii():
        return clean
    try:
        return idna.encode(clean, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError, ValueError):
        return _ascii(clean)


def _lines(text: str) -> list[str]:
    """The non-empty lines of `text`, split at any line end (CR, LF, CRLF
    and the rest str.splitlines knows), with no control left in them."""
    return [line for line in map(_one_line, text.splitlines()) if line.strip()]


def _one_line(text: str, fill: str = " ") -> str:
    """`text` with every control replaced by `fill`, so it cannot end or
    break a line, and with undecodable bytes as U+FFFD so it can be UTF-8."""
    return _CONTROLS.sub(fill, _SURROGATES.sub("\ufffd", text)).rstrip()


def _ascii(text: str) -> str:
    return text.encode("ascii", "replace").decode("ascii")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + " [...]"


def _date(epoch: float) -> str:
    """An RFC 5322 §3.3 date-time in UTC."""
    return format_datetime(datetime.fromtimestamp(epoch, UTC))
