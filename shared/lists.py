"""The operator's lists of SPEC §5: what each holds, how a value is checked
and normalised when it is written, how an entry is stored, and the index the
workers query while the SMTP conversation is open.

Storage (read by every service; keep it stable):

    bucket perimeter_lists, one key per entry: `{list}.{id}`
    value: the entry as UTF-8 JSON
        {"id", "value", "comment", "expires_at", "created_at", ...}
        relay_domains  + "route" ("host:port"), "verify" (none|list|callout)
        smtp_users     + "password_hash" (argon2id; never leaves the admin API)
        rbl_zones      + "codes" (answers that count as listed)

Values are stored in one canonical form, so that equal values compare equal:
IP addresses and networks as `ipaddress` writes them (RFC 5952 for IPv6; a
single host without its /32 or /128), domains as lower-case IDNA A-labels
without the trailing dot, addresses with their domain so normalised, file
extensions lower-case without the dot, catch-alls as `@domain`.

`ListIndex` is the in-memory view a KV watcher feeds with `apply`; its
lookups are dictionary probes, cheap enough to run several times per SMTP
command, and an entry whose `expires_at` has passed stops matching at once,
before the admin service's janitor deletes its key.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import math
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import lru_cache
from typing import Any, Literal

import idna
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)

from shared.errors import InvalidEntry, PerimeterError
from shared.settings import Duration, Settings, seconds
from shared.store import LISTS_BUCKET, SEEDED_KEY, SETTINGS_BUCKET, SETTINGS_KEY

log = logging.getLogger(__name__)

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Verify = Literal["none", "list", "callout"]

MIN_PASSWORD = 8
# Codes of an rbl_zones entry written without any: RFC 5782 §2.3 answers in
# 127.0.0.0/8, less 127.0.0.1 (a test address) and the 127.255.x error range.
DEFAULT_CODES = ("127.0.0.2-127.0.0.255",)


class UnknownList(PerimeterError, LookupError):
    """A list name that SPEC §5 does not define."""


class Kind(StrEnum):
    """What one value of a list may be."""

    IP = "ip"  # one address
    NETWORK = "network"  # an address or a CIDR network
    DOMAIN = "domain"
    ADDRESS = "address"
    CATCHALL = "catchall"  # @domain
    USER = "user"
    EXTENSION = "extension"
    SUBJECT = "subject"


# ---------------------------------------------------------------------------
# Stored entries


class Entry(BaseModel):
    """One stored entry of any list."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str
    value: str
    comment: str = ""
    expires_at: datetime | None = None
    created_at: datetime

    @field_validator("expires_at", "created_at")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        """A time written without an offset is UTC."""
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value

    def expired(self, now: float | None = None) -> bool:
        """Whether `expires_at` has passed (at `now`, epoch seconds)."""
        if self.expires_at is None:
            return False
        return self.expires_at.timestamp() <= (time.time() if now is None else now)

    def public(self) -> dict[str, Any]:
        """The entry as the admin API shows it: no secrets."""
        return self.model_dump(mode="json")

    def to_json(self) -> bytes:
        """The stored form: UTF-8 JSON."""
        return self.model_dump_json().encode()


class RelayDomainEntry(Entry):
    """A relay domain and where its mail goes."""

    route: str
    verify: Verify = "none"


class SmtpUserEntry(Entry):
    """A user who may AUTH; only the argon2id hash of the password is kept."""

    password_hash: str

    def public(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude={"password_hash"})

    def check_password(self, password: str) -> bool:
        """Verify a password against the hash (CPU-heavy: run in a thread)."""
        try:
            return _HASHER.verify(self.password_hash, password)
        except (VerificationError, InvalidHashError):
            return False


class RblZoneEntry(Entry):
    """A DNSBL zone and the answers that count as listed."""

    codes: list[str] = Field(default_factory=lambda: list(DEFAULT_CODES))

    def lists(self, answer: str) -> bool:
        """Whether an A-record answer of this zone means "listed"."""
        try:
            value = int(ipaddress.IPv4Address(answer))
        except ValueError:
            return False
        return any(low <= value <= high for low, high in _spans(tuple(self.codes)))


# ---------------------------------------------------------------------------
# The catalog of SPEC §5


@dataclass(frozen=True, slots=True)
class ListSpec:
    """One list: what its values are, which extra fields it takes."""

    name: str
    kinds: tuple[Kind, ...]
    value: str  # what a value is, as a person reads it
    meaning: str
    example: str
    fields: tuple[str, ...] = ()
    entry_type: type[Entry] = Entry


_N, _D, _A = Kind.NETWORK, Kind.DOMAIN, Kind.ADDRESS
_IP_OR_CIDR = "an IP address or CIDR network"

