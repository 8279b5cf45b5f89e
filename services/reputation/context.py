"""What a reputation rule sees: the request, the lists, the settings, and
the service's tools (resolver, shared counters, callouts)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from shared.lists import ListIndex
from shared.messages import StageRequest
from shared.settings import Settings

if TYPE_CHECKING:
    from services.reputation.tools import Tools


@dataclass(slots=True)
class Context:
    request: StageRequest
    lists: ListIndex
    settings: Settings
    tools: Tools
    results: dict[str, str] = field(default_factory=dict)
    approved: bool = False

    @property
    def client(self) -> str:
        return self.request.session.client

    @property
    def sender(self) -> str:
        return self.request.sender or ""

    @property
    def sender_domain(self) -> str:
        return domain_of(self.sender)

    @property
    def recipient(self) -> str:
        return self.request.recipient or ""

    @property
    def recipient_domain(self) -> str:
        return domain_of(self.recipient)


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].rstrip(".").lower()
