"""The JetStream names Perimeter uses, and their creation.

Every service calls `ensure_store` at start; creation is idempotent, so the
first process up makes the streams and buckets and the others find them.

| name                  | kind         | holds                                   |
|-----------------------|--------------|-----------------------------------------|
| perimeter_lists       | KV           | list entries, key `{list}.{id}`         |
| perimeter_settings    | KV           | the settings document, key `current`    |
| PERIMETER_QUEUE       | work queue   | accepted mail waiting for delivery      |
| PERIMETER_FAILED      | limits       | mail whose delivery failed for good     |
| perimeter_bodies      | object store | bodies too big to travel inline         |
| PERIMETER_EVENTS      | limits + TTL | rate, dictionary and AUTH-failure events|
| PERIMETER_DECISIONS   | limits       | one decision record per transaction     |
| PERIMETER_AUDIT       | limits       | every change to a list or a setting     |
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    KeyValueConfig,
    ObjectStoreConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadRequestError

log = logging.getLogger(__name__)

LISTS_BUCKET = "perimeter_lists"
SETTINGS_BUCKET = "perimeter_settings"
SETTINGS_KEY = "current"
SEEDED_KEY = "seeded"
BODIES_BUCKET = "perimeter_bodies"

QUEUE_STREAM = "PERIMETER_QUEUE"
QUEUE_SUBJECTS = "perimeter.queue.>"
FAILED_STREAM = "PERIMETER_FAILED"
FAILED_SUBJECTS = "perimeter.failed.>"
EVENTS_STREAM = "PERIMETER_EVENTS"
EVENTS_SUBJECTS = "perimeter.event.>"
DECISIONS_STREAM = "PERIMETER_DECISIONS"
DECISIONS_SUBJECTS = "perimeter.decisions.>"
AUDIT_STREAM = "PERIMETER_AUDIT"
AUDIT_SUBJECTS = "perimeter.audit.>"

DAY = 86_400.0


def _streams(replicas: int) -> list[StreamConfig]:
    file = StorageType.FILE
    return [
        StreamConfig(
            name=QUEUE_STREAM,
            subjects=[QUEUE_SUBJECTS],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=file,
            num_replicas=replicas,
            duplicate_window=120.0,
        ),
        StreamConfig(
            name=FAILED_STREAM,
            subjects=[FAILED_SUBJECTS],
            storage=file,
            num_replicas=replicas,
            max_age=30 * DAY,
        ),
        StreamConfig(
            name=EVENTS_STREAM,
            subjects=[EVENTS_SUBJECTS],
            storage=file,
            num_replicas=replicas,
            allow_msg_ttl=True,
            max_age=2 * DAY,
            max_msgs_per_subject=100_000,
        ),
        StreamConfig(
            name=DECISIONS_STREAM,
            subjects=[DECISIONS_SUBJECTS],
            storage=file,
            num_replicas=replicas,
            max_age=7 * DAY,
            max_bytes=1 << 30,
            discard=DiscardPolicy.OLD,
        ),
        StreamConfig(
            name=AUDIT_STREAM,
            subjects=[AUDIT_SUBJECTS],
            storage=file,
            num_replicas=replicas,
            max_age=365 * DAY,
        ),
    ]


async def ensure_store(js: JetStreamContext, replicas: int = 1) -> None:
    """Create every stream and bucket Perimeter needs, if missing."""
    for config in _streams(replicas):
        await _ensure_stream(js, config)
    for bucket in (LISTS_BUCKET, SETTINGS_BUCKET):
        await js.create_key_value(
            KeyValueConfig(
                bucket=bucket,
                history=1,
                storage=StorageType.FILE,
                replicas=replicas,
                direct=True,
            )
        )
    await js.create_object_store(
        BODIES_BUCKET,
        ObjectStoreConfig(storage=StorageType.FILE, replicas=replicas, ttl=30 * DAY),
    )


async def _ensure_stream(js: JetStreamContext, config: StreamConfig) -> None:
    try:
        await js.add_stream(config)
    except BadRequestError as exc:
        # 10058: a stream by that name exists with another configuration;
        # an operator may have tuned limits, which we leave alone.
        if exc.err_code != 10058:
            raise
        log.debug("stream %s exists with another configuration", config.name)


async def current(
    js: JetStreamContext, bucket: str, keys: str = ">", timeout: float = 5.0
) -> AsyncIterator[tuple[str, bytes]]:
    """(key, value) of every key of `bucket` matching `keys` as it stands
    now: the last message of each key's subject, deleted keys left out.

    Not a KV watch: nats-py marks the end of a watch's current values by
    comparing the server's pending count with the messages it has handled,
    and a message already on its way can come after the mark, so a read
    right after a write could miss it. Here the consumer itself says how
    many messages the snapshot holds (delivered plus pending when asked),
    and exactly that many are read."""
    prefix = f"$KV.{bucket}."
    sub = await js.subscribe(
        prefix + keys,
        stream=f"KV_{bucket}",
        config=ConsumerConfig(ack_policy=AckPolicy.NONE),
        deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
    )
    try:
        info = await sub.consumer_info()
        delivered = info.delivered.consumer_seq if info.delivered else 0
        for _ in range(delivered + (info.num_pending or 0)):
            msg = await sub.next_msg(timeout=timeout)
            if (msg.headers or {}).get("KV-Operation") in ("DEL", "PURGE"):
                continue
            yield msg.subject[len(prefix) :], msg.data
    finally:
        await sub.unsubscribe()
