"""Entra ID tokens and Bot Framework channel tokens: what Microsoft does, with where it says so.

Sources: Microsoft's identity-platform docs (learn.microsoft.com/entra/identity-platform,
repository MicrosoftDocs/entra-docs: v2-oauth2-client-creds-grant-flow, certificate-credentials,
reference-error-codes, v2-protocols-oidc, access-token-claims-reference) and the Bot Framework
authentication page (learn.microsoft.com/azure/bot-service/rest-api/
bot-framework-rest-connector-authentication, repository MicrosoftDocs/bot-docs).
"""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa

from syncwarden.sandbox.ca import new_rsa_key, self_signed_certificate
from syncwarden.sandbox.server import SandboxTenant

GRAPH_DEFAULT = "https://graph.microsoft.com/.default"
BOT_ISSUER = "https://api.botframework.com"


def token_url(tenant: SandboxTenant, tenant_name: str | None = None) -> str:
    return f"/{tenant_name or tenant.tenant_id}/oauth2/v2.0/token"


def secret_form(tenant: SandboxTenant, **overrides: str) -> dict[str, str]:
    form = {
        "grant_type": "client_credentials",
        "client_id": tenant.seed.app_ids["Syncwarden"],
        "client_secret": tenant.seed.secret_for("Syncwarden"),
        "scope": GRAPH_DEFAULT,
    }
    form.update(overrides)
    return {k: v for k, v in form.items() if v}


