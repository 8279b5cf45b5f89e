"""The stages of an SMTP session, each answered by a verdict.

`Gateway` is aiosmtpd's handler. At AUTH, MAIL, RCPT and the end of DATA
it asks the owning service for a verdict over the bus within a time budget;
no answer in time is 451 4.3.0 (SPEC §1). The connect and HELO checks need
only the session and the lists, so it runs them itself (`session_checks`).
It turns every verdict into the catalog's reply; this is the one place
where verdicts become wire replies.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from ipaddress import ip_address, ip_network
from typing import TYPE_CHECKING

from aiosmtpd.smtp import Envelope

from services.ingress import headers, ids, session_checks
from services.ingress.data import Data
from services.ingress.decisions import DecisionLog
from services.ingress.session_checks import SessionContext
from services.ingress.spool import Queued, Spool
from shared import metrics, replies
from shared.bodies import Bodies
from shared.bus import Bus, stage_subject
from shared.errors import BusError
from shared.evaluate import evaluate
from shared.messages import (
    Check,
    Outcome,
    Result,
    StageRequest,
    Verdict,
    WireError,
)
from shared.replies import Reply
from shared.rules import Rule, Stage
from shared.settings import Environment, Settings
from shared.watch import StoreView

if TYPE_CHECKING:
    from services.ingress.smtp import GatewaySession, GatewaySMTP

log = logging.getLogger(__name__)

_FAILED_RECIPIENT_RULES = (Rule.UNKNOWN_RECIPIENT, Rule.RECIPIENT_VERIFICATION)


@dataclass(slots=True)
class Transaction:
    """One MAIL transaction, for the decision record."""

    sender: str
    recipients: list[str] = field(default_factory=list)
    checks: list[tuple[Stage, Check]] = field(default_factory=list)
    reply: str = ""


class Gateway:
    """aiosmtpd handler: asks for verdicts and answers with the catalog."""

    def __init__(
        self,
        env: Environment,
        bus: Bus,
        view: StoreView,
        spool: Spool,
        bodies: Bodies,
        decisions: DecisionLog,
    ) -> None:
        self.env = env
        self.bus = bus
        self.view = view
        self.spool = spool
        self.bodies = bodies
        self.decisions = decisions
        self.sessions: set[GatewaySMTP] = set()
        self._proxies = [ip_network(n) for n in env.trusted_proxy_networks()]

    def __dir__(self) -> list[str]:
        # What aiosmtpd looks for on its handler at every connection.
        return _HOOK_NAMES

    @property
    def settings(self) -> Settings:
        return self.view.settings

    def trusts_proxy(self, peer: str) -> bool:
        address = ip_address(peer)
        return any(address in network for network in self._proxies)

    # Stages -----------------------------------------------------------

    async def connect(self, server: GatewaySMTP, session: GatewaySession) -> str | None:
        """The greeting's verdict: None to greet, else the refusal."""
        verdict = await self._check_here(Stage.CONNECT, session)
        reply = self._reply(verdict)
        if reply is None:
            return None
        self._publish(session, None, _outcome(verdict), reply)
        return reply

    async def handle_HELO(
        self,
        server: GatewaySMTP,
        session: GatewaySession,
        envelope: Envelope,
        hostname: str,
    ) -> str:
        refusal = await self._helo(server, session, hostname)
        return refusal or f"250 {self.env.hostname}"

    async def ehlo(
        self, server: GatewaySMTP, session: GatewaySession, hostname: str
    ) -> list[str]:
        """The EHLO reply lines (not an aiosmtpd hook: see GatewaySMTP)."""
        refusal = await self._helo(server, session, hostname)
        if refusal is not None:
            return [refusal]
        return self._ehlo_lines(server)

    async def _helo(
        self, server: GatewaySMTP, session: GatewaySession, hostname: str
    ) -> str | None:
        await self._end_transaction(session, "aborted")
        session.host_name = None
        session.bus.helo = hostname
        verdict = await self._check_here(Stage.HELO, session)
        reply = self._reply(verdict, server)
        if reply is None:
            session.host_name = hostname
        else:
            # SPEC §2: after helo_ip the session has no HELO.
            session.bus.helo = None
        return reply

    def _ehlo_lines(self, server: GatewaySMTP) -> list[str]:
        settings = self.settings
        lines = [
            self.env.hostname,
            "PIPELINING",
            f"SIZE {settings.max_message_size}",
            "8BITMIME",
            "SMTPUTF8",
            "ENHANCEDSTATUSCODES",
        ]
        if server.tls_context is not None and server._tls_protocol is None:
            lines.append("STARTTLS")
        if server._tls_protocol is not None or not settings.auth_require_tls:
            lines.append("AUTH PLAIN LOGIN")
        return [f"250-{line}" for line in lines[:-1]] + [f"250 {lines[-1]}"]

    async def handle_MAIL(
        self,
        server: GatewaySMTP,
        session: GatewaySession,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        sender = "" if address == "<>" else address
        if _declared_size(mail_options) > self.settings.max_message_size:
            return replies.TOO_BIG.render()
        await self._end_transaction(session, "aborted")
        session.transaction = Transaction(sender)
        verdict = await self._ask(
            StageRequest(Stage.MAIL, session.bus, sender), session
        )
        reply = self._reply(verdict, server)
        if reply is not None:
            await self._end_transaction(session, _outcome(verdict), reply)
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return replies.SENDER_OK.render()

    async def handle_RCPT(
        self,
        server: GatewaySMTP,
        session: GatewaySession,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        tx = session.transaction
        assert tx is not None
        if len(envelope.rcpt_tos) >= self.settings.max_recipients:
            return replies.TOO_MANY_RECIPIENTS.render()
        request = StageRequest(
            Stage.RCPT, session.bus, tx.sender, envelope.rcpt_tos, address
        )
        verdict = await self._ask(request, session)
        reply = self._reply(verdict, server)
        if reply is not None:
            if verdict.rule in _FAILED_RECIPIENT_RULES:
                session.bus.failed_recipients += 1
            tx.reply = reply
            return reply
        envelope.rcpt_tos.append(address)
        tx.recipients.append(address)
        return replies.RECIPIENT_OK.render()

    async def handle_data(
        self,
        server: GatewaySMTP,
        session: GatewaySession,
        envelope: Envelope,
        data: Data,
    ) -> str:
        if data.too_big:
            return await self._finish(session, "rejected", replies.TOO_BIG.render())
        queue_id = ids.queue_id()
        try:
            return await self._accept(server, session, envelope, data.content, queue_id)
        except BusError:
            log.exception("could not store message %s", queue_id)
            reply = replies.TEMPORARY_FAILURE.render()
            return await self._finish(session, "tempfail", reply)

    async def _accept(
        self,
        server: GatewaySMTP,
        session: GatewaySession,
        envelope: Envelope,
        body: bytes,
        queue_id: str,
    ) -> str:
        tx = session.transaction
        assert tx is not None
        body = headers.without_forged_results(body, self.env.hostname)
        ref = None
        if not self.bodies.fits_inline(len(body)):
            ref = await self.bodies.put(queue_id, body)
        request = StageRequest(
            Stage.DATA,
            session.bus,
            tx.sender,
            list(envelope.rcpt_tos),
            body=None if ref else body,
            body_ref=ref,
        )
        verdict = await self._ask(request, session, self.env.data_budget)
        reply = self._reply(verdict, server)
        if reply is not None:
            if ref:
                await self.bodies.drop(ref)
            return await self._finish(session, _outcome(verdict), reply)
        item = Queued(
            id=queue_id,
            sender=tx.sender,
            recipients=list(envelope.rcpt_tos),
            prepend=self._trace_headers(server, session, tx, queue_id),
            body=None if ref else body,
            body_ref=ref,
            client=session.bus.client,
        )
        await self.spool.enqueue(item)
        reply = replies.QUEUED.render(id=queue_id)
        return await self._finish(session, "accepted", reply, queue_id)

    def _trace_headers(
        self, server: GatewaySMTP, session: GatewaySession, tx: Transaction, qid: str
    ) -> bytes:
        protocol = headers.protocol_name(
            session.extended_smtp, session.ssl is not None, bool(session.bus.user)
        )
        received = headers.received(
            helo=session.bus.helo,
            client=session.bus.client,
            hostname=self.env.hostname,
            protocol=protocol,
            queue_id=qid,
            recipients=tx.recipients,
        )
        results = headers.authentication_results(
            hostname=self.env.hostname,
            results=session.results,
            sender=tx.sender,
            client=session.bus.client,
        )
        return results + received

    async def authenticate(
        self, server: GatewaySMTP, session: GatewaySession, user: str, password: str
    ) -> str:
        """The AUTH verdict: 235, 535, auth_once, or auth_bruteforce."""
        request = StageRequest(
            Stage.AUTH, session.bus, auth={"user": user, "password": password}
        )
        verdict = await self._ask(request, session)
        if verdict.outcome is Outcome.PASS and verdict.results.get("auth_user"):
            session.bus.user = verdict.results["auth_user"]
            session.authenticated = True
            return replies.AUTH_OK.render()
        if verdict.outcome is Outcome.REJECT and verdict.rule is None:
            return replies.AUTH_INVALID.render()
        return self._reply(verdict, server) or replies.TEMPORARY_FAILURE.render()

    async def handle_RSET(
        self, server: GatewaySMTP, session: GatewaySession, envelope: Envelope
    ) -> str:
        await self._end_transaction(session, "aborted")
        return replies.OK.render()

    async def handle_exception(self, error: Exception) -> str:
        log.exception("session failed", exc_info=error)
        return replies.TEMPORARY_FAILURE.render()

    async def session_ended(self, session: GatewaySession) -> None:
        await self._end_transaction(session, "aborted")

    # Verdicts ---------------------------------------------------------

    async def _ask(
        self, request: StageRequest, session: GatewaySession, budget: float = 0.0
    ) -> Verdict:
        """Ask the owning service; no answer in time is a temporary failure."""
        started = time.perf_counter()
        try:
            raw = await self.bus.request(
                stage_subject(request.stage),
                request.encode(),
                budget or self.env.stage_budget,
            )
            verdict = Verdict.decode(raw)
        except (BusError, WireError) as exc:
            log.warning("%s stage: %s", request.stage, exc)
            ms = (time.perf_counter() - started) * 1000
            check = Check(request.stage.value, Result.TEMPFAIL, ms, str(exc))
            verdict = Verdict(Outcome.TEMPFAIL, checks=[check])
        self._record(session, request.stage, verdict, started)
        return verdict

    async def _check_here(self, stage: Stage, session: GatewaySession) -> Verdict:
        """A stage whose checks need only the session and the lists."""
        started = time.perf_counter()
        ctx = SessionContext(session.bus, self.view.lists)
        steps = session_checks.STEPS[stage]
        verdict = await evaluate(steps, ctx, self.settings, stage.value)
        self._record(session, stage, verdict, started)
        return verdict

    def _record(
        self, session: GatewaySession, stage: Stage, verdict: Verdict, started: float
    ) -> None:
        """Time the stage and keep its checks for the decision record."""
        elapsed = time.perf_counter() - started
        metrics.STAGE_SECONDS.labels(stage=stage.value).observe(elapsed)
        tx = session.transaction
        checks = tx.checks if tx else session.checks
        checks.extend((stage, check) for check in verdict.checks)
        session.results.update(verdict.results)

    def _reply(self, verdict: Verdict, server: GatewaySMTP | None = None) -> str | None:
        """The catalog reply for a verdict; None when the session goes on."""
        if verdict.outcome is Outcome.PASS:
            return None
        reply: Reply = replies.TEMPORARY_FAILURE
        if verdict.outcome is Outcome.REJECT and verdict.rule is not None:
            reply = replies.RULE_REPLIES[verdict.rule]
        if reply.close and server is not None:
            server.close_after_reply()
        return reply.render(**verdict.values)

    # Decision records -------------------------------------------------

    async def _finish(
        self, session: GatewaySession, outcome: str, reply: str, queue_id: str = ""
    ) -> str:
        await self._end_transaction(session, outcome, reply, queue_id)
        return reply

    async def _end_transaction(
        self, session: GatewaySession, outcome: str, reply: str = "", queue_id: str = ""
    ) -> None:
        tx = session.transaction
        if tx is None:
            return
        session.transaction = None
        self._publish(session, tx, outcome, reply or tx.reply, queue_id)

    def _publish(
        self,
        session: GatewaySession,
        tx: Transaction | None,
        outcome: str,
        reply: str,
        queue_id: str = "",
    ) -> None:
        """One decision record per transaction (SPEC §6), published soon."""
        checks = session.checks + (tx.checks if tx else [])
        session.checks = []
        record = {
            "session": session.bus.id,
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "client": session.bus.client,
            "helo": session.bus.helo,
            "sender": tx.sender if tx else None,
            "recipients": tx.recipients if tx else [],
            "checks": [_check_record(stage, check) for stage, check in checks],
            "reply": reply,
            "outcome": outcome,
            "queue_id": queue_id or None,
        }
        metrics.MESSAGES.labels(outcome=outcome).inc()
        log.info(
            "%s client=%s sender=%s rcpts=%d reply=%s",
            outcome,
            session.bus.client,
            tx.sender if tx else None,
            len(tx.recipients) if tx else 0,
            reply[:3] or "-",
        )
        self.decisions.add(outcome, record)


def _declared_size(mail_options: list[str]) -> int:
    """RFC 1870: the SIZE= the client declared at MAIL, or 0."""
    for option in mail_options:
        name, _, value = option.partition("=")
        if name.upper() == "SIZE" and value.isdigit():
            return int(value)
    return 0


def _check_record(stage: Stage, check: Check) -> dict[str, object]:
    return {
        "stage": stage.value,
        "rule": check.rule,
        "result": check.result.value,
        "ms": round(check.ms, 2),
        "detail": check.detail,
    }


def _outcome(verdict: Verdict) -> str:
    return "tempfail" if verdict.outcome is Outcome.TEMPFAIL else "rejected"


_HOOK_NAMES = sorted(name for name in dir(Gateway) if name.startswith("handle_"))
