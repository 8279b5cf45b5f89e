"""The end-of-DATA rules through SMTP on the wire, against the shared product.

Each rule rejects with its exact catalog reply and its positive twin is
delivered to the route. The messages come through the trusted proxy from
clients in networks this module approves, so the reputation checks (bans,
rate limits, reverse DNS, sender verification) that other tests exercise on
the same product stay out of the way. Lists and settings are global to the
shared product: every value here is unique to its test, and every change is
undone when the test ends.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import os
import signal
import subprocess
import time
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import make_msgid
from typing import Any, NamedTuple

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from shared import replies
from shared.rules import Rule
from tests.support.clamd import EICAR, require_clamd
from tests.support.client import Dialogue, send
from tests.support.dkimkeys import KeyPair
from tests.support.dnsserver import DnsServer
from tests.support.natsserver import free_port
from tests.support.operator import Operator
from tests.support.sink import Sink
from tests.support.stack import Product, product

BLOCKED_EXTENSION = replies.RULE_REPLIES[Rule.BLOCKED_EXTENSION].render()
ANTIVIRUS = replies.RULE_REPLIES[Rule.ANTIVIRUS].render()
ADMIN_PROHIBITED = replies.RULE_REPLIES[Rule.ADMIN_PROHIBITED].render()
DKIM = replies.RULE_REPLIES[Rule.DKIM]
TEMPORARY_FAILURE = replies.TEMPORARY_FAILURE.render()

# Clients of these tests; both networks are approved for the module.
CLIENTS_V4 = "100.64.0.0/16"
CLIENTS_V6 = "fd00:c0::/32"
_clients = itertools.count(1)

PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << >>\n%%EOF\n"
DATA_BUDGET = 3.0


# Messages -----------------------------------------------------------------


Attachment = tuple[str, bytes, str]
# Adds an entry to a list for the length of a test.
Listed = Callable[[str, str], Awaitable[None]]
# Builds a message from its sender and recipient.
Build = Callable[[str, str], bytes]


def mail(
    sender: str,
    recipient: str,
    subject: str = "Hello",
    attachments: tuple[Attachment, ...] = (),
) -> bytes:
    """A message as a mail client writes it: CRLF, attachments in base64."""
    message = EmailMessage(policy=SMTP)
    message["From"] = sender
    message["To"] = recipient
    message["Subject"] = subject
    message["Message-ID"] = make_msgid(domain="client.test")
    message.set_content("Hello there.\n")
    for filename, payload, mimetype in attachments:
        maintype, _, subtype = mimetype.partition("/")
        message.add_attachment(
            payload, maintype=maintype, subtype=subtype, filename=filename
        )
    return message.as_bytes()


def with_header(content: bytes, line: bytes) -> bytes:
    """The message with one more header field, written as is."""
    return line + b"\r\n" + content


def zipped(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def nested_zip(levels: int) -> bytes:
    data = zipped({"readme.txt": b"hello"})
    for level in range(levels - 1):
        data = zipped({f"level{level}.zip": data})
    return data


def multipart(parts: list[str], boundary: str) -> str:
    body = "".join(f"--{boundary}\r\n{part}\r\n" for part in parts)
    return (
        f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n'
        f"{body}--{boundary}--"
    )


def wide_mime(sender: str, recipient: str, parts: int) -> bytes:
    leaf = "Content-Type: text/plain\r\n\r\nx"
    return _headers(sender, recipient) + multipart([leaf] * parts, "b").encode()


def deep_mime(sender: str, recipient: str, levels: int) -> bytes:
    part = "Content-Type: text/plain\r\n\r\nx"
    for level in range(levels):
        part = multipart([part], f"b{level}")
    return _headers(sender, recipient) + part.encode()


def _headers(sender: str, recipient: str) -> bytes:
    text = f"From: <{sender}>\r\nTo: <{recipient}>\r\nSubject: parts\r\n"
    return (text + "MIME-Version: 1.0\r\n").encode()


class DkimKey(KeyPair):
    """A key pair a sender signs with; its record goes in the test DNS."""

    def __init__(self) -> None:
        super().__init__(rsa.generate_private_key(public_exponent=65537, key_size=2048))

    def sign_as(self, content: bytes, domain: str, selector: str = "s1") -> bytes:
        signed = [b"from", b"to", b"subject", b"message-id"]
        return self.sign(content, selector, domain, signed)

    def publish(
        self, dns: DnsServer, domain: str, selector: str = "s1", testing: bool = False
    ) -> None:
        record = self.record("y" if testing else "")
        dns.add(f"{selector}._domainkey.{domain}", "TXT", record)


def altered_body(signed: bytes) -> bytes:
    altered = signed.replace(b"Hello there.", b"Hello there, changed.")
    assert altered != signed
    return altered


# Fixtures -----------------------------------------------------------------


@pytest.fixture(scope="module")
async def approved(operator: Operator) -> AsyncIterator[None]:
    """The networks this module's clients come from, approved."""
    entries = [
        await operator.add("approved_ips", network, comment="content tests")
        for network in (CLIENTS_V4, CLIENTS_V6)
    ]
    yield
    for entry in entries:
        await operator.remove("approved_ips", entry["id"])


