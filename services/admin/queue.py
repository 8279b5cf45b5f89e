"""The mail queue over HTTP: list it, retry or drop a failed message.

Entries show the envelope, size and state of a message, never its body.
Retrying or dropping is recorded in the audit trail under `queue`.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from services.admin.auth import TokenName, token_name
from services.admin.mailqueue import BodyGone, MailQueue, NotFailed, State, Stored
from services.admin.problems import ApiError, responses
from services.admin.runtime import RuntimeDep
from services.ingress.spool import Queued

log = logging.getLogger(__name__)

Filter = Literal["all", "queued", "waiting", "retrying", "failed"]


class QueueEntry(BaseModel):
    """A message waiting for delivery, retrying, or failed for good."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "3F2A9C1B7D4E8A06",
                    "seq": 4711,
                    "state": "failed",
                    "sender": "alice@example.com",
                    "recipients": ["bob@example.org"],
                    "size": 48213,
                    "received": "2030-03-17T17:46:40Z",
                    "client": "198.51.100.7",
                    "error": "<bob@example.org>: 550 5.1.1 no such user",
                }
            ]
        }
    )

    id: str = Field(examples=["3F2A9C1B7D4E8A06"])
    seq: int = Field(
        description="its sequence in PERIMETER_QUEUE, or in PERIMETER_FAILED "
        "when failed"
    )
    state: State = Field(
        description="waiting: not tried yet; retrying: tried at least once "
        "(or being tried now); failed: delivery failed for good"
    )
    sender: str = Field(description="the envelope sender; empty for <>")
    recipients: list[str] = Field(description="those still to be delivered")
    size: int | None = Field(
        description="bytes; null when the stored body is gone (bodies are kept 7 days)"
    )
    received: datetime
    client: str = Field(description="the address of the client that sent it")
    error: str | None = Field(description="why delivery failed, per recipient")


QueueId = Annotated[
    str,
    Path(
        description="the queue id the gateway answered with (250 ... queued as)",
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        examples=["3F2A9C1B7D4E8A06"],
    ),
]

router = APIRouter(
    prefix="/api/v1/queue",
    tags=["queue"],
    dependencies=[Depends(token_name)],
    responses=responses(400, 401, 422, 503),
)

_NOT_FAILED = {404: "No failed message has the id"}


@router.get(
    "",
    summary="Mail waiting, retrying or failed",
    description="Queued messages in delivery order, then failed ones, oldest "
    "first. `state` narrows the list: `queued` is waiting and retrying.",
)
async def read_queue(
    runtime: RuntimeDep,
    state: Filter = "all",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[QueueEntry]:
    queue = runtime.queue
    found: list[Stored] = []
    if state == "waiting" or state == "retrying":
        found += await queue.queued(limit, state)
    elif state != "failed":
        found += await queue.queued(limit)
    if state in ("all", "failed") and len(found) < limit:
        found += await queue.failed(limit - len(found))
    return list(await asyncio.gather(*(_entry(queue, s) for s in found)))


@router.post(
    "/{queue_id}/retry",
    status_code=202,
    summary="Queue a failed message for delivery again",
    description="Its failed recipients are queued again as one entry, which "
    "the answer shows; the message leaves the failed list.",
    responses=responses(
        404,
        409,
        meaning={
            **_NOT_FAILED,
            409: "The message is waiting for delivery, or its body is gone",
        },
    ),
)
async def retry_message(
    queue_id: QueueId, runtime: RuntimeDep, who: TokenName
) -> QueueEntry:
    try:
        failed, stored = await runtime.queue.retry(queue_id)
    except NotFailed as exc:
        raise _not_failed(exc) from None
    except BodyGone:
        raise ApiError(
            409,
            f"the body of {queue_id} is no longer stored (bodies are kept 7 "
            "days), so it cannot be delivered; it can only be dropped",
        ) from None

    count = len(stored.item.recipients)
    log.info("%s queued %s again for %d recipients", who, queue_id, count)
    after = {"recipients": stored.item.recipients, "seq": stored.seq}
    await runtime.audit.message(who, "retry", queue_id, _summary(failed), after)
    return await _entry(runtime.queue, stored)


@router.delete(
    "/{queue_id}",
    status_code=204,
    summary="Drop a failed message",
    description="Deletes the failed message and its stored body.",
    responses=responses(
        404,
        409,
        meaning={**_NOT_FAILED, 409: "The message is waiting for delivery"},
    ),
)
async def drop_message(
    queue_id: QueueId, runtime: RuntimeDep, who: TokenName
) -> Response:
    try:
        failed = await runtime.queue.drop(queue_id)
    except NotFailed as exc:
        raise _not_failed(exc) from None

    log.info("%s dropped failed message %s", who, queue_id)
    await runtime.audit.message(who, "drop", queue_id, _summary(failed))
    return Response(status_code=204)


async def _entry(queue: MailQueue, stored: Stored) -> QueueEntry:
    item = stored.item
    return QueueEntry(
        id=item.id,
        seq=stored.seq,
        state=stored.state,
        sender=item.sender,
        recipients=item.recipients,
        size=await queue.size(item),
        received=datetime.fromtimestamp(int(item.received), UTC),
        client=item.client,
        error=item.error if stored.state == "failed" else None,
    )


def _not_failed(exc: NotFailed) -> ApiError:
    if exc.queued:
        return ApiError(
            409,
            f"{exc.queue_id} is waiting for delivery; only a failed message "
            "can be retried or dropped",
        )
    return ApiError(404, f"no failed message has the id {exc.queue_id}")


def _summary(failed: list[Queued]) -> dict[str, Any]:
    """What the audit keeps of failed entries: envelope and error."""
    return {
        "sender": failed[0].sender,
        "recipients": [r for item in failed for r in item.recipients],
        "error": "; ".join(item.error for item in failed if item.error),
    }
