"""Issue 4's bound: a 25 MB message goes through every end-of-DATA rule
holding about two copies of it, the message itself included.

The rules run in process, in the order the content service runs them, on a
real clamd and with the DKIM key served by the loopback DNS server; Python's
allocation tracer measures what they allocate beside the message."""

from __future__ import annotations

import base64
import io
import os
import tracemalloc
import zipfile
from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric import rsa

from services.content.antivirus import Clamd
from services.content.context import Context, Scanners
from services.content.dkim import resolver_txt_lookup
from services.content.stages import DATA_STEPS
from shared.dns import Resolver
from shared.evaluate import evaluate
from shared.lists import ListIndex, default_entries, entry_key
from shared.messages import Outcome, Session, StageRequest
from shared.rules import Stage
from shared.settings import Settings
from tests.support.clamd import ClamdServer
from tests.support.dkimkeys import KeyPair
from tests.support.dnsserver import DnsServer

DOMAIN = "big.example.test"
SELECTOR = "big"


def big_message(keys: KeyPair) -> bytes:
    """25 MB: a text part and one stored zip of random bytes, base64, with
    a relaxed/relaxed DKIM signature over it all."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as writer:
        writer.writestr("figures.bin", os.urandom(18_500_000))
    encoded = base64.encodebytes(archive.getvalue()).replace(b"\n", b"\r\n")
    head = (
        f"From: <alice@{DOMAIN}>\r\n"
        "To: <bob@example.org>\r\n"
        "Subject: the figures\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nThe figures, zipped.  \r\n"
        '--b\r\nContent-Type: application/zip; name="figures.zip"\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\n"
    )
    message = head.encode() + encoded + b"--b--\r\n"
    return keys.sign(
        message,
        SELECTOR,
        DOMAIN,
        [b"from", b"to", b"subject"],
        canonicalize=(b"relaxed", b"relaxed"),
    )


def defaults() -> ListIndex:
    index = ListIndex()
    for name, entry in default_entries(datetime.now(UTC)):
        index.apply(entry_key(name, entry.id), entry.to_json())
    return index


async def test_a_25_mb_message_is_judged_holding_about_two_copies(
    dns_server: DnsServer, resolver: Resolver, clamd_server: ClamdServer
) -> None:
    keys = KeyPair(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    dns_server.zone(DOMAIN)
    dns_server.add(f"{SELECTOR}._domainkey.{DOMAIN}", "TXT", keys.record())
    message = big_message(keys)
    assert 25_000_000 < len(message) <= 26_214_400

    request = StageRequest(
        stage=Stage.DATA,
        session=Session(id="memory", client="192.0.2.1"),
        sender=f"alice@{DOMAIN}",
        recipients=["bob@example.org"],
    )
    scanners = Scanners(Clamd(clamd_server.address), resolver_txt_lookup(resolver))
    ctx = Context(request, message, defaults(), Settings(), scanners)

    tracemalloc.start()
    try:
        verdict = await evaluate(DATA_STEPS, ctx, ctx.settings, "data")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert verdict.outcome is Outcome.PASS, verdict
    assert ctx.results["dkim"] == "pass"
    ran = [check.rule for check in verdict.checks]
    assert ran == ["blocked_extension", "antivirus", "admin_prohibited", "dkim"]
    # The one copy beside the message is the decoded zip (0.74 of it).
    assert peak < 0.9 * len(message), f"{peak / len(message):.2f} copies beside it"
