"""The relay client against real SMTP servers on loopback: aiosmtpd as the
route, and a scripted server for what aiosmtpd will not do (answer out of
turn, not at all, or not in SMTP)."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from services.ingress.relay import RelayPool, RouteError, _content
from services.ingress.tls import server_context
from tests.support.natsserver import free_port

SENDER = "bob@sender.example"
ALICE = "alice@route.test"
CAROL = "carol@route.test"
PREPEND = (
    b"Received: from client.test (localhost [127.0.0.1])\r\n"
    b"\tby gateway.test (Perimeter) with ESMTP id 1; Thu, 1 Jan 2026 00:00:00 +0000\r\n"
)
BODY = (
    b"Subject: dots\r\n"
    b"\r\n"
    b".a line that starts with a dot\r\n"
    b"..and two\r\n"
    b".\r\n"
    b"the line above is a lone dot\r\n"
)


@dataclass
class Arrived:
    sender: str
    recipients: list[str]
    content: bytes
    mail_options: list[str]
    tls: bool


class _Recording(SMTP):
    """aiosmtpd's server, keeping what arrives in each read from the socket."""

    def __init__(self, route: Route, **kwargs: Any) -> None:
        super().__init__(route, **kwargs)
        self.reads: list[bytes] = []
        route.connections.append(self)

    def data_received(self, data: bytes) -> None:
        self.reads.append(data)
        super().data_received(data)


@dataclass
class Route:
    """A route: aiosmtpd, keeping what it accepts and refusing on demand."""

    pipelining: bool = True
    tls: ssl.SSLContext | None = None
    smtputf8: bool = False
    size_limit: int | None = None
    ehlo_reply: str | None = None
    mail_reply: str | None = None
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    data_reply: str | None = None
    arrived: list[Arrived] = field(default_factory=list)
    connections: list[_Recording] = field(default_factory=list)
    _server: asyncio.Server | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._protocol, "127.0.0.1", 0)

    def _protocol(self) -> _Recording:
        return _Recording(
            self,
            hostname="route.test",
            data_size_limit=self.size_limit,
            enable_SMTPUTF8=self.smtputf8,
            tls_context=self.tls,
            require_starttls=self.tls is not None,
        )

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for conn in self.connections:
            if conn.transport is not None:
                conn.transport.close()

    @property
    def address(self) -> tuple[str, int]:
        assert self._server is not None
        return "127.0.0.1", self._server.sockets[0].getsockname()[1]

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        if self.ehlo_reply is not None:
            return [self.ehlo_reply]
        session.host_name = hostname
        if self.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if self.mail_reply is not None:
            return self.mail_reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 Ok"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if address in self.rcpt_replies:
            return self.rcpt_replies[address]
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        if self.data_reply is not None:
            return self.data_reply
        arrived = Arrived(
            sender=envelope.mail_from or "",
            recipients=list(envelope.rcpt_tos),
            content=envelope.original_content or b"",
            mail_options=list(envelope.mail_options),
            tls=session.ssl is not None,
        )
        self.arrived.append(arrived)
        return "250 2.0.0 Ok: queued as 1"


@asynccontextmanager
async def serving(**settings: Any) -> AsyncIterator[Route]:
    route = Route(**settings)
    await route.start()
    try:
        yield route
    finally:
        await route.stop()


@pytest.fixture(params=[True, False], ids=["pipelining", "one-by-one"])
async def route(request: pytest.FixtureRequest) -> AsyncIterator[Route]:
    async with serving(pipelining=request.param) as running:
        yield running


@pytest.fixture
async def pool() -> AsyncIterator[RelayPool]:
    relay = RelayPool("gateway.test", timeout=5.0)
    yield relay
    await relay.close()


async def test_a_message_arrives_intact_for_two_recipients(
    route: Route, pool: RelayPool
) -> None:
    results = await pool.send(
        route.address, SENDER, [ALICE, CAROL], BODY, prepend=PREPEND
    )

    assert {r: (res.code, res.message) for r, res in results.items()} == {
        ALICE: (250, "2.0.0 Ok: queued as 1"),
        CAROL: (250, "2.0.0 Ok: queued as 1"),
    }
    assert all(res.delivered for res in results.values())
    [arrived] = route.arrived
    assert arrived.sender == SENDER
    assert arrived.recipients == [ALICE, CAROL]
    assert arrived.content == PREPEND + BODY