@pytest.fixture
def client(approved: None) -> str:
    """An IPv4 client address no other test uses."""
    n = next(_clients)
    return f"100.64.{n // 250}.{n % 250 + 1}"


@pytest.fixture
def sender(unique: str) -> str:
    return f"{unique}@sender.example"


@pytest.fixture
def recipient(unique: str, relay_domain: str) -> str:
    return f"{unique}@{relay_domain}"


@pytest.fixture
async def listed(operator: Operator) -> AsyncIterator[Listed]:
    """Add list entries for the test; they are removed when it ends."""
    added: list[tuple[str, str]] = []

    async def add(list_name: str, value: str) -> None:
        entry = await operator.add(list_name, value, comment="content test")
        added.append((list_name, entry["id"]))

    yield add
    for list_name, entry_id in added:
        await operator.remove(list_name, entry_id)


@pytest.fixture
def antivirus(gateway: Product) -> None:
    """The shared product scans with clamd; skip without clamav-daemon."""
    if "PERIMETER_CLAMD" not in gateway.env:
        require_clamd()


@pytest.fixture(scope="module")
def dkim_key() -> DkimKey:
    return DkimKey()


async def transact(
    product: Product, sender: str, recipient: str, content: bytes, client: str
) -> str:
    """One SMTP transaction; the reply to DATA as the client reads it."""
    code, text = await asyncio.to_thread(
        send, product, sender, [recipient], content, client
    )
    return f"{code} {text.decode()}"


def head(content: bytes) -> str:
    return content.split(b"\r\n\r\n", 1)[0].decode()


# blocked_extension --------------------------------------------------------


@pytest.mark.parametrize(
    "attachment",
    [
        ("setup.exe", b"MZ\x90\x00", "application/octet-stream"),
        ("invoice.pdf.exe", b"MZ\x90\x00", "application/octet-stream"),
        ("Résumé.EXE", b"MZ\x90\x00", "application/octet-stream"),
        ("photos.zip", zipped({"dcim/photo.jpg.scr": b"MZ"}), "application/zip"),
    ],
    ids=["exe", "double-extension", "rfc2231-name-in-capitals", "inside-a-zip"],
)
async def test_an_attachment_with_a_blocked_extension_is_refused(
    gateway: Product, client: str, sender: str, recipient: str, attachment: Attachment
) -> None:
    content = mail(sender, recipient, attachments=(attachment,))

    answer = await transact(gateway, sender, recipient, content, client)

    assert answer == BLOCKED_EXTENSION


