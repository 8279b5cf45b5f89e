"""The dkim check (SPEC §3, DATA step 4): verify every DKIM-Signature.

dkimpy does the RFC 6376 work, called in its steps rather than through
`DKIM.verify`, which folds every failure into False: dkimpy parses and checks
the signature's tags, the key is fetched through the caller's TXT lookup (so
DNS goes to the configured nameservers and never blocks the loop), the key
record is judged here (revoked, testing mode, size), and the hashing and RSA
verification, which are CPU work on a large body, run in a thread.

The verdict follows SPEC §3: no signature passes (`none`); any verified
signature passes; a signature whose key is in testing mode (`t=y`) or whose
algorithm is not supported counts as absent; otherwise the message fails
with the reason of its first failing signature, one of `Reason`. A DNS
failure that may be temporary makes the verdict `temperror` unless another
signature passed: the caller treats that as a dependency that is down.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import inspect
import logging
import re
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, Literal

import dkim as dkimpy
from dkim.canonicalization import CanonicalizationPolicy
from dkim.util import InvalidTagValueList, parse_tag_value

from services.content.cpu import offload
from shared.dns import Resolver

log = logging.getLogger(__name__)
_dkimpy_log = logging.getLogger(f"{__name__}.dkimpy")

# A TXT lookup: the record's character-strings joined (RFC 6376 §3.6.2.2),
# None when the name has no TXT record; raises DnsTemporaryFailure.
TxtLookup = Callable[[bytes], Awaitable[bytes | None]] | Callable[[bytes], bytes | None]

# Results of RFC 8601 §2.7.1 that one signature can have.
SignatureOutcome = Literal["pass", "fail", "neutral", "temperror", "permerror"]
Outcome = Literal["none", "pass", "fail", "temperror"]

_END_OF_HEADERS = b"\r\n\r\n"
_HEADER_B_CHARS = 8  # RFC 6008 §4: enough of b= to tell signatures apart
_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+\-.^_`{|}~]+")  # RFC 2045 §5.1 token
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_TAG = re.compile(rb"(?:^|;)\s*(d|s|b)\s*=\s*([^;]*)")
# Body canonicalization (RFC 6376 §3.4.4), a chunk at a time.
_CHUNK = 1024 * 1024
_NOT_SPACE = re.compile(rb"[^ \t\r\n]")
_WSP_RUN = re.compile(rb"[\t ]+")
_TRAILING_WSP = re.compile(rb"[\t ]+\r\n")


class Reason(StrEnum):
    """The text after `DKIM failure: ` in the reply: short and stable."""

    BODY_HASH_MISMATCH = "body hash mismatch"
    BAD_SIGNATURE = "signature did not verify"
    NO_KEY = "no key"
    KEY_TOO_SHORT = "key too short"
    KEY_REVOKED = "key revoked"
    EXPIRED = "signature expired"
    MALFORMED = "malformed signature"
    DNS_TEMPORARY = "DNS temporary failure"


_OUTCOME_OF: dict[Reason, SignatureOutcome] = {
    Reason.BODY_HASH_MISMATCH: "fail",
    Reason.BAD_SIGNATURE: "fail",
    Reason.NO_KEY: "permerror",
    Reason.KEY_TOO_SHORT: "permerror",
    Reason.KEY_REVOKED: "permerror",
    Reason.EXPIRED: "permerror",
    Reason.MALFORMED: "permerror",
    Reason.DNS_TEMPORARY: "temperror",
}


class DnsTemporaryFailure(Exception):
    """A TXT lookup could not get an answer now (timeout, SERVFAIL)."""


@dataclass(frozen=True, slots=True)
class SignatureResult:
    """One signature's result; `detail` is for logs and the decision
    record, never for the SMTP reply."""

    domain: str
    selector: str
    outcome: SignatureOutcome
    reason: Reason | None = None
    detail: str = ""
    header_b: str = ""

    def authres(self) -> str:
        """This result as an RFC 8601 `dkim=` resinfo."""
        parts = [f"dkim={self.outcome}"]
        if self.reason is not None:
            parts.append(f"reason={_authres_value(self.reason)}")
        for prop, value in (
            ("header.d", self.domain),
            ("header.s", self.selector),
            ("header.b", self.header_b),
        ):
            if value:
                parts.append(f"{prop}={_authres_value(value)}")
        return " ".join(parts)


@dataclass(frozen=True, slots=True)
class DkimVerdict:
    outcome: Outcome
    reason: Reason | None = None
    signatures: tuple[SignatureResult, ...] = ()

    @property
    def failed(self) -> bool:
        return self.outcome == "fail"

    @property
    def unavailable(self) -> bool:
        return self.outcome == "temperror"

    def authres(self) -> list[str]:
        """The `dkim=` entries for an Authentication-Results header."""
        if not self.signatures:
            return ["dkim=none"]
        return [signature.authres() for signature in self.signatures]


@dataclass(frozen=True, slots=True)
class _Signature:
    """A signature whose tags dkimpy accepted, ready for its key."""

    index: int
    tags: dict[bytes, bytes]
    include_headers: list[bytes]
    header: tuple[bytes, bytes]
    label: SignatureResult


@dataclass(frozen=True, slots=True)
class _Key:
    pk: Any
    size: int
    ktag: bytes
    testing: bool


async def verify(
    message: bytes,
    txt_lookup: TxtLookup,
    *,
    min_key_bits: int = 1024,
    max_signatures: int = 10,
) -> DkimVerdict:
    """Verify the DKIM signatures of `message` (CRLF line ends).

    RFC 6376 §6.1 lets a verifier limit how many signatures it tries; past
    `max_signatures` the rest are not looked at. RFC 8301 §3.2 sets the
    1,024-bit floor for RSA keys.
    """
    try:
        headers, body = await offload(_header_bytes(message), _split, message)
    except dkimpy.MessageFormatError as exc:
        return _unparsable(message, str(exc))
    count = sum(1 for name, _ in headers if name.lower() == b"dkim-signature")
    if count == 0:
        return DkimVerdict("none")
    if count > max_signatures:
        log.debug("checking %d of %d DKIM signatures", max_signatures, count)
    checks = [
        _check(_signer(headers, min_key_bits), body, index, txt_lookup)
        for index in range(min(count, max_signatures))
    ]
    return _combine(await asyncio.gather(*checks))


def _header_bytes(message: bytes) -> int:
    end = message.find(_END_OF_HEADERS)
    return len(message) if end == -1 else end


def _split(message: bytes) -> tuple[list[list[bytes]], memoryview]:
    """Headers as dkimpy reads them, and a view of the body: dkimpy's own
    parser splits the whole message into lines, several copies of it."""
    view = memoryview(message)
    if message.startswith(b"\r\n"):
        return [], view[2:]
    end = message.find(_END_OF_HEADERS)
    if end == -1:
        headers, _ = dkimpy.rfc822_parse(message)
        return headers, view[len(message) :]
    headers, _ = dkimpy.rfc822_parse(message[: end + len(_END_OF_HEADERS)])
    return headers, view[end + len(_END_OF_HEADERS) :]


def _signer(headers: list[list[bytes]], min_key_bits: int) -> Any:
    """A dkimpy verifier over the headers. It never sees the body: the body
    hash is checked here (`body_hash`), so dkimpy's canonicalization, which
    copies a body several times, is not run on it."""
    signer = dkimpy.DKIM(logger=_dkimpy_log, minkey=min_key_bits)
    signer.headers, signer.body = headers, b""
    return signer


def _unparsable(message: bytes, detail: str) -> DkimVerdict:
    """A header block dkimpy cannot read: signed or not decides."""
    end = message.find(_END_OF_HEADERS)
    if b"dkim-signature:" not in message[: end if end != -1 else None].lower():
        return DkimVerdict("none")
    label = SignatureResult("", "", "permerror", Reason.MALFORMED, detail)
    return DkimVerdict("fail", Reason.MALFORMED, (label,))


async def _check(
    signer: Any, body: memoryview, index: int, txt_lookup: TxtLookup
) -> SignatureResult:
    prepared = _prepare(signer, index)
    if isinstance(prepared, SignatureResult):
        return prepared
    key = await _fetch_key(prepared, txt_lookup, signer.minkey)
    if isinstance(key, SignatureResult):
        return key
    result = await offload(len(body), _verify_crypto, signer, body, prepared, key)
    log.debug("DKIM d=%s s=%s: %s", result.domain, result.selector, result.outcome)
    return result


def _prepare(signer: Any, index: int) -> _Signature | SignatureResult:
    """dkimpy's parse and checks of the signature's tags (RFC 6376 §6.1.1)."""
    raw = [v for n, v in signer.headers if n.lower() == b"dkim-signature"][index]
    label = _label(raw)
    try:
        tags, include_headers, headers = signer.verify_headerprep(index)
    except dkimpy.ValidationError as exc:
        expired = "x= value is past" in str(exc)
        return _failed(label, Reason.EXPIRED if expired else Reason.MALFORMED, exc)
    except (dkimpy.DKIMException, ValueError, IndexError, KeyError) as exc:
        return _failed(label, Reason.MALFORMED, exc)
    if b"from" not in include_headers:
        return _failed(label, Reason.MALFORMED, "From is not signed")
    if tags[b"a"] == b"rsa-sha1":
        # RFC 8301 §3.1: verifiers MUST NOT consider rsa-sha1 signatures valid.
        return _failed(label, Reason.BAD_SIGNATURE, "rsa-sha1 is not accepted")
    return _Signature(index, tags, include_headers, tuple(headers[index]), label)


def _label(raw: bytes) -> SignatureResult:
    """d=, s= and b= read leniently, to name even a malformed signature."""
    tags = {m.group(1): m.group(2) for m in _TAG.finditer(raw)}
    text = {
        k: re.sub(rb"\s+", b"", v).decode("utf-8", "replace") for k, v in tags.items()
    }
    b = text.get(b"b", "")[:_HEADER_B_CHARS]
    return SignatureResult(
        text.get(b"d", ""), text.get(b"s", ""), "neutral", None, "", b
    )


def _failed(label: SignatureResult, reason: Reason, detail: object) -> SignatureResult:
    return replace(
        label, outcome=_OUTCOME_OF[reason], reason=reason, detail=str(detail)
    )


def _outcome(
    label: SignatureResult, outcome: SignatureOutcome, detail: str
) -> SignatureResult:
    return replace(label, outcome=outcome, detail=detail)


def _tested(result: SignatureResult, testing: bool) -> SignatureResult:
    """RFC 6376 §3.6.1 `t=y`: a failure under a key in testing mode is
    treated like no signature; the result says neutral and keeps why."""
    if not testing or result.outcome == "pass":
        return result
    return replace(result, outcome="neutral", detail=f"testing mode: {result.detail}")


async def _fetch_key(
    signature: _Signature, txt_lookup: TxtLookup, min_key_bits: int
) -> _Key | SignatureResult:
    """The public key record at `<s>._domainkey.<d>` (RFC 6376 §3.6.2.1)."""
    tags, label = signature.tags, signature.label
    name = tags[b"s"] + b"._domainkey." + tags[b"d"] + b"."
    try:
        record = await _lookup(txt_lookup, name)
    except Exception as exc:
        # Whatever the lookup raised, the key is unknown for now: the
        # caller answers 451 or fails open, never passes the message.
        return _failed(label, Reason.DNS_TEMPORARY, repr(exc))
    if record is None:
        return _failed(label, Reason.NO_KEY, f"no TXT record at {name!r}")
    return _judge_key(label, name, record, min_key_bits)


def _judge_key(
    label: SignatureResult, name: bytes, record: bytes, min_key_bits: int
) -> _Key | SignatureResult:
    """Read the key record (RFC 6376 §3.6.1) and decide if it can be used."""
    try:
        tags = parse_tag_value(record)
    except InvalidTagValueList as exc:
        return _failed(label, Reason.NO_KEY, f"unreadable key record: {exc!r}")
    testing = b"y" in [flag.strip() for flag in tags.get(b"t", b"").split(b":")]
    if b"p" in tags and not re.sub(rb"\s+", b"", tags[b"p"]):
        # RFC 6376 §3.6.1: an empty p= means the key has been revoked.
        return _tested(_failed(label, Reason.KEY_REVOKED, "empty p="), testing)
    try:
        pk, size, ktag = _public_key(name, record)
    except dkimpy.NaClNotFoundError:
        return _outcome(label, "neutral", "ed25519 keys are not supported here")
    except (dkimpy.DKIMException, ValueError, TypeError) as exc:
        return _tested(_failed(label, Reason.NO_KEY, exc), testing)
    if pk is None:
        return _tested(_failed(label, Reason.NO_KEY, "key is not for email"), testing)
    if ktag == b"rsa" and size < min_key_bits:
        detail = f"{size}-bit key"
        return _tested(_failed(label, Reason.KEY_TOO_SHORT, detail), testing)
    return _Key(pk, size, ktag, testing)


@functools.lru_cache(maxsize=256)
def _public_key(name: bytes, record: bytes) -> tuple[Any, int, bytes]:
    """dkimpy's reading of a key record (an ASN.1 parse), once per record:
    mail from one sender keeps coming under the same key."""
    pk, size, ktag, _ = dkimpy.evaluate_pk(name, record)
    return pk, size, ktag


def _verify_crypto(
    signer: Any, body: memoryview, signature: _Signature, key: _Key
) -> SignatureResult:
    """Body hash and signature (RFC 6376 §6.1.3); runs in a thread."""
    signer.pk, signer.keysize, signer.ktag = key.pk, key.size, key.ktag
    signer.seqtlsrpt = False
    # dkimpy checks the body hash only when the tags carry bh=; the header
    # hash covers the signature field as written, bh= and all.
    tags = signature.tags
    header_tags = {k: v for k, v in tags.items() if k != b"bh"}
    try:
        if body_hash(body, tags) != _expected_bh(tags):
            failed = _failed(signature.label, Reason.BODY_HASH_MISMATCH, "bh= differs")
            return _tested(failed, key.testing)
        verified = signer.verify_sig_process(
            header_tags, list(signature.include_headers), signature.header, None
        )
    except Exception as exc:
        return _tested(_failed(signature.label, _crypto_reason(exc), exc), key.testing)
    if not verified:
        failed = _failed(signature.label, Reason.BAD_SIGNATURE, "RSA check failed")
        return _tested(failed, key.testing)
    return _outcome(signature.label, "pass", f"{key.size}-bit key")


def body_hash(body: memoryview | bytes, tags: dict[bytes, bytes]) -> bytes:
    """The hash of the canonical body (RFC 6376 §3.4.3, §3.4.4, §3.7) with
    the signature's c=, a= and l=, computed a chunk at a time: the relaxed
    rules are line-local, so each chunk is canonicalized alone, and empty
    lines at a chunk's end are held back until text follows them."""
    policy = CanonicalizationPolicy.from_c_value(tags.get(b"c", b"simple/simple"))
    relaxed = policy.body_algorithm.name == b"relaxed"
    limit = int(tags[b"l"]) if b"l" in tags else None
    digest = _Truncated(dkimpy.HASH_ALGORITHMS[tags[b"a"]](), limit)
    held = 0  # CRLFs not hashed yet, in case nothing but CRLFs follows
    seen = False
    for chunk in _chunks(body):
        text: bytes | memoryview = chunk
        if relaxed:
            text = _WSP_RUN.sub(b" ", _TRAILING_WSP.sub(b"\r\n", chunk))
        trailing = _trailing_crlfs(text)
        if trailing == len(text):
            held += trailing // 2
            continue
        if held:
            digest.update(b"\r\n" * held)
        digest.update(text[: len(text) - trailing])
        held, seen = trailing // 2, True
    if seen or not relaxed:
        # A body ends with one CRLF; an empty relaxed body is empty.
        digest.update(b"\r\n")
    return digest.digest()


