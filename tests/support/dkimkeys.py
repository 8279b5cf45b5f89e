"""DKIM key pairs made by the tests: the private key signs, the public
key is published as a TXT record in the loopback DNS server."""

from __future__ import annotations

import base64

import dkim as dkimpy
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


class KeyPair:
    def __init__(self, key: rsa.RSAPrivateKey) -> None:
        self.pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        spki = key.public_key().public_bytes(
            serialization.Encoding.DER,
            serialization.PublicFormat.SubjectPublicKeyInfo,
        )
        self.public = base64.b64encode(spki).decode()

    def sign(
        self,
        message: bytes,
        selector: str,
        domain: str,
        headers: list[bytes],
        algorithm: bytes = b"rsa-sha256",
        canonicalize: tuple[bytes, bytes] = (b"relaxed", b"simple"),
        length: bool = False,
    ) -> bytes:
        """The message with a DKIM-Signature header in front; `length`
        adds an l= tag covering the body as it is."""
        header = dkimpy.sign(
            message,
            selector.encode(),
            domain.encode(),
            self.pem,
            include_headers=headers,
            signature_algorithm=algorithm,
            canonicalize=canonicalize,
            length=length,
        )
        return header + message

    def record(self, flags: str = "") -> str:
        """The key's TXT record; `flags` "y" marks a key in testing mode."""
        testing = f"t={flags}; " if flags else ""
        return f"v=DKIM1; k=rsa; {testing}p={self.public}"