async def test_a_pdf_attachment_is_delivered(
    gateway: Product, route: Sink, client: str, sender: str, recipient: str
) -> None:
    content = mail(
        sender, recipient, attachments=(("report.pdf", PDF, "application/pdf"),)
    )

    answer = await transact(gateway, sender, recipient, content, client)

    assert answer.startswith("250 2.0.0 Ok: queued as ")
    delivered = await route.wait_for(recipient)
    assert content.split(b"\r\n\r\n", 1)[1] in delivered.content


async def test_monitor_mode_delivers_a_blocked_extension_and_records_it(
    gateway: Product,
    operator: Operator,
    route: Sink,
    client: str,
    sender: str,
    recipient: str,
) -> None:
    modes = (await operator.client.get("/settings")).json()["modes"]
    before = modes.get(Rule.BLOCKED_EXTENSION.value)
    exe = ("setup.exe", b"MZ\x90\x00", "application/octet-stream")
    await operator.settings(modes={Rule.BLOCKED_EXTENSION.value: "monitor"})
    try:
        content = mail(sender, recipient, attachments=(exe,))
        answer = await transact(gateway, sender, recipient, content, client)
    finally:
        await operator.settings(modes={Rule.BLOCKED_EXTENSION.value: before})

    assert answer.startswith("250 ")
    await route.wait_for(recipient)
    record = await decision(operator, sender, Rule.BLOCKED_EXTENSION)
    assert record["outcome"] == "accepted"
    assert {
        "stage": "data",
        "rule": Rule.BLOCKED_EXTENSION.value,
        "result": "would_reject",
    }.items() <= _check(record, Rule.BLOCKED_EXTENSION).items()


async def decision(operator: Operator, sender: str, rule: Rule) -> dict[str, Any]:
    """The newest decision record from `sender` where `rule` acted."""
    params = {"sender": sender, "rule": rule.value}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        response = await operator.client.get("/decisions", params=params)
        assert response.status_code == 200, response.text
        if records := response.json():
            return dict(records[0])
        await asyncio.sleep(0.2)
    raise AssertionError(f"no decision record from {sender} for {rule}")


def _check(record: dict[str, Any], rule: Rule) -> dict[str, Any]:
    return next(c for c in record["checks"] if c["rule"] == rule.value)


# Bounds: refused under the antivirus rule's reply -------------------------


@pytest.mark.parametrize(
    "build",
    [
        lambda s, r: wide_mime(s, r, parts=10_000),
        lambda s, r: deep_mime(s, r, levels=100),
        lambda s, r: mail(
            s, r, attachments=(("deep.zip", nested_zip(6), "application/zip"),)
        ),
    ],
    ids=["ten-thousand-parts", "a-hundred-levels", "zips-six-deep"],
)
async def test_a_message_over_the_walks_bounds_is_refused_by_security_policy(
    gateway: Product, client: str, sender: str, recipient: str, build: Build
) -> None:
    started = time.monotonic()

    answer = await transact(
        gateway, sender, recipient, build(sender, recipient), client
    )

    assert answer == ANTIVIRUS
    assert time.monotonic() - started < 10


# antivirus ----------------------------------------------------------------


async def test_eicar_in_an_attachment_is_refused(
    antivirus: None, gateway: Product, client: str, sender: str, recipient: str
) -> None:
    content = mail(sender, recipient, attachments=(("eicar.txt", EICAR, "text/plain"),))

    answer = await transact(gateway, sender, recipient, content, client)

    assert answer == ANTIVIRUS


async def test_a_clean_attachment_passes_the_scan(
    antivirus: None,
    gateway: Product,
    route: Sink,
    client: str,
    sender: str,
    recipient: str,
) -> None:
    clean = b"Nothing to see here, only the usual figures.\n"
    content = mail(sender, recipient, attachments=(("notes.txt", clean, "text/plain"),))

    answer = await transact(gateway, sender, recipient, content, client)

    assert answer.startswith("250 ")
    await route.wait_for(recipient)