class _Truncated:
    """A hash fed at most `limit` bytes (the l= tag), or all when None."""

    def __init__(self, hasher: Any, limit: int | None) -> None:
        self._hasher, self._left = hasher, limit

    def update(self, data: bytes | memoryview) -> None:
        if self._left is not None:
            data = data[: self._left]
            self._left -= len(data)
        self._hasher.update(data)

    def digest(self) -> bytes:
        return bytes(self._hasher.digest())


def _chunks(body: memoryview | bytes) -> Iterator[memoryview]:
    """`body` in pieces of about `_CHUNK` bytes, each cut after a byte that
    is not white space or a line break, so no run of white space and no
    CRLF is cut in two."""
    view = memoryview(body)
    start = 0
    while start < len(view):
        cut = start + _CHUNK
        if cut < len(view):
            safe = _NOT_SPACE.search(view, cut - 1)
            cut = len(view) if safe is None else safe.end()
        yield view[start:cut]
        start = cut


def _trailing_crlfs(text: bytes | memoryview) -> int:
    """How many bytes of CRLF pairs `text` ends with."""
    if text[-2:] != b"\r\n":
        return 0  # every chunk but the last ends in text
    tail = bytes(text)
    end = len(tail)
    while tail.endswith(b"\r\n", 0, end):
        end -= 2
    return len(tail) - end


