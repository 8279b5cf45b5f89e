"""The TLS context for STARTTLS: the operator's pair, or a self-signed one
made at start (SPEC §7)."""

from __future__ import annotations

import datetime
import logging
import shutil
import ssl
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

log = logging.getLogger(__name__)


def server_context(cert: str, key: str, hostname: str) -> ssl.SSLContext:
    """A server context from the given files, or from a fresh self-signed
    pair when none are given."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    if cert and key:
        context.load_cert_chain(cert, key)
        return context
    log.warning("no PERIMETER_TLS_CERT/KEY: using a self-signed pair")
    folder = tempfile.mkdtemp(prefix="perimeter-tls-")
    try:
        # ssl loads a pair only from files; they live as long as the load.
        context.load_cert_chain(*_self_signed(hostname, Path(folder)))
    finally:
        shutil.rmtree(folder)
    return context


def _self_signed(hostname: str, folder: Path) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return str(cert_path), str(key_path)