async def test_a_client_in_av_exemptions_delivers_eicar(
    antivirus: None,
    gateway: Product,
    route: Sink,
    listed: Listed,
    client: str,
    sender: str,
    recipient: str,
) -> None:
    await listed("av_exemptions", client)
    content = mail(sender, recipient, attachments=(("eicar.txt", EICAR, "text/plain"),))

    answer = await transact(gateway, sender, recipient, content, client)

    assert answer.startswith("250 ")
    await route.wait_for(recipient)


# admin_prohibited ---------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "subject"),
    [
        ("wire transfer {u}", "Re: WIRE TRANSFER {u} due today"),
        ("re:^urgent .*{u}$", "Urgent payment for {u}"),
        ("überweisung {u}", "Dringende Überweisung {u}"),
    ],
    ids=["substring", "regular-expression", "encoded-word-subject"],
)
async def test_a_blocked_subject_is_refused(
    gateway: Product,
    listed: Listed,
    client: str,
    sender: str,
    recipient: str,
    unique: str,
    entry: str,
    subject: str,
) -> None:
    await listed("blocked_subjects", entry.format(u=unique))
    content = mail(sender, recipient, subject.format(u=unique))

    answer = await transact(gateway, sender, recipient, content, client)

    assert answer == ADMIN_PROHIBITED


async def test_a_subject_that_matches_no_entry_is_delivered(
    gateway: Product,
    route: Sink,
    listed: Listed,
    client: str,
    sender: str,
    recipient: str,
    unique: str,
) -> None:
    await listed("blocked_subjects", f"wire transfer {unique}")
    await listed("blocked_subjects", f"re:^urgent .*{unique}$")
    content = mail(sender, recipient, f"Not urgent: the wire of {unique}")

    answer = await transact(gateway, sender, recipient, content, client)

    assert answer.startswith("250 ")
    await route.wait_for(recipient)


@pytest.mark.parametrize(
    "reply_to",
    [b"Reply-To:", b"Reply-To:    \t "],
    ids=["empty", "white-space"],
)
async def test_an_empty_reply_to_is_refused(
    gateway: Product, client: str, sender: str, recipient: str, reply_to: bytes
) -> None:
    content = with_header(mail(sender, recipient), reply_to)

    answer = await transact(gateway, sender, recipient, content, client)

    assert answer == ADMIN_PROHIBITED


@pytest.mark.parametrize(
    "exemption",
    ["client-address", "client-network", "sender-address", "sender-parent-domain"],
)
async def test_an_exempt_client_or_sender_may_send_an_empty_reply_to(
    gateway: Product,
    route: Sink,
    listed: Listed,
    client: str,
    recipient: str,
    unique: str,
    exemption: str,
) -> None:
    n = next(_clients)
    sender = f"news@lists.{unique}.example"
    if exemption == "client-network":
        client = f"fd00:c0:{n}::25"
    exempt = {
        "client-address": client,
        "client-network": f"fd00:c0:{n}::/48",
        "sender-address": sender,
        "sender-parent-domain": f"{unique}.example",
    }[exemption]
    await listed("empty_reply_exemptions", exempt)
    content = with_header(mail(sender, recipient), b"Reply-To: ")

    answer = await transact(gateway, sender, recipient, content, client)

    assert answer.startswith("250 ")
    await route.wait_for(recipient)


# dkim ---------------------------------------------------------------------


async def test_a_valid_dkim_signature_is_delivered_with_dkim_pass(
    gateway: Product,
    route: Sink,
    dns_server: DnsServer,
    dkim_key: DkimKey,
    client: str,
    sender: str,
    recipient: str,
    unique: str,
) -> None:
    domain = f"{unique}.signer.example"
    dkim_key.publish(dns_server, domain)
    content = dkim_key.sign_as(mail(sender, recipient), domain)

    answer = await transact(gateway, sender, recipient, content, client)

    assert answer.startswith("250 ")
    delivered = await route.wait_for(recipient)
    assert f"dkim=pass header.d={domain} header.s=s1 header.b=" in head(
        delivered.content
    )


