"""dkim: signatures made in the tests with keys generated in the tests, the
public keys served by the loopback DNS server."""

from __future__ import annotations

import base64
import hashlib
import math
import secrets
from typing import Protocol

import dkim as dkimpy
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from dkim.canonicalization import CanonicalizationPolicy
from nacl import signing

from services.content import dkim as signatures
from services.content.dkim import (
    DkimVerdict,
    Reason,
    SignatureResult,
    resolver_txt_lookup,
    verify,
)
from shared.dns import Resolver
from tests.support.dkimkeys import KeyPair
from tests.support.dnsserver import DnsServer

DOMAIN = "example.test"
SIGNED = [b"from", b"to", b"subject", b"date"]

MESSAGE = (
    b"From: Alice <alice@example.test>\r\n"
    b"To: Bob <bob@example.org>\r\n"
    b"Subject: quarterly figures\r\n"
    b"Date: Tue, 01 Dec 2026 10:00:00 +0000\r\n"
    b"Message-ID: <1@example.test>\r\n"
    b"\r\n"
    b"The figures are attached.\r\n"
    b"-- \r\nAlice\r\n"
)


def _probable_prime(bits: int) -> int:
    """A random prime (Miller-Rabin, 40 rounds)."""
    while True:
        candidate = secrets.randbits(bits) | (1 << (bits - 1)) | 1
        if _miller_rabin(candidate):
            return candidate