CATALOG: dict[str, ListSpec] = {
    spec.name: spec
    for spec in (
        ListSpec(
            "banned_ips", (_N,), _IP_OR_CIDR, "refused at connect", "192.0.2.0/24"
        ),
        ListSpec(
            "banned_domains",
            (_D,),
            "a domain",
            "senders from the domain and its subdomains are refused",
            "spam.example",
        ),
        ListSpec(
            "approved_ips",
            (_N,),
            _IP_OR_CIDR,
            "skip RBL, rDNS, sender verification, SPF and rate limit",
            "198.51.100.7",
        ),
        ListSpec(
            "approved_senders",
            (_A, _D),
            "an email address or domain",
            "skip RBL, rDNS, sender verification, SPF and rate limit",
            "partner.example",
        ),
        ListSpec(
            "relay_domains",
            (_D,),
            "a domain",
            "domains the gateway accepts mail for, and their route",
            "example.org",
            ("route", "verify"),
            RelayDomainEntry,
        ),
        ListSpec(
            "relay_networks",
            (_N,),
            _IP_OR_CIDR,
            "clients that may relay to any domain",
            "10.0.0.0/8",
        ),
        ListSpec(
            "smtp_users",
            (Kind.USER,),
            "a user name",
            "may AUTH and then relay",
            "alice",
            ("password",),
            SmtpUserEntry,
        ),
        ListSpec(
            "valid_recipients",
            (_A, Kind.CATCHALL),
            "an email address, or @domain for a catch-all",
            "recipients that exist, for relay domains with verify: list",
            "alice@example.org",
        ),
        ListSpec(
            "rbl_zones",
            (_D,),
            "a DNSBL zone",
            "DNSBLs to query",
            "zen.spamhaus.org",
            ("codes",),
            RblZoneEntry,
        ),
        ListSpec(
            "blocked_extensions",
            (Kind.EXTENSION,),
            "a file extension without the dot",
            "attachments with the extension are refused",
            "exe",
        ),
        ListSpec(
            "blocked_subjects",
            (Kind.SUBJECT,),
            "text (a case-insensitive substring) or re: and a regular expression",
            "messages whose Subject matches are refused",
            "re:^urgent wire transfer",
        ),
        ListSpec(
            "empty_reply_exemptions",
            (_N, _A, _D),
            "an IP address, CIDR network, email address or domain",
            "skip the empty Reply-To check",
            "lists.example",
        ),
        ListSpec("dnsbl_exemptions", (_N,), _IP_OR_CIDR, "skip rbl", "203.0.113.9"),
        ListSpec("spf_exemptions", (_D,), "a domain", "skip spf", "forwarder.example"),
        ListSpec(
            "ratelimit_exemptions",
            (_N, Kind.USER),
            "an IP address, CIDR network or user name",
            "skip rate_limit",
            "2001:db8::/48",
        ),
        ListSpec("av_exemptions", (_N,), _IP_OR_CIDR, "skip antivirus", "10.1.2.3"),
        ListSpec(
            "dkim_exemptions",
            (_N, _D),
            "an IP address, CIDR network or signing domain",
            "skip dkim",
            "legacy.example",
        ),
        ListSpec(
            "auth_blacklist",
            (Kind.IP,),
            "an IP address",
            "banned after repeated AUTH failures (auth_bruteforce)",
            "192.0.2.99",
        ),
    )
}

LIST_NAMES: tuple[str, ...] = tuple(CATALOG)
EXTRA_FIELDS = ("route", "verify", "password", "codes")


def spec_for(name: str) -> ListSpec:
    """The catalog row of a list; `UnknownList` if there is none."""
    try:
        return CATALOG[name]
    except KeyError:
        raise UnknownList(f"there is no list named {_quote(name)}") from None


def entry_key(name: str, entry_id: str) -> str:
    return f"{name}.{entry_id}"


def new_id() -> str:
    """A random entry id: 12 lower-case hex characters."""
    return secrets.token_hex(6)


# ---------------------------------------------------------------------------
# Values: checking and normalising


def _quote(text: str, width: int = 80) -> str:
    shown = text if len(text) <= width else text[: width - 3] + "..."
    return f"'{shown}'"


def normalize_ip(text: str) -> str:
    """One IP address, compressed; an IPv4-mapped IPv6 address as IPv4."""
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        raise InvalidEntry(f"{_quote(text)} is not an IP address") from None
    return str(_unmapped(address))


def normalize_network(text: str) -> str:
    """An address or CIDR network; a single host is written without /32."""
    try:
        network = ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise InvalidEntry(f"{_quote(text)} is not {_IP_OR_CIDR}") from None
    if network.num_addresses == 1:
        return str(_unmapped(network.network_address))
    return network.compressed