def _expected_bh(tags: dict[bytes, bytes]) -> bytes:
    try:
        return base64.b64decode(re.sub(rb"\s+", b"", tags[b"bh"]))
    except (binascii.Error, ValueError) as exc:
        raise dkimpy.MessageFormatError(f"unreadable bh= tag: {exc}") from exc


def _crypto_reason(exc: Exception) -> Reason:
    """Translate what dkimpy raised while verifying into a reason."""
    if isinstance(exc, dkimpy.ValidationError) and "body hash mismatch" in str(exc):
        return Reason.BODY_HASH_MISMATCH
    if isinstance(exc, dkimpy.MessageFormatError):
        return Reason.MALFORMED  # an unknown c= value
    if isinstance(exc, dkimpy.KeyFormatError):
        return Reason.KEY_TOO_SHORT  # digest too large for the modulus
    return Reason.BAD_SIGNATURE


def _combine(results: list[SignatureResult]) -> DkimVerdict:
    signatures = tuple(results)
    outcomes = {result.outcome for result in results}
    if "pass" in outcomes:
        return DkimVerdict("pass", None, signatures)
    if "temperror" in outcomes:
        return DkimVerdict("temperror", Reason.DNS_TEMPORARY, signatures)
    failed = [r for r in results if r.outcome in ("fail", "permerror")]
    if not failed:
        return DkimVerdict("none", None, signatures)
    return DkimVerdict("fail", failed[0].reason, signatures)


