"""aiosmtpd's SMTP with the stages aiosmtpd has no hook for.

aiosmtpd has no connect hook, reads DATA a line at a time, and answers a
few cases with texts of its own; this subclass adds the connect stage
(after a PROXY header from a trusted proxy), reads DATA in bulk, and gives
the catalog's replies, so `Gateway` sees every stage of the session.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
from ipaddress import ip_address
from typing import TYPE_CHECKING, Any

from aiosmtpd.proxy_protocol import get_proxy
from aiosmtpd.smtp import SMTP, Session, syntax

from services.ingress import ids
from services.ingress.data import read_data
from shared import replies
from shared.logs import session_id
from shared.messages import Check
from shared.messages import Session as BusSession
from shared.rules import Stage

if TYPE_CHECKING:
    from services.ingress.gateway import Gateway, Transaction

log = logging.getLogger(__name__)

_PROXY_TIMEOUT = 10.0
# RFC 5321 §4.1.2 Path in its plain form: <dot-atom@domain>, ASCII, no
# source route, no quoted local part, no address literal; what follows is
# the parameters. Anything else goes to aiosmtpd's full parse.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_PLAIN_PATH = re.compile(
    rf"\s*<({_ATEXT}(?:\.{_ATEXT})*)@({_LABEL}(?:\.{_LABEL})*)>\s*(.*)", re.DOTALL
)


def _b64(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def plain_path(arg: str) -> tuple[str, str] | None:
    """(address, parameters) of a MAIL/RCPT argument in the plain form;
    None for any other form."""
    found = _PLAIN_PATH.fullmatch(arg)
    if found is None:
        return None
    local, domain, rest = found.groups()
    return f"{local}@{domain}", rest


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


class GatewaySession(Session):
    """aiosmtpd's session with what the stages need to carry."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.bus = BusSession(id=ids.session_id(), client="")
        self.checks: list[tuple[Stage, Check]] = []
        self.results: dict[str, str] = {}
        self.transaction: Transaction | None = None