def _unmapped(address: IpAddress) -> IpAddress:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def normalize_domain(text: str) -> str:
    """A domain as a lower-case IDNA A-label name, without the final dot."""
    name = text.strip()
    if name.startswith("*.") or name.startswith("."):
        raise InvalidEntry(
            f"{_quote(text)}: write the domain without '*.' or a leading dot"
        )
    name = name[:-1] if name.endswith(".") else name
    ascii_name = _a_labels(name)
    if ascii_name is None or not _is_hostname(ascii_name):
        raise InvalidEntry(f"{_quote(text)} is not a domain name")
    return ascii_name


def _a_labels(name: str) -> str | None:
    try:
        if name.isascii():
            if "xn--" in name.lower():
                idna.decode(name)
            return name.lower()
        return idna.encode(name, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError, ValueError):
        return None


def _is_hostname(name: str) -> bool:
    labels = name.split(".")
    if not name or len(name) > 253 or labels[-1].isdigit():
        return False
    return all(_LABEL.match(label) for label in labels)


_BAD_LOCAL = re.compile(r"[\s\x00-\x1f\x7f<>()\[\],;:\\\"@]")


def normalize_address(text: str) -> str:
    """An email address; the domain part normalised, the local part kept."""
    address = text.strip()
    if address.startswith("<") and address.endswith(">"):
        address = address[1:-1]
    local, at, domain = address.rpartition("@")
    if not at or not local or len(local.encode()) > 64 or _BAD_LOCAL.search(local):
        raise InvalidEntry(f"{_quote(text)} is not an email address")
    try:
        return f"{local}@{normalize_domain(domain)}"
    except InvalidEntry:
        raise InvalidEntry(
            f"{_quote(text)} is not an email address: "
            f"{_quote(domain)} is not a domain name"
        ) from None


def normalize_catchall(text: str) -> str:
    """`@domain`: every address of the domain."""
    domain = text.strip()[1:]
    try:
        return "@" + normalize_domain(domain)
    except InvalidEntry:
        raise InvalidEntry(
            f"{_quote(text)} is not a catch-all: write @ and a domain name"
        ) from None


_BAD_USER = re.compile(r"[\s\x00-\x1f\x7f]")


def normalize_user(text: str) -> str:
    """A user name as the client sends it in AUTH (case kept)."""
    name = text.strip()
    if not name or len(name) > 256 or _BAD_USER.search(name):
        raise InvalidEntry(
            f"{_quote(text)} is not a user name (1 to 256 characters, no spaces)"
        )
    return name


_EXTENSION = re.compile(r"^[\w~$#+-]{1,32}$")


def normalize_extension(text: str) -> str:
    """A file extension, lower-case, without the dot."""
    extension = text.strip().removeprefix("*").removeprefix(".").casefold()
    if not _EXTENSION.match(extension):
        raise InvalidEntry(
            f"{_quote(text)} is not a file extension: write it without dots, as in exe"
        )
    return extension


def normalize_subject(text: str) -> str:
    """Subject text as written; a `re:` pattern must compile."""
    if not text.strip() or len(text) > 998:
        raise InvalidEntry("a subject must hold 1 to 998 characters")
    if not text.startswith("re:"):
        return text
    try:
        pattern = re.compile(text[3:], re.IGNORECASE)
    except (re.error, RecursionError, OverflowError) as exc:
        reason = getattr(exc, "msg", "it does not compile")
        raise InvalidEntry(
            f"{_quote(text[3:])} is not a regular expression: {reason}"
        ) from None
    if pattern.search(""):
        raise InvalidEntry(f"{_quote(text[3:])} would match every subject")
    return text


_NORMALIZERS: dict[Kind, Callable[[str], str]] = {
    Kind.IP: normalize_ip,
    Kind.NETWORK: normalize_network,
    Kind.DOMAIN: normalize_domain,
    Kind.ADDRESS: normalize_address,
    Kind.CATCHALL: normalize_catchall,
    Kind.USER: normalize_user,
    Kind.EXTENSION: normalize_extension,
    Kind.SUBJECT: normalize_subject,
}

_IP_LIKE = re.compile(r"^(?:[\d.]+|[0-9a-fA-F:.]*:[0-9a-fA-F:.]*)(?:/\d*)?$")


def kind_of(spec: ListSpec, text: str) -> tuple[Kind, bool]:
    """Which kind of value `text` is meant to be in this list, and whether
    the choice rests on what it looks like (an IP, an @) or is a fallback."""
    if len(spec.kinds) == 1:
        return spec.kinds[0], True
    text = text.strip()
    if Kind.NETWORK in spec.kinds and _IP_LIKE.match(text):
        return Kind.NETWORK, True
    if Kind.CATCHALL in spec.kinds and text.startswith("@"):
        return Kind.CATCHALL, True
    if Kind.ADDRESS in spec.kinds and "@" in text:
        return Kind.ADDRESS, True
    fallback = [k for k in (Kind.DOMAIN, Kind.USER) if k in spec.kinds]
    return (fallback[0] if fallback else spec.kinds[0]), False


