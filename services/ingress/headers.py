"""The trace headers accepted mail gets: Received (RFC 5321 §4.4) and
Authentication-Results (RFC 8601)."""

from __future__ import annotations

from email.utils import format_datetime, localtime


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
