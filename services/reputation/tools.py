"""The reputation service's long-lived tools, built once at start."""

from __future__ import annotations

from dataclasses import dataclass, field

from services.reputation.events import Events
from services.reputation.rbl import Zone
from services.reputation.recipients import RecipientCallout
from services.reputation.senders import SenderCallout
from services.reputation.spf import SpfResult
from shared.dns import Resolver
from shared.lists import RblZoneEntry
from shared.ttlcache import TTLCache


@dataclass
class Tools:
    resolver: Resolver
    events: Events
    senders: SenderCallout
    recipients: RecipientCallout
    spf_cache: TTLCache[tuple[str, str, str], SpfResult] = field(
        default_factory=lambda: TTLCache(10_000)
    )
    _zones: tuple[tuple[RblZoneEntry, ...], list[Zone]] | None = None

    def zones(self, entries: tuple[RblZoneEntry, ...]) -> list[Zone]:
        """The rbl_zones list as lookup zones, rebuilt only when it changes."""
        if self._zones is None or self._zones[0] != entries:
            self._zones = (entries, [Zone(e.value, list(e.codes)) for e in entries])
        return self._zones[1]
