"""What the benchmark sets up around the product: the loopback DNS server
and its records, the operator's configuration through the admin API, and
the signed message of the content section.

The product never asks a real DNS server: PERIMETER_DNS_NAMESERVERS names
the loopback server, which answers for every client and sender the load
uses, so that every reputation rule that exists runs and passes: a PTR
record and its forward A record (rdns, iprev), an MX and an A record
(sender verification), an SPF record that allows the client (spf), and
NXDOMAIN with an SOA for every DNSBL zone (rbl, cacheable per RFC 2308).
"""

from __future__ import annotations

import base64
import threading
from email.message import EmailMessage
from email.policy import SMTP
from ipaddress import ip_address
from typing import Any

import dkim
import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from dnslib import DNSRecord
from dnslib.server import DNSHandler

from shared.rules import Rule
from tests.support.dnsserver import DnsServer
from tests.support.stack import TOKEN, Product

DOMAIN = "bench.example"
RCPT_DOMAIN = "rcpt.bench.example"
SENDER = "bench@sender.bench.example"
HELO = "client.bench.example"
SELECTOR = "bench"
SIGNING_DOMAIN = "sender.bench.example"
CLIENT_BASE = "198.18.0.1"  # RFC 2544: addresses for benchmarking
SPINE_RULES = {Rule.HELO_IP, Rule.HELO_REQUIRED, Rule.RELAY}
_TTL = 3600


class CountingDns(DnsServer):
    """The tests' DNS server, counting every question it is asked."""

    def __init__(self) -> None:
        super().__init__()
        self.questions = 0
        self._count_lock = threading.Lock()

    def resolve(self, request: DNSRecord, handler: DNSHandler) -> DNSRecord:
        with self._count_lock:
            self.questions += 1
        return super().resolve(request, handler)


def local_records(dns: CountingDns) -> None:
    """Records for the load's own address 127.0.0.1 and its sender."""
    dns.zone(DOMAIN, minimum=_TTL)
    dns.zone("127.in-addr.arpa", minimum=_TTL)
    dns.zone("198.in-addr.arpa", minimum=_TTL)
    dns.add("127.0.0.1", "PTR", f"{HELO}.", _TTL)
    dns.add(HELO, "A", "127.0.0.1", _TTL)
    dns.add(f"mx.{DOMAIN}", "A", "127.0.0.1", _TTL)
    _sender_domain(dns, SIGNING_DOMAIN, "127.0.0.0/8")


def client_records(dns: CountingDns, count: int) -> None:
    """Records for `count` distinct clients of the RCPT section: client n
    is CLIENT_BASE + n, named c{n}.clients.bench.example, sending as
    bench@s{n}.senders.bench.example."""
    base = ip_address(CLIENT_BASE)
    for n in range(count):
        address = str(base + n)
        name = f"c{n}.clients.{DOMAIN}"
        dns.add(address, "PTR", f"{name}.", _TTL)
        dns.add(name, "A", address, _TTL)
        _sender_domain(dns, f"s{n}.senders.{DOMAIN}", f"{address}/32")


def _sender_domain(dns: CountingDns, domain: str, network: str) -> None:
    dns.add(domain, "MX", f"10 mx.{DOMAIN}.", _TTL)
    dns.add(domain, "A", "127.0.0.1", _TTL)
    dns.add(domain, "TXT", f"v=spf1 ip4:{network} -all", _TTL)


class Admin:
    """The operator's side of the benchmark, over the admin API."""

    def __init__(self, product: Product) -> None:
        self.client = httpx.AsyncClient(
            base_url=product.admin_url + "/api/v1",
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=10.0,
        )

    async def relay_domain(self, domain: str, route: str, verify: str) -> None:
        entry = {"value": domain, "route": route, "verify": verify}
        response = await self.client.post("/lists/relay_domains", json=entry)
        response.raise_for_status()

    async def settings(self, **changes: Any) -> bool:
        """PATCH the settings; False when the product refuses them."""
        response = await self.client.patch("/settings", json=changes)
        return response.status_code == 200

    async def modes(self, spine_only: bool) -> bool:
        """Every rule enforced, or only the spine's three rules on."""
        modes = {
            rule.value: "enforce" if not spine_only or rule in SPINE_RULES else "off"
            for rule in Rule
        }
        return await self.settings(modes=modes)

    async def rbl_zones(self) -> list[str]:
        """The DNSBL zones the product queries, as the operator sees them."""
        response = await self.client.get("/lists/rbl_zones")
        if response.status_code != 200:
            return []
        body = response.json()
        entries = body.get("entries", body) if isinstance(body, dict) else body
        return [str(entry["value"]) for entry in entries]

    async def close(self) -> None:
        await self.client.aclose()


def signed_message(dns: CountingDns, size: int = 30 * 1024) -> bytes:
    """A message of about `size` bytes with a PDF attachment, DKIM-signed
    by sender.bench.example, whose key the DNS server publishes."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    record = f"v=DKIM1; k=rsa; p={base64.b64encode(public).decode()}"
    dns.add(f"{SELECTOR}._domainkey.{SIGNING_DOMAIN}", "TXT", record, _TTL)
    message = _message_with_pdf(size)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    headers = [b"From", b"To", b"Subject", b"Date", b"Message-ID"]
    signature = dkim.sign(
        message,
        SELECTOR.encode(),
        SIGNING_DOMAIN.encode(),
        private,
        include_headers=headers,
    )
    return bytes(signature) + message


def _message_with_pdf(size: int) -> bytes:
    message = EmailMessage(policy=SMTP)
    message["From"] = f"Bench <{SENDER}>"
    message["To"] = f"<user@{DOMAIN}>"
    message["Subject"] = "Invoice for the benchmark"
    message["Date"] = "Thu, 01 Jan 2026 00:00:00 +0000"
    message["Message-ID"] = "<invoice@client.bench.example>"
    message.set_content("Please find the invoice attached.\n" * 20)
    # Base64 grows the attachment by a third; the rest is headers and text.
    pdf = _pdf(max(1024, (size - 2048) * 3 // 4))
    message.add_attachment(
        pdf, maintype="application", subtype="pdf", filename="invoice.pdf"
    )
    return message.as_bytes()


def _pdf(size: int) -> bytes:
    """A small well-formed PDF whose content stream fills `size` bytes."""
    text = b"BT /F1 12 Tf 72 720 Td (Invoice 2026-0001: 42 widgets) Tj ET\n"
    stream = text * max(1, (size - 400) // len(text))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /Contents 4 0 R >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream),
    ]
    body = b"%PDF-1.4\n"
    offsets = []
    for number, content in enumerate(objects, 1):
        offsets.append(len(body))
        body += b"%d 0 obj\n%s\nendobj\n" % (number, content)
    xref = len(body)
    body += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    body += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    trailer = b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n"
    return body + trailer % (len(objects) + 1, xref)
