"""Entra token endpoint driven by real msal, over HTTPS with the sandbox CA."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import jwt
import msal
from cryptography.hazmat.primitives import hashes, serialization

from syncwarden.sandbox.ca import new_rsa_key, self_signed_certificate
from syncwarden.sandbox.server import SandboxTenant

GRAPH_SCOPE = ["https://graph.microsoft.com/.default"]


def claims_of(token: str) -> dict[str, Any]:
    decoded: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return decoded


async def acquire(
    tenant: SandboxTenant, credential: Any, scopes: list[str], client_id: str | None = None
) -> dict[str, Any]:
    """msal does blocking HTTP (discovery in its constructor), so all of it runs off the loop."""

    def blocking() -> dict[str, Any]:
        app = msal.ConfidentialClientApplication(
            client_id or tenant.seed.app_ids["Syncwarden"],
            authority=tenant.authority(),
            client_credential=credential,
            validate_authority=False,
            instance_discovery=False,
            verify=str(tenant.ca_path),
        )
        result: dict[str, Any] = app.acquire_token_for_client(scopes=scopes)
        return result

    return await asyncio.to_thread(blocking)


async def test_msal_client_secret_gets_graph_token_with_granted_roles(
    tenant: SandboxTenant,
) -> None:
    result = await acquire(tenant, tenant.seed.secret_for("Syncwarden"), GRAPH_SCOPE)
    assert result["token_type"] == "Bearer"
    claims = claims_of(result["access_token"])
    assert claims["aud"] == "https://graph.microsoft.com"
    assert claims["tid"] == tenant.tenant_id
    assert claims["appid"] == claims["azp"] == tenant.seed.app_ids["Syncwarden"]
    assert set(claims["roles"]) == {
        "User.Read.All",
        "GroupMember.ReadWrite.All",
        "Application.Read.All",
        "Calendars.ReadWrite",
        "TeamsAppInstallation.ReadWriteForUser.All",
        "AppCatalog.Read.All",
    }
    assert claims["exp"] - claims["iat"] == 3600


async def test_exchange_scope_gets_exchange_roles_only(tenant: SandboxTenant) -> None:
    result = await acquire(
        tenant, tenant.seed.secret_for("Syncwarden"), ["https://outlook.office365.com/.default"]
    )
    claims = claims_of(result["access_token"])
    assert claims["aud"] == "https://outlook.office365.com"
    assert claims["roles"] == ["Exchange.ManageAsApp"]


async def test_msal_certificate_credential(tenant: SandboxTenant) -> None:
    key = new_rsa_key()
    cert = self_signed_certificate(key, "syncwarden-test")
    tenant.register_certificate(tenant.seed.app_ids["Syncwarden"], cert)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    sha1 = cert.fingerprint(hashes.SHA1()).hex()  # noqa: S303
    result = await acquire(tenant, {"private_key": pem, "thumbprint": sha1}, GRAPH_SCOPE)
    assert "access_token" in result, result
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    result256 = await acquire(
        tenant, {"private_key": pem, "public_certificate": cert_pem}, GRAPH_SCOPE
    )
    assert "access_token" in result256, result256


async def test_unregistered_certificate_is_rejected(tenant: SandboxTenant) -> None:
    key = new_rsa_key()
    cert = self_signed_certificate(key, "stranger")
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    thumbprint = cert.fingerprint(hashes.SHA1()).hex()  # noqa: S303
    result = await acquire(tenant, {"private_key": pem, "thumbprint": thumbprint}, GRAPH_SCOPE)
    assert result["error"] == "invalid_client"
    assert 700027 in result["error_codes"]


async def test_wrong_secret_is_aadsts7000215(tenant: SandboxTenant) -> None:
    result = await acquire(tenant, "not-the-secret", GRAPH_SCOPE)
    assert result["error"] == "invalid_client"
    assert result["error_codes"] == [7000215]
    assert result["error_description"].startswith("AADSTS7000215: Invalid client secret provided.")
    for name in ("timestamp", "trace_id", "correlation_id"):
        assert result[name]


async def test_expired_secret_unknown_app_and_bad_scope(
    tenant: SandboxTenant, raw: httpx.AsyncClient
) -> None:
    expired = await acquire(
        tenant,
        "sandbox-only~expired-kiosk-secret",
        GRAPH_SCOPE,
        tenant.seed.app_ids["Library Kiosk Sync"],
    )
    assert expired["error_codes"] == [7000222]
    unknown = await acquire(tenant, "x", GRAPH_SCOPE, "00000000-0000-4000-8000-000000000001")
    assert unknown["error"] == "unauthorized_client"
    assert unknown["error_codes"] == [700016]
    url = f"/{tenant.tenant_id}/oauth2/v2.0/token"
    form = {
        "grant_type": "client_credentials",
        "client_id": tenant.seed.app_ids["Syncwarden"],
        "client_secret": tenant.seed.secret_for("Syncwarden"),
        "scope": "https://graph.microsoft.com/User.Read.All",
    }
    response = await raw.post(url, data=form)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_scope"
    assert response.json()["error_codes"] == [1002012]
    wrong_secret = await raw.post(
        url, data={**form, "scope": "https://graph.microsoft.com/.default", "client_secret": "x"}
    )
    assert wrong_secret.status_code == 401


async def test_discovery_documents(tenant: SandboxTenant, raw: httpx.AsyncClient) -> None:
    config = (await raw.get(f"/{tenant.tenant_id}/v2.0/.well-known/openid-configuration")).json()
    assert config["token_endpoint"] == f"{tenant.base_url}/{tenant.tenant_id}/oauth2/v2.0/token"
    assert config["issuer"] == f"{tenant.base_url}/{tenant.tenant_id}/v2.0"
    keys = (await raw.get(f"/{tenant.tenant_id}/discovery/v2.0/keys")).json()["keys"]
    token = tenant.mint_access_token(tenant.seed.app_ids["Syncwarden"])
    signer = jwt.PyJWK(keys[0])
    assert (
        jwt.decode(token, signer.key, algorithms=["RS256"], audience="https://graph.microsoft.com")[
            "tid"
        ]
        == tenant.tenant_id
    )
    unknown = await raw.get("/not-a-tenant/v2.0/.well-known/openid-configuration")
    assert unknown.status_code == 400