async def test_a_dkim_signed_message_with_an_altered_body_is_refused(
    gateway: Product,
    dns_server: DnsServer,
    dkim_key: DkimKey,
    client: str,
    sender: str,
    recipient: str,
    unique: str,
) -> None:
    domain = f"{unique}.signer.example"
    dkim_key.publish(dns_server, domain)
    content = altered_body(dkim_key.sign_as(mail(sender, recipient), domain))

    answer = await transact(gateway, sender, recipient, content, client)

    assert answer == DKIM.render(reason="body hash mismatch")
    assert answer == "550 5.7.20 DKIM failure: body hash mismatch"


async def test_a_bad_signature_under_a_key_in_testing_mode_is_delivered(
    gateway: Product,
    route: Sink,
    dns_server: DnsServer,
    dkim_key: DkimKey,
    client: str,
    sender: str,
    recipient: str,
    unique: str,
) -> None:
    domain = f"{unique}.signer.example"
    dkim_key.publish(dns_server, domain, testing=True)
    content = altered_body(dkim_key.sign_as(mail(sender, recipient), domain))

    answer = await transact(gateway, sender, recipient, content, client)

    assert answer.startswith("250 ")
    delivered = await route.wait_for(recipient)
    neutral = f'dkim=neutral reason="body hash mismatch" header.d={domain} header.s=s1'
    assert neutral in head(delivered.content)


async def test_a_message_without_a_signature_is_delivered_with_dkim_none(
    gateway: Product, route: Sink, client: str, sender: str, recipient: str
) -> None:
    content = mail(sender, recipient)

    answer = await transact(gateway, sender, recipient, content, client)

    assert answer.startswith("250 ")
    delivered = await route.wait_for(recipient)
    assert "\tdkim=none;" in head(delivered.content)


@pytest.mark.parametrize("exemption", ["client", "signing-domain"])
async def test_a_dkim_exempt_client_or_signing_domain_is_not_checked(
    gateway: Product,
    route: Sink,
    dns_server: DnsServer,
    dkim_key: DkimKey,
    listed: Listed,
    client: str,
    sender: str,
    recipient: str,
    unique: str,
    exemption: str,
) -> None:
    domain = f"{unique}.legacy.example"
    dkim_key.publish(dns_server, domain)
    await listed("dkim_exemptions", client if exemption == "client" else domain)
    content = altered_body(dkim_key.sign_as(mail(sender, recipient), domain))

    answer = await transact(gateway, sender, recipient, content, client)

    assert answer.startswith("250 ")
    await route.wait_for(recipient)


# A product of its own: one content worker, a dead clamd ----------------------


class OneWorker(NamedTuple):
    product: Product
    operator: Operator
    domain: str


@pytest.fixture(scope="module")
async def one_worker(
    gateway: Product, dns_server_session: DnsServer, route: Sink
) -> AsyncIterator[OneWorker]:
    """A product of its own with one content replica, a short DATA budget
    and a clamd address where nothing listens, and a relay domain on it
    routed to `route`. The IPv4 clients are in av_exemptions, so only the
    IPv6 ones meet the dead clamd. (`gateway` comes first, so that the DNS
    both use is set up.)"""
    running = product(
        dns_port=dns_server_session.address[1],
        PERIMETER_DATA_BUDGET=str(DATA_BUDGET),
        PERIMETER_CLAMD=f"tcp://127.0.0.1:{free_port()}",
    )
    operator = Operator(running)
    try:
        await asyncio.to_thread(running.start)
        domain = "one-worker.example"
        await operator.add("relay_domains", domain, route=route.route, verify="none")
        for network in (CLIENTS_V4, CLIENTS_V6):
            await operator.add("approved_ips", network)
        await operator.add("av_exemptions", CLIENTS_V4)
        yield OneWorker(running, operator, domain)
    finally:
        await operator.close()
        await asyncio.to_thread(running.stop)
        running.nats.stop()


