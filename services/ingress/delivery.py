"""The delivery worker: relays queued mail to its routes (SPEC §1).

It pulls from the PERIMETER_QUEUE work queue and acknowledges an entry only
once every recipient has an answer from its route: 2xx delivered, 5xx
failed for good (kept in PERIMETER_FAILED for the operator), 4xx or no
answer retried with exponential backoff. When some recipients are done and
others must wait, the rest is queued again as a new generation of the same
message, so a retry never delivers twice to anyone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from contextlib import suppress
from dataclasses import dataclass

from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy, ConsumerConfig
from nats.js.errors import NotFoundError

from services.ingress import dsn, ids
from services.ingress.relay import (
    RecipientResult,
    RelayPool,
    RouteError,
    RouteUnreachable,
)
from services.ingress.spool import Queued, Spool
from shared import metrics
from shared.bodies import Bodies
from shared.bus import Bus
from shared.dns import MailHosts, Resolver, Status, mail_hosts
from shared.settings import Environment, split_hostport
from shared.store import QUEUE_STREAM, QUEUE_SUBJECTS
from shared.watch import StoreView

log = logging.getLogger(__name__)

DURABLE = "delivery"
Route = tuple[str, int]
# How many of a domain's mail hosts, and addresses of each, are tried.
_MAX_HOSTS = 5
_MAX_ADDRESSES = 2


@dataclass(frozen=True, slots=True)
class Direct:
    """Mail for a domain with no route of its own and no smarthost goes to
    the domain's mail hosts (RFC 5321 §5)."""

    domain: str