@pytest.mark.parametrize(
    ("prepend", "body", "content"),
    [
        (b"", b".starts with a dot\r\n", b".starts with a dot\r\n"),
        (PREPEND, b"no final line end", PREPEND + b"no final line end\r\n"),
        (b"", b"a\r\n.", b"a\r\n.\r\n"),
        (PREPEND, b"", PREPEND),
        (b"", b"", b""),
        (
            b"X-Dot: 1\r\n",
            b"\r\n8bit: \xc3\xa9\r\n",
            b"X-Dot: 1\r\n\r\n8bit: \xc3\xa9\r\n",
        ),
    ],
    ids=["leading-dot", "no-final-crlf", "dot-at-end", "no-body", "empty", "8bit"],
)
async def test_content_is_dot_stuffed_and_ended(
    route: Route, pool: RelayPool, prepend: bytes, body: bytes, content: bytes
) -> None:
    await pool.send(route.address, SENDER, [ALICE], body, prepend=prepend)

    assert route.arrived[0].content == content


def large_body() -> bytes:
    """Some megabytes, more than the client writes at a time, with dots at
    line starts throughout; aiosmtpd takes lines of up to 1000 octets."""
    lines = [b".%06d " % n + b"x" * (n % 900) + b"\r\n" for n in range(6000)]
    return b"".join(lines)


async def test_a_large_message_arrives_byte_for_byte(
    route: Route, pool: RelayPool
) -> None:
    body = large_body()
    assert len(body) > 2 * 1024 * 1024

    await pool.send(route.address, SENDER, [ALICE], body, prepend=PREPEND)

    assert route.arrived[0].content == PREPEND + body


def test_a_body_without_lines_starting_with_a_dot_is_not_copied() -> None:
    body = b"Subject: plain\r\n\r\nno dot. at. line starts\r\n" * 1000

    pieces = _content(PREPEND, body)

    assert pieces[1] is body
    assert pieces[2:] == [b".\r\n"]


async def test_a_refused_recipient_fails_for_good_and_the_other_is_delivered(
    route: Route, pool: RelayPool
) -> None:
    route.rcpt_replies[CAROL] = "550 5.1.1 no such user"

    results = await pool.send(route.address, SENDER, [ALICE, CAROL], BODY)

    assert results[ALICE].delivered
    assert (results[CAROL].code, results[CAROL].message) == (
        550,
        "5.1.1 no such user",
    )
    assert results[CAROL].permanent
    assert [a.recipients for a in route.arrived] == [[ALICE]]


async def test_no_recipient_accepted_sends_no_content_and_keeps_the_connection(
    route: Route, pool: RelayPool
) -> None:
    route.rcpt_replies = {ALICE: "550 5.1.1 no", CAROL: "450 4.2.1 later"}

    results = await pool.send(route.address, SENDER, [ALICE, CAROL], BODY)

    assert {r: res.code for r, res in results.items()} == {ALICE: 550, CAROL: 450}
    assert route.arrived == []
    commands = b"".join(route.connections[0].reads)
    assert b"RSET\r\n" in commands
    assert (b"DATA\r\n" in commands) is route.pipelining
    route.rcpt_replies = {}
    again = await pool.send(route.address, SENDER, [ALICE], BODY)
    assert again[ALICE].delivered
    assert len(route.connections) == 1


async def test_a_refused_sender_is_a_route_error(route: Route, pool: RelayPool) -> None:
    route.mail_reply = "550 5.7.1 sender refused"

    with pytest.raises(RouteError) as refused:
        await pool.send(route.address, SENDER, [ALICE, CAROL], BODY)

    assert (refused.value.code, refused.value.message) == (
        550,
        "5.7.1 sender refused",
    )
    assert refused.value.permanent
    assert route.arrived == []


async def test_a_refused_end_of_data_is_a_route_error(
    route: Route, pool: RelayPool
) -> None:
    route.data_reply = "451 4.3.0 try again later"

    with pytest.raises(RouteError) as refused:
        await pool.send(route.address, SENDER, [ALICE], BODY)

    assert (refused.value.code, refused.value.message) == (
        451,
        "4.3.0 try again later",
    )
    assert not refused.value.permanent


async def test_the_connection_is_reused_for_the_next_message(
    route: Route, pool: RelayPool
) -> None:
    await pool.send(route.address, SENDER, [ALICE], BODY)
    await pool.send(route.address, "", [CAROL], BODY, prepend=PREPEND)

    assert len(route.connections) == 1
    assert [(a.sender, a.recipients) for a in route.arrived] == [
        (SENDER, [ALICE]),
        ("<>", [CAROL]),
    ]
    assert b"MAIL FROM:<>\r\n" in b"".join(route.connections[0].reads)


