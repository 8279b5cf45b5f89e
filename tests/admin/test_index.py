"""ListIndex: the in-memory view of the lists that workers query."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.lists import ListIndex, RelayDomainEntry, SmtpUserEntry

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = NOW.timestamp()

    def __call__(self) -> float:
        return self.now


def raw(value: str, entry_id: str = "0123456789ab", **fields: Any) -> bytes:
    entry = {
        "id": entry_id,
        "value": value,
        "comment": "",
        "expires_at": None,
        "created_at": NOW.isoformat(),
        **fields,
    }
    return json.dumps(entry).encode()


def index_with(name: str, *values: str, **fields: Any) -> ListIndex:
    index = ListIndex()
    for n, value in enumerate(values):
        entry_id = f"{n:012x}"
        index.apply(f"{name}.{entry_id}", raw(value, entry_id, **fields))
    return index


IP_CASES = [
    ("10.0.0.0/8", "10.200.3.4", True),
    ("10.0.0.0/8", "11.0.0.1", False),
    ("192.0.2.7", "192.0.2.7", True),
    ("192.0.2.7", "192.0.2.8", False),
    ("192.0.2.0/25", "192.0.2.127", True),
    ("192.0.2.0/25", "192.0.2.128", False),
    ("2001:db8::/32", "2001:db8:ffff::1", True),
    ("2001:db8::/32", "2001:db9::1", False),
    ("2001:db8::1", "2001:DB8:0:0::1", True),
    ("2001:db8:1::/48", "2001:db8:2::1", False),
    ("10.0.0.0/8", "::ffff:10.1.2.3", True),
    ("10.0.0.0/8", "not an address", False),
    ("::/0", "10.0.0.1", False),
]


@pytest.mark.parametrize(
    ("entry", "client", "listed"),
    IP_CASES,
    ids=[f"{e} holds {c}: {listed}" for e, c, listed in IP_CASES],
)
def test_ip_lookup_matches_addresses_inside_networks(
    entry: str, client: str, listed: bool
) -> None:
    index = index_with("banned_ips", entry)

    found = index.ip_in("banned_ips", client)

    assert (found is not None) is listed


def test_ip_lookup_prefers_the_most_specific_network() -> None:
    index = index_with("banned_ips", "10.0.0.0/8", "10.1.0.0/16", "10.1.2.3")

    found = [
        index.ip_in("banned_ips", ip) for ip in ("10.1.2.3", "10.1.9.9", "10.9.9.9")
    ]

    assert [e.value if e else None for e in found] == [
        "10.1.2.3",
        "10.1.0.0/16",
        "10.0.0.0/8",
    ]


def test_a_deleted_key_stops_matching() -> None:
    index = index_with("banned_ips", "192.0.2.0/24")

    index.apply("banned_ips.000000000000", None)

    assert index.ip_in("banned_ips", "192.0.2.1") is None
    assert index.entries("banned_ips") == []


def test_a_rewritten_key_matches_its_new_value_only() -> None:
    index = index_with("banned_ips", "192.0.2.0/24")

    index.apply("banned_ips.000000000000", raw("198.51.100.0/24", "000000000000"))

    assert index.ip_in("banned_ips", "192.0.2.1") is None
    assert index.ip_in("banned_ips", "198.51.100.1") is not None


DOMAIN_CASES = [
    ("example.com", "example.com", True),
    ("example.com", "mail.EXAMPLE.com.", True),
    ("example.com", "a.b.c.example.com", True),
    ("example.com", "badexample.com", False),
    ("example.com", "example.org", False),
    ("xn--bcher-kva.example", "smtp.bücher.example", True),
    ("xyz", "spam.xyz", True),
]


@pytest.mark.parametrize(
    ("entry", "domain", "listed"),
    DOMAIN_CASES,
    ids=[f"{e} covers {d}: {listed}" for e, d, listed in DOMAIN_CASES],
)
def test_domain_lookup_matches_the_domain_and_its_subdomains(
    entry: str, domain: str, listed: bool
) -> None:
    index = index_with("banned_domains", entry)

    assert (index.domain_in("banned_domains", domain) is not None) is listed


ADDRESS_CASES = [
    ("Partner@example.com", "partner@EXAMPLE.com", True),
    ("partner@example.com", "other@example.com", False),
    ("example.org", "anyone@example.org", True),
    ("example.org", "anyone@lists.example.org", True),
    ("example.org", "anyone@example.net", False),
    ("example.org", "<x@example.org>", True),
    ("example.org", "", False),
]


@pytest.mark.parametrize(
    ("entry", "sender", "listed"),
    ADDRESS_CASES,
    ids=[
        f"{e} approves {s or 'null sender'}: {listed}" for e, s, listed in ADDRESS_CASES
    ],
)
def test_address_lookup_matches_the_address_or_its_domains(
    entry: str, sender: str, listed: bool
) -> None:
    index = index_with("approved_senders", entry)

    assert (index.address_in("approved_senders", sender) is not None) is listed


def test_mixed_list_answers_ip_and_address_lookups() -> None:
    index = index_with("empty_reply_exemptions", "192.0.2.0/24", "lists.example")

    assert index.ip_in("empty_reply_exemptions", "192.0.2.9") is not None
    assert index.address_in("empty_reply_exemptions", "n@lists.example") is not None
    assert index.address_in("empty_reply_exemptions", "n@other.example") is None


def test_catch_all_accepts_every_address_of_its_domain() -> None:
    index = index_with("valid_recipients", "@example.org", "Bob@example.net")

    assert index.recipient_valid("anyone@EXAMPLE.org") is not None
    assert index.recipient_valid("bob@example.net") is not None
    assert index.recipient_valid("alice@example.net") is None
    assert index.recipient_valid("anyone@sub.example.org") is None


def test_relay_domain_matches_exactly_and_carries_its_route() -> None:
    index = index_with("relay_domains", "example.org", route="mx:25", verify="list")

    found = index.relay_domain("Example.ORG.")

    assert isinstance(found, RelayDomainEntry)
    assert (found.route, found.verify) == ("mx:25", "list")
    assert index.relay_domain("sub.example.org") is None


def test_smtp_user_lookup_returns_the_hash_and_is_case_sensitive() -> None:
    index = index_with("smtp_users", "alice", password_hash="$argon2id$v=19$x")

    found = index.smtp_user("alice")

    assert isinstance(found, SmtpUserEntry)
    assert found.password_hash.startswith("$argon2id$")
    assert index.smtp_user("Alice") is None


def test_ratelimit_exemptions_hold_networks_and_user_names() -> None:
    index = index_with("ratelimit_exemptions", "2001:db8::/48", "bulk-sender")

    assert index.ip_in("ratelimit_exemptions", "2001:db8::25") is not None
    assert index.user_in("ratelimit_exemptions", "bulk-sender") is not None
    assert index.user_in("ratelimit_exemptions", "someone") is None


def test_subjects_match_text_case_insensitively_and_patterns() -> None:
    index = index_with("blocked_subjects", "Cheap Watches", r"re:^urgent\s+wire")

    assert index.subject_blocked("Re: cheap WATCHES here") is not None
    assert index.subject_blocked("URGENT   wire transfer") is not None
    assert index.subject_blocked("not urgent wire") is None


def test_rbl_zones_carry_their_codes() -> None:
    index = index_with("rbl_zones", "zen.spamhaus.org", codes=["127.0.0.2-127.0.0.11"])

    (zone,) = index.rbl_zones()

    assert zone.lists("127.0.0.4")
    assert not zone.lists("127.255.255.254")
    assert not zone.lists("127.0.0.1")


def test_expired_entries_stop_matching_without_a_deletion() -> None:
    clock = Clock()
    index = ListIndex(clock=clock)
    later = (NOW + timedelta(minutes=5)).isoformat()
    index.apply("banned_ips.aaaaaaaaaaaa", raw("192.0.2.0/24", expires_at=later))
    index.apply("blocked_extensions.bbbbbbbbbbbb", raw("exe", expires_at=later))
    index.apply("banned_domains.cccccccccccc", raw("spam.example", expires_at=later))
    assert index.ip_in("banned_ips", "192.0.2.1") is not None
    assert index.extensions() == {"exe"}

    clock.now += 301

    assert index.ip_in("banned_ips", "192.0.2.1") is None
    assert index.extensions() == frozenset()
    assert index.domain_in("banned_domains", "spam.example") is None
    assert index.entries("banned_ips") == []


def test_an_expired_duplicate_does_not_hide_a_live_one() -> None:
    clock = Clock()
    index = ListIndex(clock=clock)
    past = (NOW - timedelta(minutes=1)).isoformat()
    index.apply("auth_blacklist.aaaaaaaaaaaa", raw("192.0.2.9", expires_at=past))
    index.apply("auth_blacklist.bbbbbbbbbbbb", raw("192.0.2.9", "bbbbbbbbbbbb"))

    found = index.ip_in("auth_blacklist", "192.0.2.9")

    assert found is not None and found.id == "bbbbbbbbbbbb"


def test_unreadable_entries_and_unknown_lists_are_ignored() -> None:
    index = ListIndex()

    index.apply("banned_ips.aaaaaaaaaaaa", b"{not json")
    index.apply("banned_ips.bbbbbbbbbbbb", raw("not an address"))
    index.apply("no_such_list.cccccccccccc", raw("x"))

    assert index.entries("banned_ips") == []
