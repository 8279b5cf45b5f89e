"""Typed configuration: the process environment and the operator's settings.

Two kinds live here. `Environment` is read once from the `PERIMETER_*`
variables of SPEC §7 and fixes where things are. `Settings` is the document
operators change through the admin API (SPEC §6); it lives in the JetStream
key-value bucket `perimeter_settings` under the key `current` and every worker
watches it, so a change is in force without a restart.
"""

from __future__ import annotations

import re
import socket
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.rules import Rule

_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

Duration = Annotated[str, StringConstraints(pattern=_DURATION.pattern)]
Mode = Literal["enforce", "monitor", "off"]


def seconds(duration: str) -> int:
    """Turn a duration as operators write it (`90s`, `15m`, `1h`, `2d`) into
    seconds."""
    match = _DURATION.match(duration)
    if match is None:
        raise ValueError(f"{duration!r} is not a duration like 30s, 15m, 1h or 2d")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def split_hostport(value: str, default_port: int) -> tuple[str, int]:
    """Split `host:port`, `[v6]:port` or a bare host."""
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    if value.count(":") == 1:
        host, port = value.split(":")
        return host, int(port)
    return value, default_port


class Environment(BaseSettings):
    """Where things are, from the `PERIMETER_*` variables (SPEC §7)."""

    model_config = SettingsConfigDict(env_prefix="PERIMETER_", extra="ignore")

    nats_url: str = "nats://127.0.0.1:4222"
    smtp_listen: str = "127.0.0.1:2525"
    admin_listen: str = "127.0.0.1:8080"
    admin_token: str = ""
    dns_nameservers: str = ""
    clamd: str = ""
    hostname: str = Field(default_factory=socket.getfqdn)
    data_dir: str = "./var"
    tls_cert: str = ""
    tls_key: str = ""
    trusted_proxies: str = ""
    smarthost: str = ""
    callout_port: int = 25
    # Where other domains' mail exchangers listen, for mail delivered
    # straight to a domain's MX hosts (no route, no smarthost).
    mx_port: int = 25
    metrics_listen: str = ""
    # Time budgets, in seconds, for one verdict over the bus (SPEC §1).
    stage_budget: float = 10.0
    data_budget: float = 60.0
    # Delivery: retries back off from `retry_base` doubling up to
    # `retry_max`; after `max_age` a message fails for good (RFC 5321
    # §4.5.4.1 suggests giving up after 4-5 days).
    delivery_retry_base: float = 60.0
    delivery_retry_max: float = 3600.0
    delivery_max_age: float = 5 * 86400.0
    delivery_concurrency: int = 64
    js_replicas: int = 1

    def nameservers(self) -> list[tuple[str, int]]:
        items = [s.strip() for s in self.dns_nameservers.split(",") if s.strip()]
        return [split_hostport(item, 53) for item in items]

    def trusted_proxy_networks(self) -> list[str]:
        return [s.strip() for s in self.trusted_proxies.split(",") if s.strip()]


class RateLimit(BaseModel):
    model_config = ConfigDict(extra="forbid")

    messages: int = Field(default=250, ge=1)
    period: Duration = "15m"


class AuthFailures(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(default=5, ge=1)
    period: Duration = "5m"
    ban: Duration = "1h"


DEFAULT_FAIL_OPEN: list[Rule] = [
    Rule.RBL,
    Rule.SPF,
    Rule.DKIM,
    Rule.SENDER_VERIFICATION,
    Rule.RECIPIENT_VERIFICATION,
]


class Settings(BaseModel):
    """The operator's settings document of SPEC §6."""

    model_config = ConfigDict(extra="forbid")

    rate_limit: RateLimit = Field(default_factory=RateLimit)
    dictionary_threshold: int = Field(default=3, ge=0)
    auth_failures: AuthFailures = Field(default_factory=AuthFailures)
    auth_require_tls: bool = True
    max_message_size: int = Field(default=26_214_400, ge=1024)
    max_recipients: int = Field(default=100, ge=1)
    sender_verification: Literal["off", "domain", "callout"] = "domain"
    modes: dict[Rule, Mode] = Field(default_factory=dict)
    fail_open: list[Rule] = Field(default_factory=lambda: list(DEFAULT_FAIL_OPEN))
    command_timeout: int = Field(default=300, ge=5)
    data_timeout: int = Field(default=600, ge=5)

    @field_validator("fail_open")
    @classmethod
    def _unique(cls, rules: list[Rule]) -> list[Rule]:
        return list(dict.fromkeys(rules))

    def mode(self, rule: Rule) -> Mode:
        return self.modes.get(rule, "enforce")

    def fails_open(self, rule: Rule) -> bool:
        return rule in self.fail_open