def normalize_value(name: str, text: str) -> str:
    """The canonical form of a value for a list, or `InvalidEntry` saying
    what is wrong with it."""
    spec = spec_for(name)
    if not isinstance(text, str) or not text.strip():
        raise InvalidEntry(f"a value is required: {spec.value}")
    kind, certain = kind_of(spec, text)
    try:
        return _NORMALIZERS[kind](text)
    except InvalidEntry:
        if certain:
            raise
        raise InvalidEntry(f"{_quote(text)} is not {spec.value}") from None


def identity(name: str, value: str) -> str:
    """What makes two values of a list the same entry (for duplicates)."""
    spec = spec_for(name)
    kind, _ = kind_of(spec, value)
    if kind in (Kind.ADDRESS, Kind.CATCHALL):
        return value.casefold()
    if kind is Kind.SUBJECT and not value.startswith("re:"):
        return value.casefold()
    return value


def normalize_route(text: str) -> str:
    """`host:port` (port 25 when left out); host a domain or an IP."""
    host, port = _split_route(text.strip())
    if not 0 < port < 65536:
        raise InvalidEntry(f"route {_quote(text)}: the port must be 1 to 65535")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        try:
            return f"{normalize_domain(host)}:{port}"
        except InvalidEntry:
            raise InvalidEntry(
                f"route {_quote(text)} is not host:port with a host name or IP"
            ) from None
    shown = f"[{address}]" if address.version == 6 else str(address)
    return f"{shown}:{port}"


def _split_route(text: str) -> tuple[str, int]:
    try:
        if text.startswith("["):
            host, _, rest = text[1:].partition("]")
            return host, int(rest[1:]) if rest.startswith(":") else 25
        if text.count(":") == 1:
            host, port = text.split(":")
            return host, int(port)
    except ValueError:
        raise InvalidEntry(f"route {_quote(text)}: the port is not a number") from None
    return text, 25


def normalize_codes(codes: list[str]) -> list[str]:
    """DNSBL answer codes: IPv4 addresses, ranges `a-b`, or CIDR networks."""
    if not codes:
        raise InvalidEntry("codes must list at least one answer, as in 127.0.0.2")
    return [_normalize_code(code) for code in codes]


def _normalize_code(code: str) -> str:
    try:
        low, high = _span(code)
    except ValueError:
        raise InvalidEntry(
            f"code {_quote(code)} is not an IPv4 address, a range a-b or a CIDR"
        ) from None
    if "/" in code:
        return str(ipaddress.IPv4Network(code.strip(), strict=False))
    first, last = ipaddress.IPv4Address(low), ipaddress.IPv4Address(high)
    return str(first) if low == high and "-" not in code else f"{first}-{last}"


def _span(code: str) -> tuple[int, int]:
    code = code.strip()
    if "/" in code:
        network = ipaddress.IPv4Network(code, strict=False)
        return int(network.network_address), int(network.broadcast_address)
    first, _, last = code.partition("-")
    low = int(ipaddress.IPv4Address(first.strip()))
    high = int(ipaddress.IPv4Address(last.strip())) if last else low
    if high < low:
        raise ValueError(code)
    return low, high


@lru_cache(maxsize=256)
def _spans(codes: tuple[str, ...]) -> tuple[tuple[int, int], ...]:
    spans = []
    for code in codes:
        try:
            spans.append(_span(code))
        except ValueError:
            log.warning("ignoring malformed DNSBL code %r", code)
    return tuple(spans)


# ---------------------------------------------------------------------------
# New entries, from what an operator writes

_HASHER = PasswordHasher()  # argon2id with the library's recommended costs