def unverified(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


async def refused(raw: httpx.AsyncClient, tenant: SandboxTenant, **form: str) -> dict[str, Any]:
    response = await raw.post(token_url(tenant), data=secret_form(tenant, **form))
    body: dict[str, Any] = response.json()
    body["status"] = response.status_code
    return body


# ---------------------------------------------------------------- the token endpoint


async def test_client_credentials_answer_is_a_bearer_token_with_its_lifetime(
    tenant: SandboxTenant, raw: httpx.AsyncClient
) -> None:
    """A client-credentials request with a secret answers 200 ``{"token_type": "Bearer",
    "expires_in": <seconds>, "access_token": …}``.

    Source: https://learn.microsoft.com/entra/identity-platform/v2-oauth2-client-creds-grant-flow
    ("Successful response").
    """
    response = await raw.post(token_url(tenant), data=secret_form(tenant))
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert isinstance(body["expires_in"], int) and 0 < body["expires_in"] <= 3600
    assert body["access_token"].count(".") == 2


async def test_a_secret_may_also_come_in_basic_authorization(
    tenant: SandboxTenant, raw: httpx.AsyncClient
) -> None:
    """Instead of a ``client_secret`` form field, the client id and secret may be sent in an
    ``Authorization: Basic`` header (RFC 6749 section 2.3.1).

    Source: https://learn.microsoft.com/entra/identity-platform/v2-oauth2-client-creds-grant-flow
    (``client_secret``: "The Basic auth pattern of instead providing credentials in the
    Authorization header, per RFC 6749 is also supported").
    """
    pair = f"{tenant.seed.app_ids['Syncwarden']}:{tenant.seed.secret_for('Syncwarden')}"
    header = "Basic " + base64.b64encode(pair.encode()).decode()
    form = {"grant_type": "client_credentials", "scope": GRAPH_DEFAULT}
    response = await raw.post(token_url(tenant), data=form, headers={"Authorization": header})
    assert response.status_code == 200, response.text
    assert response.json()["token_type"] == "Bearer"


async def test_errors_have_the_aadsts_body_with_crlf_separated_description(
    tenant: SandboxTenant, raw: httpx.AsyncClient
) -> None:
    """A refused request has ``error`` (an OAuth code), ``error_description`` beginning
    "AADSTS<n>: <sentence>" with Trace ID, Correlation ID and Timestamp on following lines
    separated by CRLF, ``error_codes`` (a list of numbers), ``timestamp``, ``trace_id``,
    ``correlation_id`` and ``error_uri``.

    Sources: https://learn.microsoft.com/entra/identity-platform/v2-oauth2-client-creds-grant-flow
    ("Error response") and https://learn.microsoft.com/entra/identity-platform/reference-error-codes
    (the sample error response).
    """
    body = await refused(raw, tenant, client_secret="not-the-secret")
    assert set(body) >= {
        "error", "error_description", "error_codes", "timestamp", "trace_id",
        "correlation_id", "error_uri",
    }  # fmt: skip
    first, *rest = body["error_description"].split("\r\n")
    assert first.startswith("AADSTS7000215: ")
    assert [line.split(":")[0] for line in rest] == ["Trace ID", "Correlation ID", "Timestamp"]
    assert body["error_codes"] == [7000215]
    assert body["trace_id"] in body["error_description"]


async def test_a_wrong_secret_is_401_invalid_client_7000215(
    tenant: SandboxTenant, raw: httpx.AsyncClient
) -> None:
    """A secret that is not the app's is 401 ``invalid_client`` with AADSTS7000215 ("Invalid
    client secret provided").

    Source: https://learn.microsoft.com/entra/identity-platform/reference-error-codes
    (AADSTS7000215; ``invalid_client``: "Client authentication failed").
    """
    body = await refused(raw, tenant, client_secret="not-the-secret")
    assert (body["status"], body["error"], body["error_codes"]) == (
        401,
        "invalid_client",
        [7000215],
    )


async def test_an_expired_secret_is_7000222(tenant: SandboxTenant, raw: httpx.AsyncClient) -> None:
    """A secret past its endDateTime is refused with AADSTS7000222 ("The provided client secret
    keys are expired"), not with the wrong-secret code: that is how an expired secret is told
    apart from a mistyped one.

    Source: https://learn.microsoft.com/entra/identity-platform/reference-error-codes
    (AADSTS7000222 InvalidClientSecretExpiredKeysProvided).
    """
    kiosk = tenant.seed.app_ids["Library Kiosk Sync"]
    body = await refused(
        raw, tenant, client_id=kiosk, client_secret="sandbox-only~expired-kiosk-secret"
    )
    assert (body["status"], body["error"], body["error_codes"]) == (
        401,
        "invalid_client",
        [7000222],
    )


async def test_an_unknown_client_id_is_700016(
    tenant: SandboxTenant, raw: httpx.AsyncClient
) -> None:
    """A client id with no app in the tenant is 400 ``unauthorized_client`` AADSTS700016.

    Source: https://learn.microsoft.com/entra/identity-platform/reference-error-codes
    (AADSTS700016 UnauthorizedClient_DoesNotMatchRequest).
    """
    body = await refused(raw, tenant, client_id=str(uuid.uuid4()))
    assert (body["status"], body["error"], body["error_codes"]) == (
        400,
        "unauthorized_client",
        [700016],
    )


async def test_an_unknown_tenant_is_90002(tenant: SandboxTenant, raw: httpx.AsyncClient) -> None:
    """A token request to a tenant that does not exist is 400 ``invalid_tenant`` AADSTS90002.

    Source: https://learn.microsoft.com/entra/identity-platform/reference-error-codes
    (AADSTS90002 InvalidTenantName).
    """
    response = await raw.post(token_url(tenant, "no-such-tenant.example"), data=secret_form(tenant))
    assert response.status_code == 400
    assert (response.json()["error"], response.json()["error_codes"]) == ("invalid_tenant", [90002])


async def test_client_credentials_scopes_must_be_a_resource_with_default(
    tenant: SandboxTenant, raw: httpx.AsyncClient
) -> None:
    """The client-credentials ``scope`` must be one resource's identifier with ``/.default``;
    a named permission is 400 ``invalid_scope`` AADSTS1002012.

    Sources: https://learn.microsoft.com/entra/identity-platform/v2-oauth2-client-creds-grant-flow
    (``scope``: "the resource identifier … affixed with the .default suffix") and
    https://learn.microsoft.com/entra/identity-platform/reference-error-codes (AADSTS1002012).
    """
    body = await refused(raw, tenant, scope="https://graph.microsoft.com/User.Read.All")
    assert (body["status"], body["error"], body["error_codes"]) == (400, "invalid_scope", [1002012])


async def test_scopes_for_two_resources_in_one_request_are_700022(
    tenant: SandboxTenant, raw: httpx.AsyncClient
) -> None:
    """All scopes of one request must be for a single resource; two ``/.default`` scopes (Graph
    and Exchange) are 400 ``invalid_scope`` AADSTS700022, so Graph and Exchange tokens are
    requested separately.

    Sources: https://learn.microsoft.com/entra/identity-platform/v2-oauth2-client-creds-grant-flow
    (``scope``: "All scopes included must be for a single resource. Including scopes for
    multiple resources will result in an error.") and
    https://learn.microsoft.com/entra/identity-platform/reference-error-codes (AADSTS700022
    InvalidMultipleResourcesScope).
    """
    body = await refused(
        raw, tenant, scope=f"{GRAPH_DEFAULT} https://outlook.office365.com/.default"
    )
    assert (body["status"], body["error"], body["error_codes"]) == (400, "invalid_scope", [700022])


async def test_a_missing_scope_is_900144(tenant: SandboxTenant, raw: httpx.AsyncClient) -> None:
    """A request without ``scope`` is 400 ``invalid_request`` AADSTS900144 "The request body must
    contain the following parameter: 'scope'."

    Source: https://learn.microsoft.com/entra/identity-platform/reference-error-codes
    (AADSTS900144; ``invalid_request``: "a missing required parameter").
    """
    body = await refused(raw, tenant, scope="")
    assert (body["status"], body["error"], body["error_codes"]) == (
        400,
        "invalid_request",
        [900144],
    )
    assert body["error_description"].split("\r\n")[0] == (
        "AADSTS900144: The request body must contain the following parameter: 'scope'."
    )


def certificate_assertion(
    key: rsa.RSAPrivateKey, thumbprint: bytes, client_id: str, audience: str
) -> str:
    now = dt.datetime.now(dt.UTC)
    claims = {
        "aud": audience,
        "iss": client_id,
        "sub": client_id,
        "jti": str(uuid.uuid4()),
        "nbf": int(now.timestamp()),
        "exp": int((now + dt.timedelta(minutes=10)).timestamp()),
    }
    return jwt.encode(claims, key, algorithm="RS256", headers={"x5t": b64url(thumbprint)})


async def test_a_certificate_assertion_signed_by_a_registered_certificate_gets_a_token(
    tenant: SandboxTenant, raw: httpx.AsyncClient
) -> None:
    """With a certificate credential, the client sends ``client_assertion_type=urn:ietf:params:
    oauth:client-assertion-type:jwt-bearer`` and a JWT signed with the certificate's key: header
    ``x5t`` (base64url SHA-1 thumbprint), claims aud (the token endpoint), iss and sub (the
    client id), jti, nbf, exp. An assertion from an unregistered certificate is refused 401
    ``invalid_client`` AADSTS700027.

    Sources: https://learn.microsoft.com/entra/identity-platform/certificate-credentials
    ("Assertion format") and https://learn.microsoft.com/entra/identity-platform/reference-error-codes
    (AADSTS700027).
    """
    app_id = tenant.seed.app_ids["Syncwarden"]
    audience = f"{tenant.base_url}{token_url(tenant)}"
    form = {
        "grant_type": "client_credentials",
        "client_id": app_id,
        "scope": GRAPH_DEFAULT,
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
    }
    key = new_rsa_key()
    cert = self_signed_certificate(key, "syncwarden-contract")
    sha1 = cert.fingerprint(hashes.SHA1())  # noqa: S303 - x5t is the SHA-1 thumbprint
    stranger = await raw.post(
        token_url(tenant),
        data={**form, "client_assertion": certificate_assertion(key, sha1, app_id, audience)},
    )
    assert stranger.status_code == 401
    assert (stranger.json()["error"], stranger.json()["error_codes"]) == (
        "invalid_client",
        [700027],
    )
    tenant.register_certificate(app_id, cert)
    accepted = await raw.post(
        token_url(tenant),
        data={**form, "client_assertion": certificate_assertion(key, sha1, app_id, audience)},
    )
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["token_type"] == "Bearer"


async def test_openid_metadata_names_the_token_endpoint_issuer_and_signing_keys(
    tenant: SandboxTenant, raw: httpx.AsyncClient
) -> None:
    """``{authority}/v2.0/.well-known/openid-configuration`` gives token_endpoint, issuer and
    jwks_uri; the keys at jwks_uri verify the tokens the tenant signs. An unknown tenant's
    metadata is a 400.

    Source: https://learn.microsoft.com/entra/identity-platform/v2-protocols-oidc ("Find your
    app's OpenID configuration document URI", "Sample response").
    """
    config = (await raw.get(f"/{tenant.tenant_id}/v2.0/.well-known/openid-configuration")).json()
    assert config["token_endpoint"] == f"{tenant.base_url}{token_url(tenant)}"
    assert config["issuer"].endswith(f"/{tenant.tenant_id}/v2.0")
    keys = (await raw.get(config["jwks_uri"].removeprefix(tenant.base_url))).json()["keys"]
    token = (await raw.post(token_url(tenant), data=secret_form(tenant))).json()["access_token"]
    kid = jwt.get_unverified_header(token)["kid"]
    signer = jwt.PyJWK(next(k for k in keys if k["kid"] == kid))
    claims = jwt.decode(
        token, signer.key, algorithms=["RS256"], audience="https://graph.microsoft.com"
    )
    assert claims["tid"] == tenant.tenant_id
    unknown = await raw.get("/no-such-tenant.example/v2.0/.well-known/openid-configuration")
    assert unknown.status_code == 400


async def test_an_app_token_lists_its_application_permissions_in_roles(
    tenant: SandboxTenant, raw: httpx.AsyncClient
) -> None:
    """An app-only token carries the application permissions granted for that resource in its
    ``roles`` claim, and only those of the resource asked for.

    Source: https://learn.microsoft.com/entra/identity-platform/access-token-claims-reference
    (``roles``). Microsoft also says tokens for its own APIs are opaque to clients
    (https://learn.microsoft.com/entra/identity-platform/access-tokens); the product reads
    ``roles`` only for ``doctor`` and treats an unreadable token as "roles unknown".
    """
    graph_token = (await raw.post(token_url(tenant), data=secret_form(tenant))).json()
    exchange_token = (
        await raw.post(
            token_url(tenant),
            data=secret_form(tenant, scope="https://outlook.office365.com/.default"),
        )
    ).json()
    graph_claims = unverified(graph_token["access_token"])
    exchange_claims = unverified(exchange_token["access_token"])
    assert {"GroupMember.ReadWrite.All", "Calendars.ReadWrite"} <= set(graph_claims["roles"])
    assert exchange_claims["roles"] == ["Exchange.ManageAsApp"]
    assert graph_claims["aud"] == "https://graph.microsoft.com"
    assert exchange_claims["aud"] == "https://outlook.office365.com"


# ---------------------------------------------------------------- Bot Framework


async def test_a_bot_gets_its_outbound_token_for_the_bot_framework_scope(
    tenant: SandboxTenant, raw: httpx.AsyncClient
) -> None:
    """To call the Bot Connector service a bot asks the token endpoint for
    ``https://api.botframework.com/.default`` with its app id and secret; the token's audience
    is ``https://api.botframework.com``.

    Source: https://learn.microsoft.com/azure/bot-service/rest-api/bot-framework-rest-connector-authentication
    ("Authenticate requests from your bot to the Bot Connector service", steps 1 and 2).
    """
    bot = "Syncwarden Bot"
    form = secret_form(
        tenant,
        client_id=tenant.seed.app_ids[bot],
        client_secret=tenant.seed.secret_for(bot),
        scope="https://api.botframework.com/.default",
    )
    response = await raw.post(token_url(tenant), data=form)
    assert response.status_code == 200, response.text
    assert unverified(response.json()["access_token"])["aud"] == "https://api.botframework.com"


async def test_bot_framework_openid_metadata_and_keys(
    tenant: SandboxTenant, raw: httpx.AsyncClient
) -> None:
    """The Bot Connector's OpenID metadata has issuer ``https://api.botframework.com``, a
    ``jwks_uri`` and ``id_token_signing_alg_values_supported: ["RS256"]``; each key at jwks_uri
    carries an ``endorsements`` list naming the channels it may sign for (Teams: ``msteams``).

    Source: https://learn.microsoft.com/azure/bot-service/rest-api/bot-framework-rest-connector-authentication
    ("Connector to bot", steps 2 and 3).
    """
    config = (await raw.get("/botframework/v1/.well-known/openidconfiguration")).json()
    assert config["issuer"] == BOT_ISSUER
    assert config["id_token_signing_alg_values_supported"] == ["RS256"]
    keys = (await raw.get(config["jwks_uri"].removeprefix(tenant.base_url))).json()["keys"]
    assert keys and all("msteams" in key["endorsements"] for key in keys)
    assert all({"kid", "n", "e", "kty"} <= set(key) for key in keys)


async def validator(
    tenant: SandboxTenant, raw: httpx.AsyncClient
) -> tuple[dict[str, Any], dict[str, Any]]:
    config: dict[str, Any] = (
        await raw.get("/botframework/v1/.well-known/openidconfiguration")
    ).json()
    keys = (await raw.get(config["jwks_uri"].removeprefix(tenant.base_url))).json()["keys"]
    return config, {key["kid"]: jwt.PyJWK(key).key for key in keys}


def validate(token: str, config: dict[str, Any], keys: dict[str, Any], bot_id: str) -> Any:
    kid = jwt.get_unverified_header(token)["kid"]
    if kid not in keys:
        raise jwt.InvalidKeyError(kid)
    return jwt.decode(
        token,
        keys[kid],
        algorithms=config["id_token_signing_alg_values_supported"],
        audience=bot_id,
        issuer=config["issuer"],
        leeway=300,
    )


async def test_a_channel_token_passes_the_documented_checks(
    tenant: SandboxTenant, raw: httpx.AsyncClient
) -> None:
    """A token Teams sends to the bot is an RS256 JWT with issuer ``https://api.botframework.com``,
    audience the bot's app id, not expired (5 minutes' skew), signed by a key from the metadata's
    jwks_uri, and a ``serviceurl`` claim equal to the activity's serviceUrl.

    Source: https://learn.microsoft.com/azure/bot-service/rest-api/bot-framework-rest-connector-authentication
    ("Step 4: Verify the JWT token", requirements 1 to 7).
    """
    config, keys = await validator(tenant, raw)
    bot_id = tenant.seed.app_ids["Syncwarden Bot"]
    service_url = "https://smba.trafficmanager.net/emea/"
    claims = validate(tenant.mint_channel_token(service_url=service_url), config, keys, bot_id)
    assert claims["serviceurl"] == service_url
    assert claims["iss"] == BOT_ISSUER and claims["aud"] == bot_id


@pytest.mark.parametrize(
    ("flavour", "failure"),
    [
        ("wrong_issuer", jwt.InvalidIssuerError),
        ("wrong_audience", jwt.InvalidAudienceError),
        ("expired", jwt.ExpiredSignatureError),
        ("unknown_key", jwt.InvalidKeyError),
    ],
)
async def test_channel_tokens_failing_a_check_must_be_refused(
    tenant: SandboxTenant, raw: httpx.AsyncClient, flavour: str, failure: type[Exception]
) -> None:
    """Each documented check is one a token can fail: wrong issuer, wrong audience, expired, or
    signed by a key the metadata does not publish; the bot must refuse all of them (HTTP 403
    per the page; the Agents SDK answers 401).

    Source: https://learn.microsoft.com/azure/bot-service/rest-api/bot-framework-rest-connector-authentication
    ("Step 4": "If the token does not meet all of these requirements, your bot should reject
    the request").
    """
    config, keys = await validator(tenant, raw)
    bot_id = tenant.seed.app_ids["Syncwarden Bot"]
    with pytest.raises(failure):
        validate(tenant.mint_channel_token(flavour=flavour), config, keys, bot_id)


def validate_fully(
    token: str, config: dict[str, Any], keys: dict[str, Any], bot_id: str, service_url: str
) -> Any:
    """Every requirement of "Step 4", including the parts a lenient JWT library leaves optional:
    a key id to find the key by, an expiry, and the ``serviceurl`` claim."""
    kid = jwt.get_unverified_header(token).get("kid")
    if kid not in keys:
        raise jwt.InvalidKeyError(kid)
    claims = jwt.decode(
        token,
        keys[kid],
        algorithms=config["id_token_signing_alg_values_supported"],
        audience=bot_id,
        issuer=config["issuer"],
        leeway=300,
        options={"require": ["exp", "iss", "aud"]},
    )
    if claims.get("serviceurl") != service_url:
        raise jwt.InvalidTokenError("serviceurl")
    return claims


@pytest.mark.parametrize(
    ("flavour", "failure"),
    [
        ("no_exp", jwt.MissingRequiredClaimError),
        ("no_kid", jwt.InvalidKeyError),
        ("alg_none", jwt.InvalidAlgorithmError),
        ("no_service_url", jwt.InvalidTokenError),
    ],
)
async def test_channel_tokens_missing_a_required_part_must_be_refused(
    tenant: SandboxTenant, raw: httpx.AsyncClient, flavour: str, failure: type[Exception]
) -> None:
    """The sandbox also mints tokens that lack something the page requires: no ``exp`` (the
    token must be within its validity period), no ``kid`` (the key must be one listed in the
    metadata's keys document), ``alg: none`` (the signature must use an algorithm of
    ``id_token_signing_alg_values_supported``, RS256) and no ``serviceurl`` claim (it must match
    the activity's serviceUrl). A validator that applies every requirement refuses each; the
    genuine token passes it.

    Source: https://learn.microsoft.com/azure/bot-service/rest-api/bot-framework-rest-connector-authentication
    ("Step 4: Verify the JWT token", requirements 5, 6 and 7). ``alg: none`` is the unsecured
    JWT of RFC 7519 section 6 (https://www.rfc-editor.org/rfc/rfc7519#section-6).
    """
    config, keys = await validator(tenant, raw)
    bot_id = tenant.seed.app_ids["Syncwarden Bot"]
    service_url = "https://smba.trafficmanager.net/emea/"
    good = tenant.mint_channel_token(service_url=service_url)
    assert validate_fully(good, config, keys, bot_id, service_url)["serviceurl"] == service_url
    bad = tenant.mint_channel_token(service_url=service_url, flavour=flavour)
    with pytest.raises(failure):
        validate_fully(bad, config, keys, bot_id, service_url)


@pytest.mark.parametrize(
    ("version", "issuer", "app_claims"),
    [
        ("1.0", "https://sts.windows.net/{tid}/", {"appid", "appidacr", "idp"}),
        ("2.0", "https://login.microsoftonline.com/{tid}/v2.0", {"azp", "azpacr"}),
    ],
)
async def test_an_entra_app_only_token_for_another_app_has_microsofts_issuer(
    tenant: SandboxTenant,
    raw: httpx.AsyncClient,
    version: str,
    issuer: str,
    app_claims: set[str],
) -> None:
    """An app-only token Entra ID issues to one app of the tenant for another app (the audience,
    here the bot's app id) has issuer ``https://sts.windows.net/{tid}/`` in v1.0 and
    ``https://login.microsoftonline.com/{tid}/v2.0`` in v2.0, ``ver`` saying which, the client
    in ``appid``/``appidacr`` (v1.0) or ``azp``/``azpacr`` (v2.0), ``tid``, ``oid`` and ``sub``,
    ``idtyp: app``; it is signed by a key of the tenant's published keys. It carries no
    ``serviceurl``: it is not a Bot Connector token.

    Source: https://learn.microsoft.com/entra/identity-platform/access-token-claims-reference
    (``iss``, ``ver``, ``appid``, ``appidacr``, ``azp``, ``azpacr``, ``idtyp``, ``idp``) and
    https://learn.microsoft.com/entra/identity-platform/v2-oauth2-client-creds-grant-flow
    (the token for another app's ``{app id}/.default``).
    """
    client = tenant.seed.app_ids["Syncwarden"]
    bot_id = tenant.seed.app_ids["Syncwarden Bot"]
    token = tenant.entra.mint_microsoft_app_token(
        client, bot_id, version="1.0" if version == "1.0" else "2.0"
    )
    keys = (await raw.get(f"/{tenant.tenant_id}/discovery/v2.0/keys")).json()["keys"]
    kid = jwt.get_unverified_header(token)["kid"]
    signer = jwt.PyJWK(next(k for k in keys if k["kid"] == kid))
    claims = jwt.decode(
        token,
        signer.key,
        algorithms=["RS256"],
        audience=bot_id,
        issuer=issuer.format(tid=tenant.tenant_id),
    )
    assert claims["ver"] == version and claims["tid"] == tenant.tenant_id
    assert app_claims <= set(claims)
    assert claims.get("appid", claims.get("azp")) == client
    assert claims["idtyp"] == "app" and "serviceurl" not in claims
