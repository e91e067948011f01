"""Access tokens for Graph and Exchange Online, from msal, without blocking the event loop.

msal is synchronous (it uses requests), so every call into it, including building the client
application (which fetches the tenant's OpenID metadata), runs in a worker thread. Tokens are kept
until five minutes before they expire; one lock per scope makes concurrent callers share a single
refresh instead of stampeding the token endpoint.

Credentials, in order of preference: a certificate (PEM with its private key, or PFX), a managed
identity, or a client secret. Certificates and managed identities have nothing that expires every
few months, which is why the README recommends them.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msal
import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from syncwarden.connectors.clouds import ResolvedEndpoints
from syncwarden.connectors.errors import CredentialError, TransientError
from syncwarden.connectors.tls import TrustingSession, verify_for_requests
from syncwarden.core.logging import get_logger
from syncwarden.core.settings import GraphSettings

RENEW_BEFORE_SECONDS = 300.0
log = get_logger(__name__)


@dataclass(frozen=True)
class CertificateCredential:
    private_key_pem: str
    thumbprint_sha1: str
    certificate_pem: str

    def for_msal(self) -> dict[str, str]:
        return {"private_key": self.private_key_pem, "thumbprint": self.thumbprint_sha1}


def load_certificate(path: Path, password: str | None) -> CertificateCredential:
    """Read a PFX/P12 file, or a PEM file holding both the certificate and its private key."""
    data = path.read_bytes()
    secret = password.encode() if password else None
    try:
        if path.suffix.lower() in (".pfx", ".p12"):
            key, cert, _ = pkcs12.load_key_and_certificates(data, secret)
        else:
            key = serialization.load_pem_private_key(data, secret)
            cert = x509.load_pem_x509_certificate(data)
    except (ValueError, TypeError) as error:
        raise CredentialError(
            f"cannot read the certificate {path}: it must be a PFX, or a PEM holding the "
            f"certificate and its private key (with the right password) ({type(error).__name__})"
        ) from None
    if key is None or cert is None:
        raise CredentialError(f"the certificate file {path} lacks its certificate or private key")
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    der = cert.public_bytes(serialization.Encoding.DER)
    return CertificateCredential(
        private_key_pem=key_pem,
        thumbprint_sha1=hashlib.sha1(der, usedforsecurity=False).hexdigest().upper(),
        certificate_pem=cert.public_bytes(serialization.Encoding.PEM).decode(),
    )


@dataclass
class _Cached:
    token: str
    expires_at: float


class MsalTokenProvider:
    """A token provider on msal: a confidential client app or a managed identity."""

    def __init__(self, graph: GraphSettings, endpoints: ResolvedEndpoints) -> None:
        self._graph = graph
        self._endpoints = endpoints
        self._cache: dict[str, _Cached] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._app: Any = None
        self._app_lock = threading.Lock()

    async def get_token(self, scope: str) -> str:
        cached = self._cache.get(scope)
        if cached and cached.expires_at - RENEW_BEFORE_SECONDS > time.monotonic():
            return cached.token
        lock = self._locks.setdefault(scope, asyncio.Lock())
        async with lock:
            cached = self._cache.get(scope)
            if cached and cached.expires_at - RENEW_BEFORE_SECONDS > time.monotonic():
                return cached.token
            token, lifetime = await asyncio.to_thread(self._acquire, scope)
            self._cache[scope] = _Cached(token, time.monotonic() + lifetime)
            log.info("token.acquired", scope=scope, expires_in=int(lifetime))
            return token

    def invalidate(self, scope: str) -> None:
        """Drop the token for ``scope`` here *and* in msal's own cache.

        msal would otherwise hand back the same rejected token until it expires, so a permission
        granted after a failure would not be seen for up to an hour.
        """
        self._cache.pop(scope, None)
        with self._app_lock:
            app = self._app
        cache = getattr(app, "token_cache", None) or getattr(app, "_token_cache", None)
        if cache is None:
            return
        resource = scope.removesuffix("/.default")
        for item in list(cache.search(msal.TokenCache.CredentialType.ACCESS_TOKEN)):
            target = str(item.get("target", ""))
            if scope in target.split() or target == resource:
                cache.remove_at(item)

    def _acquire(self, scope: str) -> tuple[str, float]:
        """Runs in a worker thread."""
        try:
            app = self._application()
            if self._graph.managed_identity:
                result = app.acquire_token_for_client(resource=scope.removesuffix("/.default"))
            else:
                result = app.acquire_token_for_client(scopes=[scope])
        except (requests.RequestException, OSError) as error:
            raise TransientError(
                f"the token endpoint could not be reached ({type(error).__name__})"
            ) from None
        except ValueError as error:
            # msal raises ValueError when the authority's metadata cannot be fetched or is wrong.
            raise CredentialError(f"token request failed: {error}") from None
        if not isinstance(result, dict) or "access_token" not in result:
            raise _credential_error(result if isinstance(result, dict) else {})
        return result["access_token"], float(result.get("expires_in", 3600))

    def _application(self) -> Any:
        with self._app_lock:
            if self._app is None:
                self._app = self._build_application()
            return self._app

    def _build_application(self) -> Any:
        graph = self._graph
        session = TrustingSession(verify_for_requests(graph.ca_bundle), graph.timeout_seconds)
        if graph.managed_identity:
            identity: Any = (
                msal.UserAssignedManagedIdentity(client_id=graph.client_id)
                if graph.client_id
                else msal.SystemAssignedManagedIdentity()
            )
            return msal.ManagedIdentityClient(identity, http_client=session)
        credential: Any
        if graph.certificate_path is not None:
            password = (
                graph.certificate_password.get_secret_value()
                if graph.certificate_password
                else None
            )
            credential = load_certificate(graph.certificate_path, password).for_msal()
        elif graph.client_secret is not None:
            credential = graph.client_secret.get_secret_value()
        else:
            raise CredentialError(
                "no Graph credential is configured: set a certificate, a client secret "
                "or a managed identity"
            )
        official = self._endpoints.is_microsoft_login
        return msal.ConfidentialClientApplication(
            graph.client_id,
            authority=self._endpoints.authority,
            client_credential=credential,
            validate_authority=official,
            instance_discovery=official,
            http_client=session,
        )


_CREDENTIAL_HINTS = {
    7000215: "the client secret is wrong: use the secret's value (not its id) from the app",
    7000222: "the client secret has expired: create a new one, set SYNCWARDEN_GRAPH__CLIENT_SECRET",
    700016: "no app with this client id in the tenant: check GRAPH__CLIENT_ID and GRAPH__TENANT_ID",
    700027: "the certificate is not registered on the app, or its signature is invalid",
    90002: "the tenant does not exist: check SYNCWARDEN_GRAPH__TENANT_ID",
    1002012: "the requested scope is invalid",
    70011: "the requested scope is invalid",
}


def _credential_error(result: dict[str, Any]) -> CredentialError:
    codes = [code for code in result.get("error_codes", []) if isinstance(code, int)]
    hint = next((_CREDENTIAL_HINTS[c] for c in codes if c in _CREDENTIAL_HINTS), None)
    error = result.get("error", "unknown_error")
    description = str(result.get("error_description", "")).splitlines()[0:1]
    summary = f"token request refused ({error}{': ' + description[0] if description else ''})"
    return CredentialError(f"{hint}; {summary}" if hint else summary, code=str(error))


def granted_roles(access_token: str) -> frozenset[str]:
    """The app roles (application permissions) an access token carries, read without verifying.

    We are the token's holder, not its audience: reading our own claims tells us what the tenant
    has consented to, which is all the doctor needs. The resource verifies the signature.
    """
    try:
        payload = access_token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return frozenset()
    roles = claims.get("roles") if isinstance(claims, dict) else None
    return frozenset(str(role) for role in roles) if isinstance(roles, list) else frozenset()