class Delivery:
    def __init__(
        self,
        env: Environment,
        bus: Bus,
        view: StoreView,
        spool: Spool,
        bodies: Bodies,
        pool: RelayPool,
        resolver: Resolver,
    ) -> None:
        self.env = env
        self.bus = bus
        self.view = view
        self.spool = spool
        self.bodies = bodies
        self.pool = pool
        self.resolver = resolver
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: asyncio.Task[None] | None = None
        self._gauge: asyncio.Task[None] | None = None

    async def start(self) -> None:
        config = ConsumerConfig(
            ack_policy=AckPolicy.EXPLICIT, ack_wait=300.0, max_ack_pending=10_000
        )
        self._sub = await self.bus.js.pull_subscribe(
            QUEUE_SUBJECTS, durable=DURABLE, stream=QUEUE_STREAM, config=config
        )
        self._runner = asyncio.create_task(self._run())
        self._gauge = asyncio.create_task(self._watch_depth())

    async def stop(self) -> None:
        """Stop fetching; let deliveries under way finish."""
        for task in (self._runner, self._gauge):
            if task is not None:
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=30)

    async def _run(self) -> None:
        capacity = self.env.delivery_concurrency
        while True:
            free = capacity - len(self._tasks)
            if free <= 0:
                await asyncio.wait(
                    set(self._tasks), return_when=asyncio.FIRST_COMPLETED
                )
                continue
            try:
                msgs = await self._sub.fetch(min(free, 64), timeout=5.0)
            except (TimeoutError, NatsTimeout):
                continue
            except Exception:
                log.exception("fetching from the queue failed")
                await asyncio.sleep(1.0)
                continue
            for msg in msgs:
                task = asyncio.create_task(self._deliver(msg))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _watch_depth(self) -> None:
        """perimeter_delivery_queue_depth: stored and not yet delivered."""
        while True:
            try:
                info = await self.bus.js.consumer_info(QUEUE_STREAM, DURABLE)
                depth = (info.num_pending or 0) + (info.num_ack_pending or 0)
                metrics.DELIVERY_QUEUE_DEPTH.set(depth)
            except Exception as exc:
                log.debug("queue depth unknown: %s", exc)
            await asyncio.sleep(5.0)

    async def _deliver(self, msg: Msg) -> None:
        try:
            item = Queued.decode(msg.data)
        except Exception:
            log.exception("dropping an unreadable queue entry")
            await msg.term()
            return
        try:
            await self._attempt(msg, item)
        except Exception:
            log.exception("delivery of %s failed; will retry", item.id)
            await msg.nak(delay=self._backoff(msg))

    async def _attempt(self, msg: Msg, item: Queued) -> None:
        body = item.body if item.body is not None else b""
        if item.body_ref:
            try:
                body = await self.bodies.get(item.body_ref)
            except NotFoundError:
                await self._lost(msg, item)
                return
        results = await self._relay(item, body)
        done = [r for r, res in results.items() if res.delivered]
        failed = [r for r, res in results.items() if res.permanent]
        waiting = [r for r in item.recipients if r not in done and r not in failed]
        for rcpt in done:
            log.info("%s delivered to <%s>", item.id, rcpt)
        if waiting and time.time() - item.received > self.env.delivery_max_age:
            for rcpt in waiting:
                results[rcpt] = _expired(results.get(rcpt))
            failed, waiting = failed + waiting, []
        await self._settle(msg, item, body, results, failed, waiting, bool(done))

    async def _settle(
        self,
        msg: Msg,
        item: Queued,
        body: bytes,
        results: dict[str, RecipientResult],
        failed: list[str],
        waiting: list[str],
        partial: bool,
    ) -> None:
        if failed:
            await self._fail(msg, item, body, results, failed)
        if waiting and not (partial or failed):
            delay = self._backoff(msg)
            log.info("%s deferred %.0fs: %s", item.id, delay, _first_error(results))
            await msg.nak(delay=delay)
            return
        if waiting:
            rest = _next_generation(item, waiting)
            rest.kept = item.kept or bool(failed)
            # Named by the entry it replaces, which is unique: a generation
            # number can repeat across branches of one message.
            await self.spool.enqueue(rest, f"{item.id}.{msg.metadata.sequence.stream}")
        elif item.body_ref and not (failed or item.kept):
            # The body goes once no entry, queued or failed, needs it.
            await self.bodies.drop(item.body_ref)
        # A plain ack: waiting for nats-server to confirm it would cost a
        # message back per delivery and close no gap, since a lost ack
        # means a redelivery either way (after ack_wait), never a loss.
        await msg.ack()

    async def _lost(self, msg: Msg, item: Queued) -> None:
        """The body is gone (expired or dropped): nothing left to retry."""
        log.error("%s: body %s is gone; failing the message", item.id, item.body_ref)
        gone = RecipientResult(554, "5.3.0 the stored message was lost at the gateway")
        results = dict.fromkeys(item.recipients, gone)
        await self._fail(msg, item, b"", results, item.recipients)
        await msg.ack_sync()

    async def _fail(
        self,
        msg: Msg,
        item: Queued,
        body: bytes,
        results: dict[str, RecipientResult],
        failed: list[str],
    ) -> None:
        """Keep the failed recipients' entry for the operator, and tell the
        sender (RFC 5321 §6.1: once 250 was said, silence is not allowed)."""
        error = "; ".join(f"<{r}>: {_text(results.get(r))}" for r in failed)
        log.warning("%s failed: %s", item.id, error)
        kept = _next_generation(item, failed)
        kept.error = error
        await self.spool.fail(kept)
        if not item.sender:
            return  # a bounce is never bounced (RFC 5321 §4.5.5)
        failures = [_failure(rcpt, results.get(rcpt)) for rcpt in failed]
        notice = dsn.bounce(
            hostname=self.env.hostname,
            queue_id=item.id,
            sender=item.sender,
            received=item.received,
            failures=failures,
            original=item.prepend + body[: dsn.HEADERS_LIMIT],
        )
        bounce = Queued(ids.queue_id(), "", [item.sender], prepend=b"", body=notice)
        # Named by the entry that failed, so a retry of this step after a
        # lost acknowledgement queues the bounce once.
        origin = f"{item.id}.{msg.metadata.sequence.stream}"
        await self.spool.enqueue(bounce, f"{origin}.dsn")
        log.info("%s bounced to <%s> as %s", item.id, item.sender, bounce.id)

    async def _relay(self, item: Queued, body: bytes) -> dict[str, RecipientResult]:
        results: dict[str, RecipientResult] = {}
        for target, recipients in self._routes(item.recipients).items():
            if isinstance(target, Direct):
                sent = await self._send_direct(target.domain, item, recipients, body)
            else:
                sent = await self._send(target, item, recipients, body)
            results.update(sent)
        return results

    async def _send_direct(
        self, domain: str, item: Queued, recipients: list[str], body: bytes
    ) -> dict[str, RecipientResult]:
        """Deliver to the domain's mail hosts, best preference first; the
        first that holds a session decides (RFC 5321 §5.1)."""
        found = await mail_hosts(self.resolver, domain)
        if found.status is not Status.OK:
            failure = _no_mail_hosts(domain, found)
            return dict.fromkeys(recipients, failure)
        tried: list[str] = []
        for host in found.hosts[:_MAX_HOSTS]:
            if host.rstrip(".").lower() == self.env.hostname.lower():
                continue  # ourselves: the message would only come back
            addresses = await self.resolver.a_aaaa(host)
            for address in addresses.records[:_MAX_ADDRESSES]:
                try:
                    return await self.pool.send(
                        (address, self.env.mx_port),
                        item.sender,
                        recipients,
                        body,
                        prepend=item.prepend,
                    )
                except RouteUnreachable as exc:
                    tried.append(exc.message)
                except RouteError as exc:
                    return _refused(recipients, exc)
            if not addresses.found:
                tried.append(f"{host}: no address ({addresses.status})")
        detail = "; ".join(tried) or "only this gateway is listed"
        text = f"4.4.1 no mail host of {domain} took the message: {detail}"
        return dict.fromkeys(recipients, RecipientResult(451, text))

    async def _send(
        self, route: Route, item: Queued, recipients: list[str], body: bytes
    ) -> dict[str, RecipientResult]:
        try:
            return await self.pool.send(
                route, item.sender, recipients, body, prepend=item.prepend
            )
        except RouteError as exc:
            return _refused(recipients, exc)

    def _routes(self, recipients: list[str]) -> dict[Route | Direct, list[str]]:
        """Group recipients by the route their domain is delivered to."""
        groups: dict[Route | Direct, list[str]] = defaultdict(list)
        for rcpt in recipients:
            groups[self.route_for(rcpt.rpartition("@")[2].lower())].append(rcpt)
        return groups

    def route_for(self, domain: str) -> Route | Direct:
        """The relay_domains entry's route, else the smarthost, else the
        domain's own mail hosts."""
        entry = self.view.lists.relay_domain(domain)
        if entry is not None:
            return split_hostport(entry.route, 25)
        if self.env.smarthost:
            return split_hostport(self.env.smarthost, 25)
        return Direct(domain)

    def _backoff(self, msg: Msg) -> float:
        attempts = msg.metadata.num_delivered or 1
        delay = self.env.delivery_retry_base * 2 ** (attempts - 1)
        return float(min(delay, self.env.delivery_retry_max))


