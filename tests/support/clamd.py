"""A real clamd for tests: the Debian clamav-daemon binary, on a free
loopback port, with one signature (EICAR) that the helper writes itself.

No signature download is possible in the test environment, so the database
directory holds a single `.ndb` file and freshclam never runs. clamd loads one
signature in well under a second.

When the binary is missing, `require_clamd` skips the test with a message
naming the package, except under CI (the `CI` variable set), where a missing
scanner is a broken environment and the test fails instead.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.support.natsserver import free_port

# The EICAR anti-virus test file (https://www.eicar.org/download-anti-malware-testfile/).
EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
EICAR_SIGNATURE = "Perimeter.Test.EICAR"

_CANDIDATES = ("/usr/sbin/clamd", "/usr/local/sbin/clamd")


def clamd_binary() -> str | None:
    """The clamd executable, or None when clamav-daemon is not installed."""
    found = shutil.which("clamd")
    if found is not None:
        return found
    return next((path for path in _CANDIDATES if os.access(path, os.X_OK)), None)


def require_clamd() -> str:
    """The clamd executable; skip the test without it, or fail under CI."""
    binary = clamd_binary()
    if binary is not None:
        return binary
    message = "clamav-daemon is not installed (apt-get install clamav-daemon)"
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _signature_line() -> str:
    # ClamAV extended signature format (.ndb): Name:TargetType:Offset:HexSig;
    # target type 0 is any file, offset * is anywhere.
    return f"{EICAR_SIGNATURE}:0:*:{EICAR.hex()}\n"


def _config(port: int, directory: Path, stream_max_length: str) -> str:
    lines = [
        "Foreground yes",
        f"TCPSocket {port}",
        "TCPAddr 127.0.0.1",
        f"LocalSocket {directory / 'clamd.sock'}",
        f"DatabaseDirectory {directory}",
        f"TemporaryDirectory {directory}",
        f"LogFile {directory / 'clamd.log'}",
        "LogTime yes",
        f"StreamMaxLength {stream_max_length}",
        "MaxScanSize 100M",
        "MaxFileSize 40M",
        "ScanMail yes",
        "ScanArchive yes",
        "SelfCheck 0",
        "Bytecode no",
    ]
    return "\n".join(lines) + "\n"


class ClamdServer:
    """One clamd process on 127.0.0.1 and on a unix socket; `address` and
    `unix_address` are what PERIMETER_CLAMD takes. The default stream limit
    takes a 30 MB message."""

    def __init__(self, binary: str, stream_max_length: str = "40M") -> None:
        self.binary = binary
        self.stream_max_length = stream_max_length
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="perimeter-clamd-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    @property
    def unix_address(self) -> str:
        return f"unix://{self.directory / 'clamd.sock'}"

    def start(self) -> None:
        config = self.directory / "clamd.conf"
        config.write_text(_config(self.port, self.directory, self.stream_max_length))
        (self.directory / "perimeter.ndb").write_text(_signature_line())
        self.process = subprocess.Popen(
            [self.binary, "--config-file", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._wait_ready()

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self._pong():
                return
            if self.process is not None and self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"clamd did not answer PING: {self._log_tail()}")

    def _pong(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), 0.5) as sock:
                sock.sendall(b"zPING\0")
                return sock.recv(16) == b"PONG\0"
        except OSError:
            return False

    def _log_tail(self) -> str:
        log = self.directory / "clamd.log"
        return log.read_text()[-2000:] if log.exists() else "(no log)"