def _authres_value(text: str) -> str:
    """A token, or a quoted-string (RFC 8601 §2.2, RFC 2045 §5.1)."""
    if _TOKEN.fullmatch(text):
        return text
    cleaned = _CONTROL.sub("", text).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{cleaned}"'


async def _lookup(txt_lookup: TxtLookup, name: bytes) -> bytes | None:
    """Call a sync lookup in a thread, an async one on the loop."""
    if inspect.iscoroutinefunction(txt_lookup):
        answer: Any = await txt_lookup(name)
    else:
        answer = await asyncio.to_thread(txt_lookup, name)
        if inspect.isawaitable(answer):
            answer = await answer
    if isinstance(answer, str):
        return answer.encode()
    return answer if answer is None else bytes(answer)


def resolver_txt_lookup(
    resolver: Resolver,
) -> Callable[[bytes], Awaitable[bytes | None]]:
    """A TXT lookup through the shared resolver: no record is None, a
    timeout or a failed lookup is DnsTemporaryFailure."""

    async def lookup(name: bytes) -> bytes | None:
        answer = await resolver.txt(name.decode("utf-8", "replace"))
        if answer.unavailable:
            raise DnsTemporaryFailure(f"TXT {name!r}: {answer.status}")
        # RFC 6376 §3.6.2.2 leaves several records undefined; a key wins.
        keys = [record for record in answer.records if "p=" in record]
        chosen = next(iter(keys or answer.records), None)
        return None if chosen is None else chosen.encode()

    return lookup
