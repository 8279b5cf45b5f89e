"""PROXY protocol v1 and v2, believed only from PERIMETER_TRUSTED_PROXIES."""

from __future__ import annotations

import asyncio
import socket
import struct

from shared import replies
from shared.rules import Rule
from tests.support.operator import Operator
from tests.support.stack import PROXY_SOURCE, Product

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def proxy_v2(client: str, port: int) -> bytes:
    """A PROXY v2 header for a TCP over IPv4 connection (PROXY command)."""
    addresses = socket.inet_aton(client) + socket.inet_aton("127.0.0.1")
    ports = struct.pack("!HH", 40000, port)
    return V2_SIGNATURE + b"\x21\x11" + struct.pack("!H", 12) + addresses + ports


async def greeting(gateway: Product, header: bytes, source: str) -> str:
    host, port = gateway.smtp
    reader, writer = await asyncio.open_connection(host, port, local_addr=(source, 0))
    writer.write(header)
    line = (await asyncio.wait_for(reader.readline(), 10)).decode().strip()
    writer.close()
    return line


async def test_a_proxy_v2_header_from_the_trusted_proxy_names_the_client(
    gateway: Product, operator: Operator
) -> None:
    await operator.add("banned_ips", "192.0.2.201")
    _, port = gateway.smtp

    line = await greeting(gateway, proxy_v2("192.0.2.201", port), PROXY_SOURCE)

    assert line == replies.RULE_REPLIES[Rule.BANNED_IP].render(ip="192.0.2.201")


async def test_a_proxy_header_from_an_untrusted_peer_is_not_believed(
    gateway: Product, operator: Operator
) -> None:
    await operator.add("banned_ips", "192.0.2.202")
    _, port = gateway.smtp
    header = f"PROXY TCP4 192.0.2.202 127.0.0.1 40000 {port}\r\n".encode()

    line = await greeting(gateway, header, "127.0.0.3")

    assert line.startswith("220 ")
