"""RSA signing keys published as JWKS, shared by the Entra and Bot Framework fronts."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import uuid
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from syncwarden.sandbox.ca import new_rsa_key, self_signed_certificate


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _int_b64(value: int) -> str:
    return b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))


@dataclass
class SigningKey:
    name: str
    key: rsa.RSAPrivateKey = field(default_factory=new_rsa_key)
    cert: x509.Certificate | None = None

    def __post_init__(self) -> None:
        if self.cert is None:
            self.cert = self_signed_certificate(self.key, self.name)

    @property
    def kid(self) -> str:
        return self.x5t

    @property
    def x5t(self) -> str:
        assert self.cert is not None
        return b64url(self.cert.fingerprint(hashes_sha1()))

    def jwk(self, **extra: Any) -> dict[str, Any]:
        assert self.cert is not None
        numbers = self.key.public_key().public_numbers()
        der = self.cert.public_bytes(serialization.Encoding.DER)
        return {
            "kty": "RSA",
            "use": "sig",
            "kid": self.kid,
            "x5t": self.x5t,
            "n": _int_b64(numbers.n),
            "e": _int_b64(numbers.e),
            "x5c": [base64.b64encode(der).decode()],
            **extra,
        }

    def sign(self, claims: dict[str, Any], headers: dict[str, Any] | None = None) -> str:
        header = {"typ": "JWT", "kid": self.kid, "x5t": self.x5t, **(headers or {})}
        return jwt.encode(claims, self.key, algorithm="RS256", headers=header)

    def public_key(self) -> rsa.RSAPublicKey:
        return self.key.public_key()


def hashes_sha1() -> hashes.HashAlgorithm:
    return hashes.SHA1()  # noqa: S303 - x5t is defined as the SHA-1 thumbprint


def thumbprints(cert: x509.Certificate) -> tuple[bytes, bytes]:
    der = cert.public_bytes(serialization.Encoding.DER)
    return hashlib.sha1(der).digest(), hashlib.sha256(der).digest()  # noqa: S324


def time_claims(now: dt.datetime, lifetime: dt.timedelta) -> dict[str, int]:
    stamp = int(now.timestamp())
    return {"iat": stamp, "nbf": stamp, "exp": int((now + lifetime).timestamp())}


def guid() -> str:
    return str(uuid.uuid4())
