"""antivirus: the INSTREAM client against a real clamd with the EICAR
signature, and what happens when clamd cannot give a verdict."""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import AsyncIterator, Iterator

import pytest

from services.content.antivirus import (
    CLEAN,
    Clamd,
    ClamdAddress,
    ClamdUnavailable,
    ScanResult,
)
from tests.support.clamd import EICAR, EICAR_SIGNATURE, ClamdServer, require_clamd
from tests.support.natsserver import free_port


def message_with(payload: bytes, name: str = "file.bin") -> bytes:
    encoded = base64.encodebytes(payload).replace(b"\n", b"\r\n")
    head = (
        "From: <sender@example.test>\r\n"
        "To: <rcpt@example.test>\r\n"
        "Subject: scan me\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nSee the attachment.\r\n"
        f'--b\r\nContent-Type: application/octet-stream; name="{name}"\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\n"
    )
    return head.encode() + encoded + b"--b--\r\n"


@pytest.fixture
def clamd(clamd_server: ClamdServer) -> Clamd:
    return Clamd(clamd_server.address, timeout=30)


@pytest.fixture
def small_clamd() -> Iterator[ClamdServer]:
    """A clamd that takes streams of at most 1 MB."""
    server = ClamdServer(require_clamd(), stream_max_length="1M")
    server.start()
    yield server
    server.cleanup()


@pytest.fixture
async def silent_server() -> AsyncIterator[str]:
    """A TCP server that accepts and never answers."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"tcp://127.0.0.1:{port}"
    for writer in held:
        writer.close()
    server.close()
    await server.wait_closed()


async def test_ping_is_answered_by_a_running_clamd(clamd: Clamd) -> None:
    await clamd.ping()


async def test_eicar_in_an_attachment_is_found(clamd: Clamd) -> None:
    result = await clamd.scan(message_with(EICAR, "eicar.com"))

    assert result.infected
    assert result.signature is not None
    assert result.signature.startswith(EICAR_SIGNATURE)


async def test_a_clean_message_passes(clamd: Clamd) -> None:
    result = await clamd.scan(message_with(b"%PDF-1.4 nothing to see\n"))

    assert result == CLEAN
    assert not result.infected


async def test_a_memoryview_is_scanned_without_a_copy(clamd: Clamd) -> None:
    result = await clamd.scan(memoryview(message_with(EICAR)))

    assert result.infected


async def test_a_25_mb_message_is_scanned(clamd: Clamd) -> None:
    payload = os.urandom(18 * 1024 * 1024) + EICAR
    message = message_with(payload)
    assert 25_000_000 < len(message) <= 26_214_400  # the default size limit

    result = await clamd.scan(message)

    assert result.infected


async def test_scans_run_concurrently_on_one_client(clamd: Clamd) -> None:
    messages = [message_with(EICAR), message_with(b"clean")] * 4

    results = await asyncio.gather(*(clamd.scan(m) for m in messages))

    assert [r.infected for r in results] == [True, False] * 4


async def test_clamd_is_reached_over_a_unix_socket(clamd_server: ClamdServer) -> None:
    clamd = Clamd(clamd_server.unix_address, timeout=30)

    await clamd.ping()
    assert (await clamd.scan(message_with(EICAR))).infected


async def test_a_stopped_clamd_is_unavailable() -> None:
    server = ClamdServer(require_clamd())
    server.start()
    clamd = Clamd(server.address, timeout=5)
    await clamd.ping()
    server.cleanup()

    with pytest.raises(ClamdUnavailable):
        await clamd.scan(message_with(b"clean"))
    with pytest.raises(ClamdUnavailable):
        await clamd.ping()


async def test_nothing_listening_is_unavailable() -> None:
    clamd = Clamd(f"tcp://127.0.0.1:{free_port()}", timeout=5)

    with pytest.raises(ClamdUnavailable):
        await clamd.scan(message_with(b"clean"))


async def test_a_stream_over_clamds_size_limit_is_unavailable(
    small_clamd: ClamdServer,
) -> None:
    clamd = Clamd(small_clamd.address, timeout=30)

    with pytest.raises(ClamdUnavailable, match="size limit"):
        await clamd.scan(message_with(os.urandom(3 * 1024 * 1024)))


async def test_a_clamd_that_does_not_answer_times_out(silent_server: str) -> None:
    clamd = Clamd(silent_server, timeout=0.3)

    with pytest.raises(ClamdUnavailable, match="timed out"):
        await clamd.scan(message_with(b"clean"))


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("tcp://127.0.0.1:3310", ClamdAddress(host="127.0.0.1", port=3310)),
        ("tcp://[::1]:3311", ClamdAddress(host="::1", port=3311)),
        ("tcp://clamd", ClamdAddress(host="clamd", port=3310)),
        ("unix:///run/clamav/clamd.ctl", ClamdAddress(path="/run/clamav/clamd.ctl")),
    ],
    ids=["ipv4", "ipv6", "default-port", "unix"],
)
def test_clamd_addresses_are_read_as_the_spec_writes_them(
    address: str, expected: ClamdAddress
) -> None:
    assert ClamdAddress.parse(address) == expected


@pytest.mark.parametrize(
    "address", ["http://clamd:3310", "clamd:3310", "unix://"], ids=str
)
def test_an_address_of_another_form_is_refused(address: str) -> None:
    with pytest.raises(ValueError):
        ClamdAddress.parse(address)


def test_a_scan_result_without_a_signature_is_clean() -> None:
    assert not ScanResult().infected
    assert ScanResult("Win.Test.EICAR_HDB-1").infected
