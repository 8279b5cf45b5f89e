"""The trace headers accepted mail gets: Received (RFC 5321 §4.4) and
Authentication-Results (RFC 8601), and the removal of results that claim
to be ours but came from outside (RFC 8601 §5)."""

from __future__ import annotations

import re
from email.utils import format_datetime, localtime

_END_OF_HEADERS = b"\r\n\r\n"
# One header field with its continuation lines, CRLF included.
_FIELD = re.compile(rb"[^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*")
_RESULTS_NAME = re.compile(rb"authentication-results[ \t]*:", re.IGNORECASE)
# RFC 8601 §2.2: authserv-id [ CFWS authres-version ] ";" ...
_AUTHSERV_ID = re.compile(rb"\s*(?:\([^)]*\)\s*)*\"?([^\s;\"]+)")


def received(
    *,
    helo: str | None,
    client: str,
    hostname: str,
    protocol: str,
    queue_id: str,
    recipients: list[str],
) -> bytes:
    """The Received header, folded, with its CRLF."""
    literal = f"[{client}]" if ":" not in client else f"[IPv6:{client}]"
    lines = [
        f"Received: from {helo or 'unknown'} ({literal})",
        f"\tby {hostname} (Perimeter) with {protocol} id {queue_id}",
    ]
    if len(recipients) == 1:
        lines.append(f"\tfor <{recipients[0]}>")
    lines[-1] += f"; {format_datetime(localtime())}"
    return ("\r\n".join(lines) + "\r\n").encode("utf-8", "surrogateescape")


def authentication_results(
    *, hostname: str, results: dict[str, str], sender: str, client: str
) -> bytes:
    """RFC 8601 §2.2: `authserv-id; method=result property=value; ...`."""
    mailfrom = sender or "<>"
    parts = [
        f"spf={results.get('spf', 'none')} smtp.mailfrom={mailfrom}",
        results.get("dkim_header") or f"dkim={results.get('dkim', 'none')}",
        f"iprev={results.get('iprev', 'none')} policy.iprev={client}",
    ]
    text = f"Authentication-Results: {hostname};\r\n\t" + ";\r\n\t".join(parts)
    return (text + "\r\n").encode("utf-8", "surrogateescape")


def protocol_name(esmtp: bool, tls: bool, authenticated: bool) -> str:
    """RFC 3848's WITH keywords."""
    if not esmtp:
        return "SMTP"
    return "ESMTP" + ("S" if tls else "") + ("A" if authenticated else "")


def without_forged_results(message: bytes, hostname: str) -> bytes:
    """`message` without the Authentication-Results fields whose authserv-id
    is `hostname`: a border MTA must not pass on results claiming to be its
    own (RFC 8601 §5). The same object comes back when there are none, so
    the usual message is not copied."""
    end = message.find(_END_OF_HEADERS)
    head_end = len(message) if end == -1 else end + 2
    if not _RESULTS_NAME.search(message, 0, head_end):
        return message
    ours = hostname.lower().rstrip(".").encode()
    fields = [field.group() for field in _FIELD.finditer(message, 0, head_end)]
    if sum(map(len, fields)) != head_end:
        # A header block the pattern cannot read whole (a bare CR, say) is
        # left as it is rather than cut at the wrong place.
        return message
    kept = [field for field in fields if _authserv_id(field) != ours]
    if len(kept) == len(fields):
        return message
    return b"".join(kept) + message[head_end:]


def _authserv_id(field: bytes) -> bytes | None:
    """The authserv-id of an Authentication-Results field, lower case;
    None for another field."""
    name = _RESULTS_NAME.match(field)
    if name is None:
        return None
    found = _AUTHSERV_ID.match(field, name.end())
    return found.group(1).lower().rstrip(b".") if found else None