def _refused(recipients: list[str], exc: RouteError) -> dict[str, RecipientResult]:
    """The route's refusal of the whole message, as every recipient's."""
    return dict.fromkeys(recipients, RecipientResult(exc.code, exc.message))


def _expired(last: RecipientResult | None) -> RecipientResult:
    """A recipient still failing for now when the message is too old to
    try again: failed, with why (RFC 3463 4.4.7, delivery time expired)."""
    return RecipientResult(451, f"4.4.7 gave up after the last answer: {_text(last)}")


def _failure(recipient: str, result: RecipientResult | None) -> dsn.Failure:
    if result is None:
        return dsn.Failure(recipient, 451, "4.4.7 no answer from the route")
    return dsn.Failure(recipient, result.code, result.message)


def _no_mail_hosts(domain: str, found: MailHosts) -> RecipientResult:
    """Why a domain's mail cannot go anywhere: for now, or for good."""
    if found.status in (Status.TIMEOUT, Status.ERROR):
        return RecipientResult(451, f"4.4.3 {domain}: {found.reason}")
    if found.reason == "null MX":
        # RFC 7505 §4.2: the domain says it accepts no mail.
        return RecipientResult(556, f"5.1.10 {domain} accepts no mail (null MX)")
    return RecipientResult(550, f"5.1.2 {domain}: {found.reason}")


def _next_generation(item: Queued, recipients: list[str]) -> Queued:
    return Queued(
        id=item.id,
        sender=item.sender,
        recipients=recipients,
        prepend=item.prepend,
        body=item.body,
        body_ref=item.body_ref,
        client=item.client,
        received=item.received,
        generation=item.generation + 1,
    )


def _text(result: RecipientResult | None) -> str:
    return f"{result.code} {result.message}" if result else "no answer"


def _first_error(results: dict[str, RecipientResult]) -> str:
    errors = (_text(r) for r in results.values() if not r.delivered)
    return next(errors, "")
