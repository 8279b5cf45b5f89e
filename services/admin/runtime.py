"""What the routes of the admin API work with, made once at start.

The lifespan of the app connects to NATS and puts a `Runtime` on
`app.state`; routes receive it through the `RuntimeDep` dependency.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request

from services.admin.problems import ApiError
from shared.bodies import Bodies
from shared.bus import Bus
from shared.store import LISTS_BUCKET, SETTINGS_BUCKET

if TYPE_CHECKING:
    from services.admin.audit import AuditLog
    from services.admin.entries import EntryStore
    from services.admin.mailqueue import MailQueue
    from services.admin.settings import SettingsStore


@dataclass(frozen=True, slots=True)
class Runtime:
    bus: Bus
    entries: EntryStore
    settings: SettingsStore
    audit: AuditLog
    queue: MailQueue

    @classmethod
    async def open(cls, bus: Bus) -> Runtime:
        from services.admin.audit import AuditLog
        from services.admin.entries import EntryStore
        from services.admin.mailqueue import MailQueue
        from services.admin.settings import SettingsStore

        lists = await bus.js.key_value(LISTS_BUCKET)
        settings = await bus.js.key_value(SETTINGS_BUCKET)
        bodies = Bodies(bus)
        await bodies.start()
        return cls(
            bus,
            EntryStore(lists, bus.js),
            SettingsStore(settings),
            AuditLog(bus.js),
            MailQueue(bus.js, bodies),
        )


def get_runtime(request: Request) -> Runtime:
    runtime = getattr(request.app.state, "runtime", None)
    if runtime is None:
        raise ApiError(503, "the admin service is starting; try again shortly")
    return runtime  # type: ignore[no-any-return]


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