class GatewaySMTP(SMTP):
    """One SMTP connection to the gateway."""

    def __init__(self, gateway: Gateway, **kwargs: Any) -> None:
        super().__init__(gateway, **kwargs)
        self.gateway = gateway
        self._close_after_reply = False

    def __dir__(self) -> list[str]:
        # aiosmtpd lists an instance's attributes at every connection to
        # find its commands and AUTH mechanisms; listing only those saves a
        # third of a millisecond of CPU per connection.
        return _PROTOCOL_NAMES

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """aiosmtpd's address parse, with a fast path for the plain path
        nearly all mail uses: for every MAIL and RCPT aiosmtpd defines a
        typing Protocol class and builds a full RFC 5322 token tree."""
        plain = plain_path(arg)
        if plain is None:
            return super()._getaddr(arg)  # type: ignore[no-any-return]
        address, rest = plain
        local = address.rpartition("@")[0]
        if self.local_part_limit and len(local) > self.local_part_limit:
            return None, None
        return address, rest

    def _create_session(self) -> GatewaySession:
        fresh = GatewaySession(self.loop)
        if isinstance(self.session, GatewaySession):
            # STARTTLS starts the session over (RFC 3207 §4.2), but it is
            # still the same client on the same connection.
            before = self.session.bus
            fresh.bus = BusSession(id=before.id, client=before.client)
            fresh.checks = self.session.checks
        return fresh

    def gateway_session(self) -> GatewaySession:
        # A method, not a property: aiosmtpd's __init__ reads every
        # attribute of the instance before a session exists.
        assert isinstance(self.session, GatewaySession)
        return self.session

    async def _handle_client(self) -> None:
        session = self.gateway_session()
        session_id.set(session.bus.id)
        self.gateway.sessions.add(self)
        try:
            session.bus.client = await self._client_address()
            refusal = await self.gateway.connect(self, session)
            if refusal is not None:
                await self.push(refusal)
                self._close()
                return
            await super()._handle_client()
        finally:
            self.gateway.sessions.discard(self)
            await self.gateway.session_ended(session)

    async def _client_address(self) -> str:
        """The peer's address, or the one a trusted proxy vouches for."""
        peer_address = self.gateway_session().peer
        assert isinstance(peer_address, tuple)
        peer = str(ip_address(peer_address[0]))
        if not self.gateway.trusts_proxy(peer):
            return peer
        async with asyncio.timeout(_PROXY_TIMEOUT):
            proxied = await get_proxy(self._reader)
        if not proxied.valid or proxied.src_addr is None:
            log.warning("invalid PROXY header from %s", peer)
            raise ConnectionAbortedError("invalid PROXY header")
        self.gateway_session().proxy_data = proxied
        return str(ip_address(proxied.src_addr))

    def close_after_reply(self) -> None:
        self._close_after_reply = True

    async def push(self, status: str) -> None:  # type: ignore[override]
        await super().push(status)
        if self._close_after_reply:
            self._close()

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    async def check_helo_needed(self, helo: str = "HELO") -> bool:
        # helo_required is a rule with a mode (SPEC §3), decided at MAIL by
        # the reputation service, not a fixed protocol error.
        return False

    def _timeout_cb(self) -> None:
        # RFC 5321 §4.5.3.2: say why before closing.
        if isinstance(self.transport, asyncio.WriteTransport):
            self.transport.write(replies.TIMEOUT.render().encode() + b"\r\n")
        super()._timeout_cb()

    def shut_down(self) -> None:
        """SPEC §4: every open session hears 421 when the gateway stops."""
        transport = self.transport
        if isinstance(transport, asyncio.WriteTransport) and not transport.is_closing():
            transport.write(replies.SHUTTING_DOWN.render().encode() + b"\r\n")
            transport.close()

    @syntax("EHLO hostname")
    async def smtp_EHLO(self, hostname: str | None) -> None:
        # Ours rather than aiosmtpd's with a handle_EHLO hook: aiosmtpd
        # inspects that hook's signature at every connection.
        if not hostname:
            await self.push(replies.SYNTAX_ERROR.render())
            return
        self._set_rset_state()
        session = self.gateway_session()
        session.extended_smtp = True
        # RFC 1870 and RFC 6531 lengthen MAIL by SIZE= and SMTPUTF8.
        self.command_size_limits["MAIL"] = self.command_size_limit + 36
        lines = await self.gateway.ehlo(self, session, hostname)
        await self.push("\r\n".join(lines))

    @syntax("AUTH <mechanism>")
    async def smtp_AUTH(self, arg: str | None) -> None:
        """RFC 4954 with PLAIN and LOGIN; the verdict comes from reputation."""
        session = self.gateway_session()
        refusal = self._auth_refusal(arg)
        if refusal is not None:
            await self.push(refusal.render())
            return
        assert arg is not None
        mechanism, _, initial = arg.partition(" ")
        credentials = await self._sasl(mechanism.upper(), initial.strip())
        if credentials is None:
            return
        status = await self.gateway.authenticate(self, session, *credentials)
        await self.push(status)

    def _auth_refusal(self, arg: str | None) -> replies.Reply | None:
        if not self.gateway_session().extended_smtp:
            return replies.BAD_SEQUENCE
        if self.gateway.settings.auth_require_tls and self._tls_protocol is None:
            return replies.AUTH_NEEDS_TLS
        if not arg:
            return replies.SYNTAX_ERROR
        return None

    async def _sasl(self, mechanism: str, initial: str) -> tuple[str, str] | None:
        """The user and password, or None once a reply has been sent."""
        if mechanism == "PLAIN":
            blob = _b64(initial) if initial else await self._challenge("")
            parts = blob.split(b"\0") if blob is not None else []
            if len(parts) != 3:
                await self.push(replies.AUTH_MALFORMED.render())
                return None
            return _text(parts[1]), _text(parts[2])
        if mechanism == "LOGIN":
            user = _b64(initial) if initial else await self._challenge("Username:")
            if user is None:
                await self.push(replies.AUTH_MALFORMED.render())
                return None
            password = await self._challenge("Password:")
            if password is None:
                await self.push(replies.AUTH_MALFORMED.render())
                return None
            return _text(user), _text(password)
        await self.push(replies.AUTH_UNKNOWN_MECHANISM.render())
        return None

    async def _challenge(self, prompt: str) -> bytes | None:
        """One 334 challenge; None when the client aborts or sends junk."""
        await self.push(f"334 {base64.b64encode(prompt.encode()).decode()}")
        line = (await self._reader.readline()).strip()
        if line == b"*":
            return None
        return _b64(line.decode("ascii", "replace"))

    @syntax("DATA")
    async def smtp_DATA(self, arg: str | None) -> None:
        assert self.envelope is not None
        if not self.envelope.mail_from:
            await self.push(replies.NEED_MAIL.render())
            return
        if not self.envelope.rcpt_tos:
            await self.push(replies.NEED_RCPT.render())
            return
        if arg:
            await self.push(replies.SYNTAX_ERROR.render())
            return
        await self.push(replies.START_DATA.render())
        settings = self.gateway.settings
        self._reset_timeout(settings.data_timeout)
        data = await read_data(self._reader, settings.max_message_size)
        status = await self.gateway.handle_data(
            self, self.gateway_session(), self.envelope, data
        )
        self._set_post_data_state()
        await self.push(status)


_PROTOCOL_NAMES = sorted(
    name for name in dir(GatewaySMTP) if name.startswith(("smtp_", "auth_"))
)