async def test_concurrent_messages_take_their_own_connections(
    route: Route, pool: RelayPool
) -> None:
    sends = [
        pool.send(route.address, SENDER, [f"user{n}@route.test"], BODY)
        for n in range(3)
    ]
    results = await asyncio.gather(*sends)

    assert all(res.delivered for result in results for res in result.values())
    assert len(route.arrived) == 3
    assert 1 <= len(route.connections) <= 3


@pytest.mark.parametrize(
    "farewell", [b"", b"421 4.4.2 route.test idle too long\r\n"], ids=["eof", "421"]
)
async def test_a_connection_the_route_closed_while_idle_is_replaced(
    route: Route, pool: RelayPool, farewell: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="services.ingress.relay")
    await pool.send(route.address, SENDER, [ALICE], BODY)
    transport = route.connections[0].transport
    assert transport is not None
    transport.write(farewell)
    transport.close()
    await asyncio.sleep(0.1)

    results = await pool.send(route.address, SENDER, [CAROL], BODY)

    assert results[CAROL].delivered
    assert len(route.connections) == 2
    assert [a.recipients for a in route.arrived] == [[ALICE], [CAROL]]
    if farewell:
        # The answer waiting in the buffer keeps the connection looking
        # open: it is tried, found closed, and replaced.
        assert "pooled connection to 127.0.0.1" in caplog.text


async def test_a_route_that_refuses_connections_is_a_route_error(
    pool: RelayPool,
) -> None:
    port = free_port()

    with pytest.raises(RouteError) as refused:
        await pool.send(("127.0.0.1", port), SENDER, [ALICE], BODY)

    assert refused.value.code == 451
    assert refused.value.message.startswith(f"cannot connect to 127.0.0.1:{port}: ")


async def test_pipelined_commands_go_in_one_write(pool: RelayPool) -> None:
    async with serving(pipelining=True) as route:
        await pool.send(route.address, SENDER, [ALICE, CAROL], BODY)

    reads = route.connections[0].reads
    assert (
        b"MAIL FROM:<bob@sender.example>\r\n"
        b"RCPT TO:<alice@route.test>\r\n"
        b"RCPT TO:<carol@route.test>\r\n"
        b"DATA\r\n"
    ) in reads
    assert route.arrived[0].content == BODY


async def test_without_pipelining_commands_go_one_at_a_time(pool: RelayPool) -> None:
    async with serving(pipelining=False) as route:
        await pool.send(route.address, SENDER, [ALICE, CAROL], BODY)

    assert route.connections[0].reads[:5] == [
        b"EHLO gateway.test\r\n",
        b"MAIL FROM:<bob@sender.example>\r\n",
        b"RCPT TO:<alice@route.test>\r\n",
        b"RCPT TO:<carol@route.test>\r\n",
        b"DATA\r\n",
    ]
    assert route.arrived[0].content == BODY


async def test_starttls_is_used_when_offered(pool: RelayPool) -> None:
    # require_starttls: the route refuses MAIL in the clear.
    context = server_context("", "", "route.test")
    bodies = {ALICE: BODY, CAROL: large_body()}
    async with serving(tls=context) as route:
        for rcpt, body in bodies.items():
            results = await pool.send(
                route.address, SENDER, [rcpt], body, prepend=PREPEND
            )
            assert results[rcpt].delivered

    assert [(a.tls, a.content) for a in route.arrived] == [
        (True, PREPEND + BODY),
        (True, PREPEND + bodies[CAROL]),
    ]
    assert len(route.connections) == 1


async def test_a_route_that_refuses_ehlo_gets_helo(pool: RelayPool) -> None:
    async with serving(ehlo_reply="502 5.5.1 EHLO not implemented") as route:
        results = await pool.send(route.address, SENDER, [ALICE], BODY)

    assert results[ALICE].delivered
    assert route.connections[0].reads[:3] == [
        b"EHLO gateway.test\r\n",
        b"HELO gateway.test\r\n",
        b"MAIL FROM:<bob@sender.example>\r\n",
    ]


async def test_mail_parameters_follow_what_the_route_offers(pool: RelayPool) -> None:
    body = b"Subject: caf\xc3\xa9\r\n\r\n\xc3\xa9\r\n"
    async with serving(smtputf8=True, size_limit=10_000_000) as route:
        await pool.send(route.address, "b\u00f3b@sender.example", [ALICE], body)

    assert sorted(route.arrived[0].mail_options) == [
        "BODY=8BITMIME",
        f"SIZE={len(body)}",
        "SMTPUTF8",
    ]
    assert route.arrived[0].sender == "b\u00f3b@sender.example"


