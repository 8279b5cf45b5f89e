"""What a content rule sees: the message, the envelope, lists, settings, and
the scanners the service holds.

The message is one `bytes` object for the whole request: every rule reads
that same object (or a memoryview of it), so a 25 MB message is never
copied whole on its way through the rules.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from services.content.antivirus import Clamd
from services.content.attachments import Finding, Reason
from services.content.dkim import TxtLookup
from shared.lists import ListIndex
from shared.messages import StageRequest
from shared.settings import Settings

# How many CPU-bound walks of a message one worker runs at once. The GIL
# lets only one of them run at a time anyway; the bound keeps what walks
# decode (a zip attachment, up to three quarters of a message) to a few
# messages' worth however many arrive together.
CPU_SLOTS = 2


@dataclass(slots=True)
class Scanners:
    """What the rules call out to, built once by the service and shared by
    every request: clamd (None when PERIMETER_CLAMD is unset), the TXT
    lookup DKIM keys come from, and the slots for CPU-bound work."""

    clamd: Clamd | None
    txt_lookup: TxtLookup
    cpu: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(CPU_SLOTS))


@dataclass(frozen=True, slots=True)
class Walk:
    """One walk of the attachment names. It stops at its first finding, so
    it has seen the whole message unless it stopped at a blocked name."""

    finding: Finding | None

    @property
    def complete(self) -> bool:
        found = self.finding
        return found is None or found.reason is not Reason.BLOCKED_EXTENSION

    @property
    def too_complex(self) -> Finding | None:
        """The finding when the message goes over a bound of the walk."""
        found = self.finding
        if found is None or found.reason is Reason.BLOCKED_EXTENSION:
            return None
        return found


@dataclass(slots=True)
class Context:
    request: StageRequest
    message: bytes
    lists: ListIndex
    settings: Settings
    scanners: Scanners
    results: dict[str, str] = field(default_factory=dict)
    # The last walk of the attachments, for the rules after the first.
    walk: Walk | None = None

    @property
    def client(self) -> str:
        return self.request.session.client

    @property
    def sender(self) -> str:
        return self.request.sender or ""