class EntryRequest(BaseModel):
    """A new entry as an operator writes it (POST and import)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"value": "192.0.2.0/24", "comment": "spam run", "expires_in": "7d"},
                {"value": "example.org", "route": "mx1.example.org:25"},
            ]
        },
    )

    value: str = Field(min_length=1, max_length=1000)
    comment: str = Field(default="", max_length=500)
    expires_at: datetime | None = Field(
        default=None,
        description="RFC 3339 time after which the entry stops applying "
        "and is removed; null for never. A time without offset is UTC.",
    )
    expires_in: Duration | None = Field(
        default=None,
        description="Instead of expires_at: a duration from now, as 30m, 12h, 7d.",
    )
    route: str | None = Field(
        default=None, description="relay_domains: host:port where the mail goes"
    )
    verify: Verify | None = Field(
        default=None,
        description="relay_domains: how recipients are checked (default none)",
    )
    password: SecretStr | None = Field(
        default=None,
        max_length=1024,
        description=f"smtp_users: write-only, at least {MIN_PASSWORD} characters; "
        "stored as an argon2id hash",
    )
    codes: list[str] | None = Field(
        default=None,
        max_length=64,
        description="rbl_zones: answers that count as listed: IPv4 addresses, "
        f"ranges a-b or CIDRs (default {list(DEFAULT_CODES)})",
    )


def new_entry(name: str, request: EntryRequest, now: datetime | None = None) -> Entry:
    """Check and normalise a request into the entry to store.

    Every problem is reported at once, in one `InvalidEntry`. Hashing a
    password takes tens of milliseconds of CPU: call this in a thread.
    """
    spec = spec_for(name)
    now = (now or datetime.now(UTC)).replace(microsecond=0)
    problems: list[str] = []
    fields: dict[str, Any] = {
        "id": new_id(),
        "comment": request.comment,
        "created_at": now,
    }
    for step in (_value_field, _expiry_field, _extra_fields):
        try:
            fields.update(step(spec, request, now))
        except InvalidEntry as exc:
            problems.append(str(exc))
    if problems:
        raise InvalidEntry("; ".join(problems))
    return spec.entry_type(**fields)


def _value_field(
    spec: ListSpec, request: EntryRequest, now: datetime
) -> dict[str, Any]:
    return {"value": normalize_value(spec.name, request.value)}


def _expiry_field(
    spec: ListSpec, request: EntryRequest, now: datetime
) -> dict[str, Any]:
    if request.expires_at is not None and request.expires_in is not None:
        raise InvalidEntry("give expires_at or expires_in, not both")
    if request.expires_in is not None:
        try:
            return {"expires_at": now + timedelta(seconds=seconds(request.expires_in))}
        except OverflowError:
            raise InvalidEntry("expires_in reaches past the year 9999") from None
    if request.expires_at is None:
        return {"expires_at": None}
    expires = request.expires_at
    try:
        expires = expires.replace(tzinfo=expires.tzinfo or UTC).astimezone(UTC)
    except OverflowError:
        raise InvalidEntry("expires_at is out of range") from None
    if expires <= now:
        raise InvalidEntry("expires_at is in the past")
    return {"expires_at": expires.replace(microsecond=0)}


def _extra_fields(
    spec: ListSpec, request: EntryRequest, now: datetime
) -> dict[str, Any]:
    given = [f for f in EXTRA_FIELDS if getattr(request, f) is not None]
    stray = [f for f in given if f not in spec.fields]
    if stray:
        owners = {"route": "relay_domains", "verify": "relay_domains"}
        owners |= {"password": "smtp_users", "codes": "rbl_zones"}
        raise InvalidEntry(
            "; ".join(f"{f!r} applies only to {owners[f]}" for f in stray)
        )
    if spec.entry_type is RelayDomainEntry:
        return _relay_fields(request)
    if spec.entry_type is SmtpUserEntry:
        return _user_fields(request)
    if spec.entry_type is RblZoneEntry:
        codes = request.codes if request.codes is not None else list(DEFAULT_CODES)
        return {"codes": normalize_codes(codes)}
    return {}


def _relay_fields(request: EntryRequest) -> dict[str, Any]:
    if not request.route:
        raise InvalidEntry("a relay domain needs a route, as in mx1.example.org:25")
    return {"route": normalize_route(request.route), "verify": request.verify or "none"}


def _user_fields(request: EntryRequest) -> dict[str, Any]:
    if request.password is None:
        raise InvalidEntry("an SMTP user needs a password")
    password = request.password.get_secret_value()
    if len(password) < MIN_PASSWORD:
        raise InvalidEntry(f"the password must have at least {MIN_PASSWORD} characters")
    return {"password_hash": _HASHER.hash(password)}


def parse_entry(name: str, raw: bytes | str) -> Entry:
    """A stored entry from its JSON; `InvalidEntry` if it does not read."""
    spec = spec_for(name)
    try:
        return spec.entry_type.model_validate_json(raw)
    except ValidationError as exc:
        raise InvalidEntry(f"stored {name} entry does not read: {exc}") from exc


# ---------------------------------------------------------------------------
# Defaults of SPEC §5, written once ever

DEFAULT_ZONES: dict[str, list[str]] = {
    "zen.spamhaus.org": ["127.0.0.2-127.0.0.11"],
    "bl.spamcop.net": ["127.0.0.2"],
    "cbl.abuseat.org": ["127.0.0.2"],
    "rbl.baruwa.net": ["127.0.0.2"],
    "bl.spameatingmonkey.net": ["127.0.0.2"],
    "hostkarma.junkemailfilter.com": ["127.0.0.2"],
}

# SPEC's six, then what mail filters commonly refuse as executable or
# script content on Windows: command and script hosts, installers, control
# panel items, Java archives, registry files, help files that run code, and
# disk images used to carry the rest past scanners.
DEFAULT_EXTENSIONS: tuple[str, ...] = (
    *("exe", "pif", "bat", "scr", "lnk", "com"),
    *("cmd", "cpl", "dll", "hta", "jar", "js", "jse", "msc", "msi", "msix"),
    *("msp", "mst", "ps1", "psc1", "reg", "scf", "sct", "vb", "vbe", "vbs"),
    *("wsc", "wsf", "wsh", "application", "gadget", "inf", "chm", "xll"),
    *("iso", "img", "vhd", "vhdx", "appx"),
)


def default_entries(now: datetime | None = None) -> list[tuple[str, Entry]]:
    """The entries every installation starts with, as (list, entry).

    Their ids derive from list and value, so two processes seeding at once
    write the same keys and never a duplicate."""
    now = (now or datetime.now(UTC)).replace(microsecond=0)
    entries: list[tuple[str, Entry]] = []
    comment = "default (SPEC §5)"
    for zone, codes in DEFAULT_ZONES.items():
        entry_id = _stable_id("rbl_zones", zone)
        zone_entry = RblZoneEntry(
            id=entry_id, value=zone, comment=comment, created_at=now, codes=codes
        )
        entries.append(("rbl_zones", zone_entry))
    for extension in DEFAULT_EXTENSIONS:
        entry_id = _stable_id("blocked_extensions", extension)
        entry = Entry(id=entry_id, value=extension, comment=comment, created_at=now)
        entries.append(("blocked_extensions", entry))
    return entries


def _stable_id(name: str, value: str) -> str:
    return hashlib.sha256(f"{name}\0{value}".encode()).hexdigest()[:12]


async def seed_defaults(js: JetStreamContext) -> bool:
    """Write the default lists and settings unless that was ever done.

    Call it after `shared.store.ensure_store`. The key `seeded` in
    `perimeter_settings` records that it was done, so
    entries an operator deletes never come back. It is created last: a
    process that dies half-way leaves it absent and the next one finishes
    the work. Returns whether this call did the seeding.
    """
    settings_kv = await js.key_value(SETTINGS_BUCKET)
    if await _exists(settings_kv, SEEDED_KEY):
        return False
    await _create_once(settings_kv, SETTINGS_KEY, _settings_json())
    lists_kv = await js.key_value(LISTS_BUCKET)
    for name, entry in default_entries():
        await _create_once(lists_kv, entry_key(name, entry.id), entry.to_json())
    stamp = datetime.now(UTC).replace(microsecond=0).isoformat().encode()
    if not await _create_once(settings_kv, SEEDED_KEY, stamp):
        return False
    log.info("seeded the default lists and settings")
    return True


def _settings_json() -> bytes:
    return Settings().model_dump_json().encode()


async def _exists(kv: KeyValue, key: str) -> bool:
    try:
        await kv.get(key)
    except KeyNotFoundError:
        return False
    return True


async def _create_once(kv: KeyValue, key: str, value: bytes) -> bool:
    try:
        await kv.create(key, value)
    except KeyWrongLastSequenceError:
        return False
    return True


# ---------------------------------------------------------------------------
# The index workers query


class _Held:
    """An entry in an index, with its expiry as epoch seconds."""

    __slots__ = ("entry", "expires")

    def __init__(self, entry: Entry) -> None:
        self.entry = entry
        at = entry.expires_at
        self.expires = at.timestamp() if at is not None else math.inf


def _live(held: list[_Held], now: float) -> Entry | None:
    for item in held:
        if item.expires > now:
            return item.entry
    return None


class _Prefixes:
    """Networks of one address family, one hash table per prefix length:
    a lookup costs one probe per distinct prefix length in the list."""

    def __init__(self, bits: int) -> None:
        self._bits = bits
        self._tables: dict[int, dict[int, list[_Held]]] = {}
        self._levels: tuple[tuple[int, dict[int, list[_Held]]], ...] = ()

    def add(self, network: IpNetwork, held: _Held) -> None:
        table = self._tables.setdefault(network.prefixlen, {})
        table.setdefault(self._slot(network), []).append(held)
        self._relevel()

    def remove(self, network: IpNetwork, held: _Held) -> None:
        table = self._tables.get(network.prefixlen, {})
        bucket = table.get(self._slot(network), [])
        if held in bucket:
            bucket.remove(held)
        if not bucket:
            table.pop(self._slot(network), None)
        if not table:
            self._tables.pop(network.prefixlen, None)
        self._relevel()

    def find(self, value: int, now: float) -> Entry | None:
        for shift, table in self._levels:
            held = table.get(value >> shift)
            if held is not None:
                entry = _live(held, now)
                if entry is not None:
                    return entry
        return None

    def _slot(self, network: IpNetwork) -> int:
        return int(network.network_address) >> (self._bits - network.prefixlen)

    def _relevel(self) -> None:
        lengths = sorted(self._tables, reverse=True)  # most specific first
        self._levels = tuple((self._bits - n, self._tables[n]) for n in lengths)


class _Table:
    """The entries of one list, indexed for its kinds of lookup."""

    def __init__(self, spec: ListSpec) -> None:
        self.spec = spec
        self.held: dict[str, _Held] = {}  # by key
        self.v4 = _Prefixes(32)
        self.v6 = _Prefixes(128)
        self.names: dict[str, list[_Held]] = {}  # folded value
        self.users: dict[str, list[_Held]] = {}  # exact value
        self.view: tuple[float, Any] | None = None  # (valid until, derived)

    def add(self, key: str, entry: Entry) -> None:
        held = _Held(entry)
        self._place(held, add=True)
        self.held[key] = held
        self.view = None

    def remove(self, key: str) -> None:
        held = self.held.pop(key, None)
        if held is not None:
            self._place(held, add=False)
            self.view = None

    def _place(self, held: _Held, add: bool) -> None:
        value = held.entry.value
        kind, _ = kind_of(self.spec, value)
        if kind in (Kind.IP, Kind.NETWORK):
            network = ipaddress.ip_network(value, strict=False)
            family = self.v4 if network.version == 4 else self.v6
            (family.add if add else family.remove)(network, held)
            return
        index = self.users if kind is Kind.USER else self.names
        key = value if kind is Kind.USER else value.casefold()
        bucket = index.setdefault(key, [])
        if add:
            bucket.append(held)
        elif held in bucket:
            bucket.remove(held)
        if not bucket:
            del index[key]

    def live(self, now: float) -> list[Entry]:
        return [h.entry for h in self.held.values() if h.expires > now]

    def derived(self, now: float, build: Callable[[list[Entry]], Any]) -> Any:
        """A view of the live entries, kept until one of them expires."""
        if self.view is not None and now < self.view[0]:
            return self.view[1]
        live = [h for h in self.held.values() if h.expires > now]
        until = min((h.expires for h in live), default=math.inf)
        self.view = (until, build([h.entry for h in live]))
        return self.view[1]


@dataclass(frozen=True, slots=True)
class SubjectPattern:
    """One blocked_subjects entry, ready to test a Subject."""

    entry: Entry
    text: str | None  # case-folded substring, or None for a pattern
    pattern: re.Pattern[str] | None

    def matches(self, subject: str) -> bool:
        if self.pattern is not None:
            return self.pattern.search(subject) is not None
        return self.text is not None and self.text in subject.casefold()


def _subject_pattern(entry: Entry) -> SubjectPattern | None:
    if not entry.value.startswith("re:"):
        return SubjectPattern(entry, entry.value.casefold(), None)
    try:
        return SubjectPattern(entry, None, re.compile(entry.value[3:], re.IGNORECASE))
    except re.error:
        log.warning("blocked_subjects %s does not compile; skipped", entry.id)
        return None


@lru_cache(maxsize=8192)
@lru_cache(maxsize=8192)
def _address_number(text: str) -> tuple[int, int] | None:
    """(version, number) of an address; a session asks about its client in
    several lists at every stage, so the parse is remembered."""
    try:
        address = _unmapped(ipaddress.ip_address(text))
    except ValueError:
        return None
    return address.version, int(address)


@lru_cache(maxsize=8192)
def _domain_suffixes(domain: str) -> tuple[str, ...]:
    """The domain and each parent, as stored: `a.b.c`, `b.c`, `c`."""
    stripped = domain.strip().rstrip(".")
    name = stripped.lower() if stripped.isascii() else _a_labels(stripped)
    if not name:
        return ()
    labels = name.split(".")
    return tuple(".".join(labels[i:]) for i in range(len(labels)))


def _split_address(address: str) -> tuple[str, str]:
    address = address.strip()
    if address.startswith("<") and address.endswith(">"):
        address = address[1:-1]
    local, _, domain = address.rpartition("@")
    return local, domain


class ListIndex:
    """Every list in memory, fed by a KV watcher through `apply`.

    Lookups return the matching `Entry` (or None) and never match an entry
    whose `expires_at` has passed. `clock` gives epoch seconds (tests pass
    their own).
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._tables = {name: _Table(spec) for name, spec in CATALOG.items()}

    def apply(self, key: str, raw: bytes | None) -> None:
        """Take one KV update: the entry's JSON, or None for a deleted key."""
        name, _, _ = key.partition(".")
        table = self._tables.get(name)
        if table is None:
            log.debug("ignoring key %s of no known list", key)
            return
        table.remove(key)
        if raw is None:
            return
        try:
            table.add(key, parse_entry(name, raw))
        except (InvalidEntry, ValueError) as exc:
            log.warning("ignoring list entry %s: %s", key, exc)

    def _table(self, name: str) -> _Table:
        table = self._tables.get(name)
        if table is None:
            raise UnknownList(f"there is no list named {_quote(name)}")
        return table

    def entries(self, name: str) -> list[Entry]:
        """The entries of a list that apply now."""
        return self._table(name).live(self._clock())

    def size(self, name: str) -> int:
        return len(self.entries(name))

    def ip_in(self, name: str, ip: str | IpAddress) -> Entry | None:
        """The entry of an IP/CIDR list that holds the address."""
        number = _address_number(str(ip))
        if number is None:
            return None
        table = self._table(name)
        family = table.v4 if number[0] == 4 else table.v6
        return family.find(number[1], self._clock())

    def domain_in(self, name: str, domain: str) -> Entry | None:
        """The entry for the domain or any parent of it."""
        table = self._table(name)
        now = self._clock()
        for suffix in _domain_suffixes(domain):
            held = table.names.get(suffix)
            if held is not None and (entry := _live(held, now)) is not None:
                return entry
        return None

    def address_in(self, name: str, address: str) -> Entry | None:
        """The entry for the address, its domain or a parent domain."""
        local, domain = _split_address(address)
        if local:
            table = self._table(name)
            suffixes = _domain_suffixes(domain)
            key = f"{local}@{suffixes[0]}".casefold() if suffixes else ""
            held = table.names.get(key)
            entry = _live(held, self._clock()) if held is not None else None
            if entry is not None:
                return entry
        return self.domain_in(name, domain) if domain else None

    def user_in(self, name: str, user: str) -> Entry | None:
        """The entry for a user name (exact, case kept)."""
        held = self._table(name).users.get(user)
        return _live(held, self._clock()) if held else None

    def relay_domain(self, domain: str) -> RelayDomainEntry | None:
        """The relay domain entry (route, verify) for exactly this domain."""
        suffixes = _domain_suffixes(domain)
        if not suffixes:
            return None
        held = self._tables["relay_domains"].names.get(suffixes[0])
        entry = _live(held, self._clock()) if held else None
        return entry if isinstance(entry, RelayDomainEntry) else None

    def recipient_valid(self, address: str) -> Entry | None:
        """The valid_recipients entry for the address or its `@domain`."""
        local, domain = _split_address(address)
        suffixes = _domain_suffixes(domain)
        if not local or not suffixes:
            return None
        names = self._tables["valid_recipients"].names
        now = self._clock()
        for key in (f"{local}@{suffixes[0]}".casefold(), f"@{suffixes[0]}"):
            held = names.get(key)
            if held is not None and (entry := _live(held, now)) is not None:
                return entry
        return None

    def smtp_user(self, name: str) -> SmtpUserEntry | None:
        """The smtp_users entry (with password_hash) for a user name."""
        entry = self.user_in("smtp_users", name)
        return entry if isinstance(entry, SmtpUserEntry) else None

    def rbl_zones(self) -> tuple[RblZoneEntry, ...]:
        """The DNSBL zones to query, by name."""
        return self._tables["rbl_zones"].derived(self._clock(), _zones)  # type: ignore[no-any-return]

    def extensions(self) -> frozenset[str]:
        """The blocked file extensions, lower-case, without dots."""
        table = self._tables["blocked_extensions"]
        return table.derived(self._clock(), _extension_set)  # type: ignore[no-any-return]

    def subjects(self) -> tuple[SubjectPattern, ...]:
        """The blocked_subjects entries, ready to test a Subject."""
        table = self._tables["blocked_subjects"]
        return table.derived(self._clock(), _subject_patterns)  # type: ignore[no-any-return]

    def subject_blocked(self, subject: str) -> Entry | None:
        """The first blocked_subjects entry the Subject matches."""
        for item in self.subjects():
            if item.matches(subject):
                return item.entry
        return None


def _zones(entries: list[Entry]) -> tuple[RblZoneEntry, ...]:
    zones = [e for e in entries if isinstance(e, RblZoneEntry)]
    return tuple(sorted(zones, key=lambda e: e.value))


def _extension_set(entries: list[Entry]) -> frozenset[str]:
    return frozenset(e.value for e in entries)


def _subject_patterns(entries: list[Entry]) -> tuple[SubjectPattern, ...]:
    found = (_subject_pattern(e) for e in sorted(entries, key=lambda e: e.value))
    return tuple(p for p in found if p is not None)