def _miller_rabin(n: int) -> bool:
    d, r = n - 1, 0
    while d % 2 == 0:
        d, r = d // 2, r + 1
    for _ in range(40):
        x = pow(secrets.randbelow(n - 3) + 2, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def _weak_key(bits: int) -> rsa.RSAPrivateKey:
    """An RSA key shorter than cryptography will generate (it refuses under
    1,024 bits), built from its primes."""
    e = 65537
    while True:
        p, q = _probable_prime(bits // 2), _probable_prime(bits // 2)
        phi = (p - 1) * (q - 1)
        if p != q and math.gcd(e, phi) == 1:
            break
    d = pow(e, -1, phi)
    numbers = rsa.RSAPrivateNumbers(
        p,
        q,
        d,
        rsa.rsa_crt_dmp1(d, p),
        rsa.rsa_crt_dmq1(d, q),
        rsa.rsa_crt_iqmp(p, q),
        rsa.RSAPublicNumbers(e, p * q),
    )
    return numbers.private_key(unsafe_skip_rsa_key_validation=True)


class Signer:
    """One selector's key pair: signs messages and writes its key record."""

    def __init__(self, selector: str, key: rsa.RSAPrivateKey) -> None:
        self.selector = selector
        self.keys = KeyPair(key)

    def sign(self, message: bytes, algorithm: bytes = b"rsa-sha256") -> bytes:
        return self.keys.sign(message, self.selector, DOMAIN, SIGNED, algorithm)

    def record(self, flags: str = "") -> str:
        return self.keys.record(flags)

    @property
    def name(self) -> str:
        return f"{self.selector}._domainkey.{DOMAIN}"


@pytest.fixture(scope="module")
def rsa2048() -> Signer:
    return Signer(
        "s2048", rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )


@pytest.fixture(scope="module")
def rsa1024() -> Signer:
    return Signer(
        "s1024", rsa.generate_private_key(public_exponent=65537, key_size=1024)
    )


@pytest.fixture(scope="module")
def rsa512() -> Signer:
    return Signer("s512", _weak_key(512))


class Publish(Protocol):
    def __call__(self, signer: Signer, flags: str = "") -> None: ...


@pytest.fixture
def publish(dns_server: DnsServer) -> Publish:
    """Put a signer's key record in the DNS, with `t=` flags if given."""
    dns_server.zone(DOMAIN)

    def add(signer: Signer, flags: str = "") -> None:
        dns_server.add(signer.name, "TXT", signer.record(flags))

    return add


async def check(message: bytes, resolver: Resolver) -> DkimVerdict:
    return await verify(message, resolver_txt_lookup(resolver))


def altered_body(signed: bytes) -> bytes:
    return signed.replace(b"The figures", b"The new figures")


def altered_subject(signed: bytes) -> bytes:
    return signed.replace(b"quarterly figures", b"quarterly figures!")


@pytest.mark.parametrize("key", ["rsa2048", "rsa1024"])
async def test_a_valid_signature_passes(
    key: str,
    request: pytest.FixtureRequest,
    publish: Publish,
    resolver: Resolver,
) -> None:
    signer: Signer = request.getfixturevalue(key)
    publish(signer)

    verdict = await check(signer.sign(MESSAGE), resolver)

    assert verdict.outcome == "pass"
    assert not verdict.failed
    [result] = verdict.signatures
    assert (result.domain, result.selector, result.outcome) == (
        DOMAIN,
        signer.selector,
        "pass",
    )


async def test_an_altered_body_is_a_body_hash_mismatch(
    rsa2048: Signer, publish: Publish, resolver: Resolver
) -> None:
    publish(rsa2048)

    verdict = await check(altered_body(rsa2048.sign(MESSAGE)), resolver)

    assert verdict.failed
    assert verdict.reason is Reason.BODY_HASH_MISMATCH
    assert verdict.signatures[0].outcome == "fail"


async def test_an_altered_signed_header_does_not_verify(
    rsa2048: Signer, publish: Publish, resolver: Resolver
) -> None:
    publish(rsa2048)

    verdict = await check(altered_subject(rsa2048.sign(MESSAGE)), resolver)

    assert verdict.failed
    assert verdict.reason is Reason.BAD_SIGNATURE
    assert verdict.reason == "signature did not verify"


async def test_a_signature_without_a_published_key_has_no_key(
    rsa2048: Signer, dns_server: DnsServer, resolver: Resolver
) -> None:
    dns_server.zone(DOMAIN)

    verdict = await check(rsa2048.sign(MESSAGE), resolver)

    assert verdict.failed
    assert verdict.reason is Reason.NO_KEY
    assert verdict.signatures[0].outcome == "permerror"


async def test_a_key_in_testing_mode_does_not_fail_a_bad_signature(
    rsa2048: Signer, publish: Publish, resolver: Resolver
) -> None:
    publish(rsa2048, "y")

    verdict = await check(altered_body(rsa2048.sign(MESSAGE)), resolver)

    assert not verdict.failed
    assert verdict.outcome == "none"
    assert verdict.signatures[0].outcome == "neutral"


async def test_a_key_in_testing_mode_still_passes_a_good_signature(
    rsa2048: Signer, publish: Publish, resolver: Resolver
) -> None:
    publish(rsa2048, "y:s")

    verdict = await check(rsa2048.sign(MESSAGE), resolver)

    assert verdict.outcome == "pass"


async def test_a_512_bit_key_is_too_short(
    rsa512: Signer, publish: Publish, resolver: Resolver
) -> None:
    publish(rsa512)

    verdict = await check(rsa512.sign(MESSAGE), resolver)

    assert verdict.failed
    assert verdict.reason is Reason.KEY_TOO_SHORT


async def test_a_message_without_signature_passes(resolver: Resolver) -> None:
    verdict = await check(MESSAGE, resolver)

    assert verdict == DkimVerdict("none")
    assert verdict.authres() == ["dkim=none"]


async def test_one_good_and_one_bad_signature_pass(
    rsa2048: Signer,
    rsa1024: Signer,
    publish: Publish,
    resolver: Resolver,
) -> None:
    publish(rsa2048)
    publish(rsa1024)
    good = rsa2048.sign(MESSAGE)
    bad_header = rsa1024.sign(altered_body(MESSAGE)).split(b"From:")[0]

    verdict = await check(bad_header + good, resolver)

    assert verdict.outcome == "pass"
    assert [r.outcome for r in verdict.signatures] == ["fail", "pass"]


async def test_a_revoked_key_fails(
    rsa2048: Signer, dns_server: DnsServer, resolver: Resolver
) -> None:
    dns_server.zone(DOMAIN)
    dns_server.add(rsa2048.name, "TXT", "v=DKIM1; k=rsa; p=")

    verdict = await check(rsa2048.sign(MESSAGE), resolver)

    assert verdict.reason is Reason.KEY_REVOKED


async def test_an_expired_signature_fails(
    rsa2048: Signer, publish: Publish, resolver: Resolver
) -> None:
    publish(rsa2048)
    signed = rsa2048.sign(MESSAGE).replace(b"v=1;", b"v=1; x=1000000000;", 1)

    verdict = await check(signed, resolver)

    assert verdict.reason is Reason.EXPIRED


async def test_a_signature_missing_its_body_hash_is_malformed(
    rsa2048: Signer, publish: Publish, resolver: Resolver
) -> None:
    publish(rsa2048)
    signed = rsa2048.sign(MESSAGE).replace(b" bh=", b" xh=", 1)

    verdict = await check(signed, resolver)

    assert verdict.reason is Reason.MALFORMED
    assert verdict.signatures[0].domain == DOMAIN


async def test_an_rsa_sha1_signature_is_not_accepted(
    rsa2048: Signer, publish: Publish, resolver: Resolver
) -> None:
    publish(rsa2048)

    verdict = await check(rsa2048.sign(MESSAGE, b"rsa-sha1"), resolver)

    assert verdict.failed
    assert verdict.reason is Reason.BAD_SIGNATURE


async def test_a_dns_failure_is_a_temporary_error_not_a_failure(
    rsa2048: Signer, dns_server: DnsServer, resolver: Resolver
) -> None:
    dns_server.fail(DOMAIN)

    verdict = await check(rsa2048.sign(MESSAGE), resolver)

    assert verdict.unavailable
    assert not verdict.failed
    assert verdict.reason is Reason.DNS_TEMPORARY
    assert verdict.signatures[0].outcome == "temperror"


async def test_a_dns_timeout_is_a_temporary_error(
    rsa2048: Signer, dns_server: DnsServer, resolver: Resolver
) -> None:
    dns_server.silence(DOMAIN)

    verdict = await check(rsa2048.sign(MESSAGE), resolver)

    assert verdict.unavailable


async def test_a_plain_function_can_serve_the_keys(rsa1024: Signer) -> None:
    records = {f"{rsa1024.name}.".encode(): rsa1024.record().encode()}

    verdict = await verify(rsa1024.sign(MESSAGE), records.get)

    assert verdict.outcome == "pass"


async def test_a_lookup_that_raises_is_a_temporary_error(rsa1024: Signer) -> None:
    def broken(name: bytes) -> bytes | None:
        raise OSError("resolver gone")

    verdict = await verify(rsa1024.sign(MESSAGE), broken)

    assert verdict.unavailable


async def test_the_results_read_as_authentication_results_entries(
    rsa2048: Signer, publish: Publish, resolver: Resolver
) -> None:
    publish(rsa2048)

    verdict = await check(altered_body(rsa2048.sign(MESSAGE)), resolver)

    [entry] = verdict.authres()
    assert entry.startswith(
        'dkim=fail reason="body hash mismatch" header.d=example.test header.s=s2048'
    )
    assert " header.b=" in entry


def test_a_hostile_signing_domain_is_quoted_in_authentication_results() -> None:
    result = SignatureResult('evil"; spf=pass\r\n', "s", "fail", Reason.BAD_SIGNATURE)

    assert 'header.d="evil\\"; spf=pass"' in result.authres()


async def test_a_signed_message_with_an_unreadable_header_block_fails(
    rsa2048: Signer, publish: Publish, resolver: Resolver
) -> None:
    publish(rsa2048)
    signed = rsa2048.sign(MESSAGE).replace(b"\r\n\r\n", b"\r\nno colon here\r\n\r\n")

    verdict = await check(signed, resolver)

    assert verdict.reason is Reason.MALFORMED


async def test_an_unsigned_message_with_an_unreadable_header_block_passes(
    resolver: Resolver,
) -> None:
    broken = MESSAGE.replace(b"\r\n\r\n", b"\r\nno colon here\r\n\r\n")

    verdict = await check(broken, resolver)

    assert verdict.outcome == "none"


BODIES = [
    b"",
    b"\r\n",
    b"\r\n\r\n\r\n",
    b"one line\r\n",
    b"no final line break",
    b"text\r\n\r\n\r\n",
    b"  \t \r\n \r\n",
    b"a  b\t\tc   \r\nd \t\r\n\r\n  \r\n",
    b"lone\rcarriage\nreturns\r\n\r",
    b"x" * 50 + b"   " + b"y" * 3 + b"\t\t\r\n" * 4 + b"end\r\n\r\n",
]


@pytest.mark.parametrize("chunk", [1, 3, 7, 1024 * 1024])
@pytest.mark.parametrize("canonicalization", [b"simple", b"relaxed"])
@pytest.mark.parametrize("limit", [None, 0, 5])
def test_the_body_hash_is_the_one_dkimpy_computes(
    chunk: int,
    canonicalization: bytes,
    limit: int | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(signatures, "_CHUNK", chunk)
    policy = CanonicalizationPolicy.from_c_value(b"simple/" + canonicalization)
    tags = {b"a": b"rsa-sha256", b"c": b"simple/" + canonicalization}
    if limit is not None:
        tags[b"l"] = str(limit).encode()
    for body in BODIES:
        canonical = policy.canonicalize_body(body)
        expected = hashlib.sha256(canonical[:limit]).digest()
        assert signatures.body_hash(memoryview(body), tags) == expected, body


async def test_a_relaxed_signature_with_a_length_limit_passes_with_text_added(
    rsa2048: Signer, publish: Publish, resolver: Resolver
) -> None:
    publish(rsa2048)
    signed = rsa2048.keys.sign(
        MESSAGE.replace(b"attached.", b"attached.   \t"),
        rsa2048.selector,
        DOMAIN,
        SIGNED,
        canonicalize=(b"relaxed", b"relaxed"),
        length=True,
    )

    verdict = await check(signed + b"A footer that a list added.\r\n", resolver)

    assert verdict.outcome == "pass", verdict


async def test_an_ed25519_signature_passes_and_an_altered_one_fails(
    dns_server: DnsServer, resolver: Resolver
) -> None:
    # RFC 8463: the private key is the 32-byte seed, p= the public key.
    seed = signing.SigningKey.generate()
    private = base64.b64encode(bytes(seed))
    public = base64.b64encode(bytes(seed.verify_key)).decode()
    dns_server.zone(DOMAIN)
    dns_server.add(f"ed._domainkey.{DOMAIN}", "TXT", f"v=DKIM1; k=ed25519; p={public}")
    header = dkimpy.sign(
        MESSAGE,
        b"ed",
        DOMAIN.encode(),
        private,
        include_headers=SIGNED,
        signature_algorithm=b"ed25519-sha256",
    )

    good = await check(header + MESSAGE, resolver)
    bad = await check(altered_subject(header + MESSAGE), resolver)

    assert good.outcome == "pass", good
    assert (bad.outcome, bad.reason) == ("fail", Reason.BAD_SIGNATURE)