async def test_a_non_ascii_address_to_a_route_without_smtputf8_fails_for_good(
    route: Route, pool: RelayPool
) -> None:
    with pytest.raises(RouteError) as refused:
        await pool.send(route.address, SENDER, ["\u00e5sa@route.test"], BODY)

    assert refused.value.code == 553
    assert refused.value.permanent
    assert route.arrived == []


# The scripted route: for what aiosmtpd does not do.

_ANSWERS = {
    b"EHLO": b"250-scripted.test\r\n250 PIPELINING\r\n",
    b"MAIL": b"250 ok\r\n",
    b"RCPT": b"250 ok\r\n",
    b"DATA": b"354 go on\r\n",
    b"RSET": b"250 ok\r\n",
    b"QUIT": b"221 bye\r\n",
    b".": b"250 queued\r\n",
}


@dataclass
class Scripted:
    """Answers each command from `answers` (None: never answers); "."
    stands for the end of data."""

    answers: dict[bytes, bytes | None] = field(default_factory=dict)
    lines: list[bytes] = field(default_factory=list)
    connections: int = 0
    _writers: list[asyncio.StreamWriter] = field(default_factory=list)

    def answer(self, verb: bytes) -> bytes | None:
        return self.answers.get(verb, _ANSWERS.get(verb, b"500 what?\r\n"))

    async def serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.connections += 1
        self._writers.append(writer)
        writer.write(b"220 scripted.test\r\n")
        in_data = False
        with suppress(ConnectionError):
            while line := await reader.readline():
                self.lines.append(line)
                if in_data and line != b".\r\n":
                    continue
                verb = b"." if in_data else line[:4].upper()
                in_data = False
                reply = self.answer(verb)
                if reply is None:
                    continue
                in_data = verb == b"DATA" and reply.startswith(b"354")
                writer.write(reply)
                await writer.drain()
        writer.close()


@asynccontextmanager
async def scripted(**answers: bytes | None) -> AsyncIterator[tuple[Scripted, Any]]:
    script = Scripted({k.encode(): v for k, v in answers.items()})
    server = await asyncio.start_server(script.serve, "127.0.0.1", 0)
    try:
        yield script, ("127.0.0.1", server.sockets[0].getsockname()[1])
    finally:
        server.close()
        for writer in script._writers:
            writer.close()


async def test_a_malformed_reply_is_a_route_error_and_drops_the_connection(
    pool: RelayPool,
) -> None:
    async with scripted(RCPT=b"250 ok\r\nthis is not smtp\r\n") as (script, address):
        with pytest.raises(RouteError) as broken:
            await pool.send(address, SENDER, [ALICE, CAROL], BODY)
        assert broken.value.code == 451
        assert "malformed" in broken.value.message
        script.answers[b"RCPT"] = b"250 ok\r\n"
        await pool.send(address, SENDER, [ALICE], BODY)

    assert script.connections == 2


async def test_no_answer_is_a_route_error_and_drops_the_connection() -> None:
    pool = RelayPool("gateway.test", timeout=0.3)
    try:
        async with scripted(**{".": None}) as (script, address):
            with pytest.raises(RouteError) as late:
                await pool.send(address, SENDER, [ALICE], BODY)
            assert late.value.code == 451
            script.answers[b"."] = b"250 queued\r\n"
            results = await pool.send(address, SENDER, [ALICE], BODY)
            assert results[ALICE].delivered
    finally:
        await pool.close()

    assert script.connections == 2


async def test_data_accepted_with_no_recipient_is_ended_with_a_lone_dot(
    pool: RelayPool,
) -> None:
    async with scripted(RCPT=b"550 no\r\n", **{".": b"554 no recipients\r\n"}) as (
        script,
        address,
    ):
        results = await pool.send(address, SENDER, [ALICE], BODY)
        again = await pool.send(address, SENDER, [CAROL], BODY)

    assert results[ALICE].code == again[CAROL].code == 550
    assert script.lines.count(b".\r\n") == 2
    assert not any(b"dots" in line for line in script.lines)
    assert script.connections == 1


async def test_a_route_that_closes_mid_transaction_is_a_route_error(
    pool: RelayPool,
) -> None:
    async with scripted(DATA=b"354 go on\r\n") as (script, address):
        await pool.send(address, SENDER, [ALICE], BODY)
        script.answers[b"RCPT"] = b"421 4.3.2 shutting down\r\n"
        with pytest.raises(RouteError) as closing:
            await pool.send(address, SENDER, [ALICE], BODY)

    assert (closing.value.code, closing.value.message) == (421, "4.3.2 shutting down")
