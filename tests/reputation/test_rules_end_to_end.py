"""Every connect, HELO, AUTH, MAIL and RCPT rule through SMTP on the wire.

The shared product runs two reputation replicas, so counters and bans are
tested across them. Clients speak through the trusted PROXY address, so
each test has client addresses of its own; their DNS is declared in the
tables below, served by the loopback DNS server.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import ssl

import pytest

from shared import replies
from shared.rules import Rule
from tests.support.client import Dialogue
from tests.support.dnsserver import DnsServer
from tests.support.operator import Operator
from tests.support.sink import Sink
from tests.support.stack import Product

R = replies.RULE_REPLIES
_hosts = itertools.count(10)


def client_ip(dns: DnsServer, ptr: bool = True, v6: bool = False) -> str:
    """A fresh client address; with `ptr`, one whose PTR confirms forward."""
    n = next(_hosts)
    ip = f"2001:db8:77::{n:x}" if v6 else f"198.51.100.{n}"
    if ptr:
        name = f"host{n}.client.example"
        dns.add(ip, "PTR", name + ".")
        dns.add(name, "AAAA" if v6 else "A", ip)
    return ip


async def open_session(
    gateway: Product, client: str, helo: str = "client.test"
) -> Dialogue:
    smtp = Dialogue(gateway, client)
    await smtp.__aenter__()
    assert (await smtp.reply()).startswith("220 ")
    assert (await smtp.command(f"EHLO {helo}")).startswith("250")
    return smtp


async def rcpt(gateway: Product, client: str, sender: str, recipient: str) -> str:
    smtp = await open_session(gateway, client)
    try:
        assert (await smtp.command(f"MAIL FROM:<{sender}>")).startswith("250")
        return await smtp.command(f"RCPT TO:<{recipient}>")
    finally:
        await smtp.__aexit__(None, None, None)


# Connect -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("network", "client"),
    [("203.0.113.0/24", "203.0.113.7"), ("2001:db8:bad::/48", "2001:db8:bad::1")],
    ids=["ipv4-cidr", "ipv6-cidr"],
)
async def test_a_banned_address_is_refused_at_the_greeting_and_let_in_once_unbanned(
    gateway: Product, operator: Operator, network: str, client: str
) -> None:
    entry = await operator.add("banned_ips", network)
    async with Dialogue(gateway, client) as smtp:
        greeting = await smtp.reply()
        assert await smtp.closed()
    await operator.remove("banned_ips", entry["id"])
    async with Dialogue(gateway, client) as smtp:
        welcome = await smtp.reply()

    assert greeting == R[Rule.BANNED_IP].render(ip=client)
    assert welcome.startswith("220 ")


# HELO ----------------------------------------------------------------------


async def test_helo_as_a_bare_address_is_refused_and_the_session_has_no_helo(
    gateway: Product, dns_server: DnsServer
) -> None:
    async with Dialogue(gateway, client_ip(dns_server)) as smtp:
        await smtp.reply()
        helo = await smtp.command("EHLO 192.0.2.1")
        mail = await smtp.command("MAIL FROM:<bob@sender.example>")
        literal = await smtp.command("EHLO [192.0.2.1]")

    assert helo == R[Rule.HELO_IP].render()
    assert mail == R[Rule.HELO_REQUIRED].render()
    assert literal.startswith("250")


async def test_mail_without_helo_is_refused(
    gateway: Product, dns_server: DnsServer
) -> None:
    async with Dialogue(gateway, client_ip(dns_server)) as smtp:
        await smtp.reply()
        answer = await smtp.command("MAIL FROM:<bob@sender.example>")

    assert answer == R[Rule.HELO_REQUIRED].render()


# AUTH ----------------------------------------------------------------------


def _plain(user: str, password: str) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


async def _starttls(smtp: Dialogue) -> None:
    assert (await smtp.command("STARTTLS")).startswith("220")
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    await smtp.writer.start_tls(context)
    assert "AUTH PLAIN LOGIN" in await smtp.command("EHLO client.test")


async def test_auth_before_starttls_needs_encryption(
    gateway: Product, dns_server: DnsServer
) -> None:
    smtp = await open_session(gateway, client_ip(dns_server))
    answer = await smtp.command(f"AUTH PLAIN {_plain('a', 'b')}")
    await smtp.__aexit__(None, None, None)

    assert answer == replies.AUTH_NEEDS_TLS.render()


async def test_a_user_authenticates_once_and_may_then_relay_anywhere(
    gateway: Product, operator: Operator, dns_server: DnsServer, unique: str
) -> None:
    await operator.add("smtp_users", unique, password="correct horse battery")
    smtp = await open_session(gateway, client_ip(dns_server))
    await _starttls(smtp)
    first = await smtp.command(f"AUTH PLAIN {_plain(unique, 'correct horse battery')}")
    second = await smtp.command(f"AUTH PLAIN {_plain(unique, 'correct horse battery')}")
    await smtp.command("MAIL FROM:<bob@sender.example>")
    relayed = await smtp.command("RCPT TO:<carol@elsewhere.example>")
    await smtp.__aexit__(None, None, None)

    assert first == replies.AUTH_OK.render()
    assert second == R[Rule.AUTH_ONCE].render()
    assert relayed.startswith("250")


async def test_login_mechanism_authenticates(
    gateway: Product, operator: Operator, dns_server: DnsServer, unique: str
) -> None:
    await operator.add("smtp_users", unique, password="correct horse battery")
    smtp = await open_session(gateway, client_ip(dns_server))
    await _starttls(smtp)
    assert (await smtp.command("AUTH LOGIN")).startswith("334 ")
    assert (await smtp.command(base64.b64encode(unique.encode()).decode())).startswith(
        "334 "
    )
    answer = await smtp.command(base64.b64encode(b"correct horse battery").decode())
    await smtp.__aexit__(None, None, None)

    assert answer == replies.AUTH_OK.render()


async def test_the_fifth_auth_failure_bans_the_client_across_connections_and_replicas(
    gateway: Product, operator: Operator, dns_server: DnsServer, unique: str
) -> None:
    await operator.add("smtp_users", unique, password="correct horse battery")
    client = client_ip(dns_server)
    answers = []
    for _ in range(5):
        smtp = await open_session(gateway, client)
        await _starttls(smtp)
        answers.append(await smtp.command(f"AUTH PLAIN {_plain(unique, 'wrong')}"))
        await smtp.__aexit__(None, None, None)
    await asyncio.sleep(0.5)
    async with Dialogue(gateway, client) as smtp:
        greeting = await smtp.reply()

    assert answers[:4] == [replies.AUTH_INVALID.render()] * 4
    assert answers[4] == R[Rule.AUTH_BRUTEFORCE].render()
    assert greeting == R[Rule.AUTH_BRUTEFORCE].render()
    listed = await operator.client.get("/lists/auth_blacklist")
    assert any(e["value"] == client and e["expires_at"] for e in listed.json())


# MAIL ----------------------------------------------------------------------


async def test_the_rate_limit_holds_across_connections_and_replicas(
    gateway: Product, operator: Operator, dns_server: DnsServer
) -> None:
    client = client_ip(dns_server)
    await operator.settings(rate_limit={"messages": 3, "period": "1m"})
    try:
        answers = []
        for _ in range(4):
            smtp = await open_session(gateway, client)
            answers.append(await smtp.command("MAIL FROM:<bob@sender.example>"))
            await smtp.__aexit__(None, None, None)
    finally:
        await operator.settings(rate_limit={"messages": 250, "period": "15m"})

    assert [a[:3] for a in answers[:3]] == ["250"] * 3
    assert answers[3] == R[Rule.RATE_LIMIT].render(limit=3, period="1m")


async def test_a_banned_domain_and_its_subdomains_are_refused_at_mail(
    gateway: Product, operator: Operator, dns_server: DnsServer, unique: str
) -> None:
    await operator.add("banned_domains", f"{unique}.example")
    smtp = await open_session(gateway, client_ip(dns_server))
    banned = await smtp.command(f"MAIL FROM:<bob@mail.{unique}.example>")
    await smtp.command("RSET")
    fine = await smtp.command("MAIL FROM:<bob@sender.example>")
    await smtp.__aexit__(None, None, None)

    assert banned == R[Rule.BANNED_DOMAIN].render(domain=f"mail.{unique}.example")
    assert fine.startswith("250")


# RCPT ----------------------------------------------------------------------


async def test_four_unknown_recipients_then_a_dictionary_attack_across_sessions(
    gateway: Product,
    operator: Operator,
    dns_server: DnsServer,
    route: Sink,
    unique: str,
) -> None:
    domain = f"{unique}.list.example"
    await operator.add("relay_domains", domain, route=route.route, verify="list")
    await operator.add("valid_recipients", f"good@{domain}")
    client = client_ip(dns_server)
    smtp = await open_session(gateway, client)
    await smtp.command("MAIL FROM:<bob@sender.example>")
    unknown = [await smtp.command(f"RCPT TO:<nobody{i}@{domain}>") for i in range(4)]
    assert unknown == [R[Rule.UNKNOWN_RECIPIENT].render()] * 4
    attack = await smtp.command(f"RCPT TO:<good@{domain}>")
    assert attack == R[Rule.DICTIONARY_ATTACK].render()
    closed = await smtp.closed()
    later = await rcpt(gateway, client, "bob@sender.example", f"good@{domain}")

    assert closed
    assert later == R[Rule.DICTIONARY_ATTACK].render()


async def test_a_listed_and_a_catch_all_recipient_are_accepted(
    gateway: Product,
    operator: Operator,
    dns_server: DnsServer,
    route: Sink,
    unique: str,
) -> None:
    listed, catchall = f"{unique}.l.example", f"{unique}.c.example"
    for domain in (listed, catchall):
        await operator.add("relay_domains", domain, route=route.route, verify="list")
    await operator.add("valid_recipients", f"good@{listed}")
    await operator.add("valid_recipients", f"@{catchall}")
    client = client_ip(dns_server)

    assert (await rcpt(gateway, client, "b@sender.example", f"good@{listed}"))[
        :3
    ] == "250"
    assert (await rcpt(gateway, client, "b@sender.example", f"any@{catchall}"))[
        :3
    ] == "250"


async def test_a_bounce_to_a_second_recipient_is_refused(
    gateway: Product, dns_server: DnsServer, relay_domain: str
) -> None:
    smtp = await open_session(gateway, client_ip(dns_server))
    await smtp.command("MAIL FROM:<>")
    first = await smtp.command(f"RCPT TO:<a@{relay_domain}>")
    second = await smtp.command(f"RCPT TO:<b@{relay_domain}>")
    closed = await smtp.closed()

    assert first.startswith("250")
    assert second == R[Rule.BOUNCE_RECIPIENTS].render() and closed


@pytest.mark.parametrize(
    ("local", "refused"),
    [
        ("a%b", True),
        ("a!b", True),
        ("a/b", True),
        ("a|b", True),
        (".alice", True),
        ('"a@b"', True),
        ("a.b", False),
    ],
    ids=["percent", "bang", "slash", "pipe", "leading-dot", "quoted-at", "inner-dot"],
)
async def test_restricted_characters_in_the_local_part_are_refused(
    gateway: Product,
    dns_server: DnsServer,
    relay_domain: str,
    local: str,
    refused: bool,
) -> None:
    answer = await rcpt(
        gateway, client_ip(dns_server), "bob@sender.example", f"{local}@{relay_domain}"
    )

    assert (answer == R[Rule.RESTRICTED_CHARACTERS].render()) is refused
    assert answer.startswith("250") is not refused


async def test_a_relay_network_client_relays_anywhere(
    gateway: Product, operator: Operator, dns_server: DnsServer
) -> None:
    client = client_ip(dns_server)
    await operator.add("relay_networks", client)

    answer = await rcpt(
        gateway, client, "bob@sender.example", "carol@elsewhere.example"
    )

    assert answer.startswith("250")


# The DNSBL answers for the tests below, as the zones would give them.
LISTINGS = [
    ("zen.spamhaus.org", "127.0.0.4", True),
    ("zen.spamhaus.org", "127.255.255.254", False),
    ("bl.spamcop.net", "127.0.0.2", True),
    ("cbl.abuseat.org", "127.0.0.2", True),
    ("rbl.baruwa.net", "127.0.0.2", True),
    ("bl.spameatingmonkey.net", "127.0.0.2", True),
    ("hostkarma.junkemailfilter.com", "127.0.0.2", True),
    ("hostkarma.junkemailfilter.com", "127.0.0.1", False),
    ("hostkarma.junkemailfilter.com", "127.0.0.4", False),
]


def _listing_name(ip: str, zone: str) -> str:
    from services.reputation.rbl import query_name

    return query_name(ip, zone)


@pytest.mark.parametrize(
    ("zone", "answer", "listed"),
    LISTINGS,
    ids=[f"{z.split('.')[0]}-{a}" for z, a, _ in LISTINGS],
)
async def test_a_client_listed_in_a_zone_is_refused_and_other_answers_pass(
    gateway: Product,
    dns_server: DnsServer,
    relay_domain: str,
    zone: str,
    answer: str,
    listed: bool,
) -> None:
    client = client_ip(dns_server)
    dns_server.add(_listing_name(client, zone), "A", answer)

    reply = await rcpt(gateway, client, "bob@sender.example", f"a@{relay_domain}")

    assert (reply == R[Rule.RBL].render(zone=zone)) is listed
    assert reply.startswith("250") is not listed


async def test_an_ipv6_client_is_looked_up_in_nibble_form(
    gateway: Product, dns_server: DnsServer, relay_domain: str
) -> None:
    client = client_ip(dns_server, v6=True)
    dns_server.add(_listing_name(client, "bl.spamcop.net"), "A", "127.0.0.2")

    reply = await rcpt(gateway, client, "bob@sender.example", f"a@{relay_domain}")

    assert reply == R[Rule.RBL].render(zone="bl.spamcop.net")


@pytest.mark.parametrize("exemption", ["dnsbl_exemptions", "approved_ips"])
async def test_exempt_and_approved_clients_skip_the_blocklists(
    gateway: Product,
    operator: Operator,
    dns_server: DnsServer,
    relay_domain: str,
    exemption: str,
) -> None:
    client = client_ip(dns_server)
    dns_server.add(_listing_name(client, "bl.spamcop.net"), "A", "127.0.0.2")
    await operator.add(exemption, client)

    reply = await rcpt(gateway, client, "bob@sender.example", f"a@{relay_domain}")

    assert reply.startswith("250")


async def test_postmaster_of_a_relay_domain_is_accepted_from_a_listed_client(
    gateway: Product, dns_server: DnsServer, relay_domain: str
) -> None:
    client = client_ip(dns_server)
    dns_server.add(_listing_name(client, "bl.spamcop.net"), "A", "127.0.0.2")

    reply = await rcpt(
        gateway, client, "bob@sender.example", f"postmaster@{relay_domain}"
    )

    assert reply.startswith("250")


async def test_a_dead_zone_lets_mail_through_unless_rbl_fails_closed(
    gateway: Product, operator: Operator, dns_server: DnsServer, relay_domain: str
) -> None:
    client = client_ip(dns_server)
    dns_server.silence(_listing_name(client, "zen.spamhaus.org"))
    open_reply = await rcpt(gateway, client, "bob@sender.example", f"a@{relay_domain}")
    await operator.settings(fail_open=["spf", "dkim"])
    try:
        closed_reply = await rcpt(
            gateway, client, "bob@sender.example", f"b@{relay_domain}"
        )
    finally:
        await operator.settings(
            fail_open=[
                "rbl",
                "spf",
                "dkim",
                "sender_verification",
                "recipient_verification",
            ]
        )

    assert open_reply.startswith("250")
    assert closed_reply == replies.TEMPORARY_FAILURE.render()


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
async def test_a_client_without_reverse_dns_is_refused(
    gateway: Product, dns_server: DnsServer, relay_domain: str, v6: bool
) -> None:
    client = client_ip(dns_server, ptr=False, v6=v6)

    reply = await rcpt(gateway, client, "bob@sender.example", f"a@{relay_domain}")

    assert reply == R[Rule.RDNS].render(ip=client)


async def test_a_rule_in_monitor_mode_records_would_reject_and_lets_the_mail_on(
    gateway: Product, operator: Operator, dns_server: DnsServer, relay_domain: str
) -> None:
    client = client_ip(dns_server, ptr=False)
    await operator.settings(modes={"rdns": "monitor"})
    try:
        reply = await rcpt(gateway, client, "bob@sender.example", f"a@{relay_domain}")
    finally:
        await operator.settings(modes={"rdns": "enforce"})
    await asyncio.sleep(0.5)
    decisions = await operator.client.get("/decisions", params={"ip": client})

    assert reply.startswith("250")
    checks = [c for d in decisions.json() for c in d["checks"] if c["rule"] == "rdns"]
    assert checks and checks[0]["result"] == "would_reject"


SENDER_DOMAINS = [
    ("nxdomain", [], True),
    ("null-mx", [("MX", "0 .")], True),
    ("mx", [("MX", "10 mx.other.example.")], False),
    ("a-only", [("A", "192.0.2.80")], False),
]


@pytest.mark.parametrize(
    ("label", "records", "refused"),
    SENDER_DOMAINS,
    ids=[label for label, _, _ in SENDER_DOMAINS],
)
async def test_a_sender_domain_that_cannot_receive_mail_is_refused(
    gateway: Product,
    dns_server: DnsServer,
    relay_domain: str,
    unique: str,
    label: str,
    records: list[tuple[str, str]],
    refused: bool,
) -> None:
    domain = f"{label}.{unique}.example"
    for rdtype, value in records:
        dns_server.add(domain, rdtype, value)

    reply = await rcpt(
        gateway, client_ip(dns_server), f"bob@{domain}", f"a@{relay_domain}"
    )

    assert (reply == R[Rule.SENDER_VERIFICATION].render()) is refused
    assert reply.startswith("250") is not refused


async def test_a_recipient_the_route_refuses_is_refused_by_callout(
    gateway: Product, operator: Operator, dns_server: DnsServer, unique: str
) -> None:
    strict = Sink(rcpt_reply="550 5.1.1 No such user")
    await strict.start()
    try:
        domain = f"{unique}.callout.example"
        await operator.add(
            "relay_domains", domain, route=strict.route, verify="callout"
        )
        refused = await rcpt(
            gateway, client_ip(dns_server), "b@sender.example", f"x@{domain}"
        )
        strict.rcpt_reply = "250 2.1.5 Ok"
        accepted = await rcpt(
            gateway, client_ip(dns_server), "b@sender.example", f"y@{domain}"
        )
    finally:
        await strict.stop()

    assert refused == R[Rule.RECIPIENT_VERIFICATION].render()
    assert accepted.startswith("250")


SPF_POLICIES = [
    ("fail", "v=spf1 ip4:192.0.2.0/24 -all", True),
    ("softfail", "v=spf1 ip4:192.0.2.0/24 ~all", False),
    ("neutral", "v=spf1 ?all", False),
    ("pass", "v=spf1 ip4:198.51.100.0/24 -all", False),
]


@pytest.mark.parametrize(
    ("label", "policy", "refused"), SPF_POLICIES, ids=[p[0] for p in SPF_POLICIES]
)
async def test_only_an_spf_fail_is_refused(
    gateway: Product,
    dns_server: DnsServer,
    relay_domain: str,
    unique: str,
    label: str,
    policy: str,
    refused: bool,
) -> None:
    domain = f"spf-{label}.{unique}.example"
    dns_server.add(domain, "MX", "10 mx.sender.example.")
    dns_server.add(domain, "TXT", policy)

    reply = await rcpt(
        gateway, client_ip(dns_server), f"bob@{domain}", f"a@{relay_domain}"
    )

    assert (reply == R[Rule.SPF].render()) is refused
    assert reply.startswith("250") is not refused


async def test_an_spf_exempt_domain_passes_a_failing_policy(
    gateway: Product,
    operator: Operator,
    dns_server: DnsServer,
    relay_domain: str,
    unique: str,
) -> None:
    domain = f"spf-exempt.{unique}.example"
    dns_server.add(domain, "MX", "10 mx.sender.example.")
    dns_server.add(domain, "TXT", "v=spf1 -all")
    await operator.add("spf_exemptions", domain)

    reply = await rcpt(
        gateway, client_ip(dns_server), f"bob@{domain}", f"a@{relay_domain}"
    )

    assert reply.startswith("250")