async def test_an_unreachable_clamd_means_451_for_a_client_it_must_scan(
    one_worker: OneWorker, route: Sink, unique: str
) -> None:
    running, operator, domain = one_worker
    sender, recipient = f"{unique}@sender.example", f"{unique}@{domain}"
    client = f"fd00:c0:ffff::{next(_clients):x}"

    answer = await transact(running, sender, recipient, mail(sender, recipient), client)

    assert answer == TEMPORARY_FAILURE
    record = await decision(operator, sender, Rule.ANTIVIRUS)
    assert _check(record, Rule.ANTIVIRUS)["result"] == "tempfail"
    assert route.count(recipient) == 0


@pytest.fixture
def worker(one_worker: OneWorker) -> Iterator[subprocess.Popen[bytes]]:
    """The one content process; it runs again after the test, whatever the
    test did to it."""
    stack = one_worker[0].stack
    assert stack is not None
    process = stack.services["content"][-1]
    yield process
    if process.poll() is None:
        process.send_signal(signal.SIGCONT)
    elif all(p.poll() is not None for p in stack.services["content"]):
        stack.start_service("content")


async def end_of_data(
    product: Product,
    client: str,
    sender: str,
    recipient: str,
    meanwhile: Callable[[], Awaitable[None]],
) -> tuple[str, float]:
    """Send a message with a 4 MB attachment; `meanwhile` runs once the
    data is out. The reply to the end of data, and how long it took."""
    big = os.urandom(4_000_000)
    content = mail(
        sender, recipient, attachments=(("big.pdf", big, "application/pdf"),)
    )
    # So that the data needs no dot-stuffing and ends with its line end.
    assert b"\r\n." not in content and content.endswith(b"\r\n")
    async with Dialogue(product, client) as smtp:
        await smtp.reply()
        await smtp.command("EHLO client.test")
        await smtp.command(f"MAIL FROM:<{sender}>")
        assert (await smtp.command(f"RCPT TO:<{recipient}>")).startswith("250")
        assert (await smtp.command("DATA")).startswith("354")
        await smtp.send(content + b".\r\n")
        started = time.monotonic()
        await meanwhile()
        answer = await smtp.reply(timeout=30)
    return answer, time.monotonic() - started


async def delivered_once_it_answers(
    product: Product, route: Sink, client: str, sender: str, recipient: str
) -> None:
    """Send until the content stage answers again (a restarted worker takes
    a moment to subscribe), then wait for the message at the route."""
    deadline = time.monotonic() + 30
    content = mail(sender, recipient)
    answer = await transact(product, sender, recipient, content, client)
    while answer == TEMPORARY_FAILURE and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        answer = await transact(product, sender, recipient, content, client)
    assert answer.startswith("250 "), answer
    await route.wait_for(recipient)


@pytest.mark.parametrize("killed", [False, True], ids=["stopped", "killed"])
async def test_a_content_worker_that_stops_mid_scan_means_451_and_no_delivery(
    one_worker: OneWorker,
    worker: subprocess.Popen[bytes],
    route: Sink,
    client: str,
    unique: str,
    killed: bool,
) -> None:
    running, _, domain = one_worker
    sender, recipient = f"{unique}@sender.example", f"{unique}@{domain}"

    async def kill_once_it_holds_the_request() -> None:
        if killed:
            await asyncio.sleep(DATA_BUDGET / 2)
            worker.kill()
            await asyncio.to_thread(worker.wait)

    worker.send_signal(signal.SIGSTOP)
    try:
        answer, seconds = await end_of_data(
            running, client, sender, recipient, kill_once_it_holds_the_request
        )
    finally:
        worker.send_signal(signal.SIGCONT)

    assert answer == TEMPORARY_FAILURE
    assert seconds < DATA_BUDGET + 4  # the budget answered, not a default
    await asyncio.sleep(1.0)
    assert route.count(recipient) == 0

    if killed:
        assert running.stack is not None
        running.stack.start_service("content")
    again = f"again-{recipient}"
    await delivered_once_it_answers(running, route, client, sender, again)
