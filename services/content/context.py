"""What a content rule sees: the message, the envelope, lists, settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.lists import ListIndex
from shared.messages import StageRequest
from shared.settings import Settings


@dataclass(slots=True)
class Context:
    request: StageRequest
    message: bytes
    lists: ListIndex
    settings: Settings
    results: dict[str, str] = field(default_factory=dict)

    @property
    def client(self) -> str:
        return self.request.session.client

    @property
    def sender(self) -> str:
        return self.request.sender or ""
