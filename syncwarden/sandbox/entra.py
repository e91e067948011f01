"""Entra ID v2.0 endpoints enough for msal's client-credentials flow, and token checks.

Error bodies copy the AADSTS shape because msal and our connectors surface ``error_description``
to operators. Codes 90002, 700016, 7000215, 7000218, 7000222, 1002012, 700022, 900144, 500011 and
700024 follow Microsoft's published AADSTS list; the assertion-audience and issuer failures are
reported as 700027 (signature/key) or 50027 (malformed), which is our best reading.
"""

from __future__ import annotations

import base64
import datetime as dt
import hmac
import time
from typing import Any, Literal
from urllib.parse import unquote_plus

import jwt
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from syncwarden.sandbox.context import Context
from syncwarden.sandbox.seed import BOTFRAMEWORK_RESOURCE, EXCHANGE_RESOURCE, GRAPH_RESOURCE
from syncwarden.sandbox.signing import b64url, guid, thumbprints, time_claims
from syncwarden.sandbox.state import Application, KeyCredential, ServicePrincipal, new_id

RESOURCE_ALIASES = {
    "https://graph.microsoft.com": GRAPH_RESOURCE,
    "00000003-0000-0000-c000-000000000000": GRAPH_RESOURCE,
    "https://outlook.office365.com": EXCHANGE_RESOURCE,
    "https://outlook.office.com": EXCHANGE_RESOURCE,
    "00000002-0000-0ff1-ce00-000000000000": EXCHANGE_RESOURCE,
    "https://api.botframework.com": BOTFRAMEWORK_RESOURCE,
}
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
TOKEN_LIFETIME = dt.timedelta(hours=1)


class AadError(Exception):
    def __init__(self, status: int, error: str, code: int, description: str) -> None:
        super().__init__(description)
        self.status, self.error, self.code, self.description = status, error, code, description

    def response(self) -> web.Response:
        trace, correlation = guid(), guid()
        stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        body = {
            "error": self.error,
            # Lines end in CRLF, as the client-credentials page's error example shows; clients that
            # show operators the first line then show just the AADSTS sentence.
            "error_description": (
                f"AADSTS{self.code}: {self.description}\r\nTrace ID: {trace}\r\n"
                f"Correlation ID: {correlation}\r\nTimestamp: {stamp}"
            ),
            "error_codes": [self.code],
            "timestamp": stamp,
            "trace_id": trace,
            "correlation_id": correlation,
            "error_uri": f"https://login.microsoftonline.com/error?code={self.code}",
        }
        return web.json_response(body, status=self.status)


def register_certificate(
    ctx: Context, app_id: str, cert: x509.Certificate, display_name: str | None = None
) -> KeyCredential:
    """Add a real certificate to an app so clients can sign assertions with its key."""
    app = ctx.state.application_for(app_id)
    if app is None:
        raise KeyError(app_id)
    sha1, sha256 = thumbprints(cert)
    from cryptography.hazmat.primitives import serialization

    credential = KeyCredential(
        keyId=new_id(),
        displayName=display_name or cert.subject.rfc4514_string(),
        start=cert.not_valid_before_utc,
        end=cert.not_valid_after_utc,
        usage="Verify",
        thumbprint_sha1=sha1,
        thumbprint_sha256=sha256,
        public_key_pem=cert.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )
    app.keys.append(credential)
    return credential


def basic_credentials(header: str) -> tuple[str, str] | None:
    """(client_id, client_secret) from ``Authorization: Basic``, which the token endpoint accepts
    instead of form fields (RFC 6749 section 2.3.1: both parts form-urlencoded)."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value.strip():
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        return None
    return unquote_plus(client_id), unquote_plus(secret)


class EntraFront:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def issuer(self) -> str:
        return f"{self.ctx.base_url}/{self.ctx.state.tenant_id}/v2.0"

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/{tenant}/v2.0/.well-known/openid-configuration", self.openid_configuration),
            web.post("/{tenant}/oauth2/v2.0/token", self.token),
            web.get("/{tenant}/discovery/v2.0/keys", self.keys),
            web.get("/{tenant}/oauth2/v2.0/authorize", self.authorize),
            web.get("/msi/token", self.managed_identity_token),
        ]

    def _check_tenant(self, tenant: str) -> None:
        known = {self.ctx.state.tenant_id, *self.ctx.state.domains, "organizations"}
        if tenant.lower() not in {k.lower() for k in known}:
            raise AadError(
                400,
                "invalid_tenant",
                90002,
                f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID "
                "and are signing into the correct cloud.",
            )

    async def openid_configuration(self, request: web.Request) -> web.Response:
        try:
            self._check_tenant(request.match_info["tenant"])
        except AadError as exc:
            return exc.response()
        base, tid = self.ctx.base_url, self.ctx.state.tenant_id
        return web.json_response(
            {
                "token_endpoint": f"{base}/{tid}/oauth2/v2.0/token",
                "token_endpoint_auth_methods_supported": [
                    "client_secret_post",
                    "private_key_jwt",
                    "client_secret_basic",
                ],
                "jwks_uri": f"{base}/{tid}/discovery/v2.0/keys",
                "response_modes_supported": ["query", "fragment", "form_post"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
                "issuer": self.issuer(),
                "request_uri_parameter_supported": False,
                "authorization_endpoint": f"{base}/{tid}/oauth2/v2.0/authorize",
                "device_authorization_endpoint": f"{base}/{tid}/oauth2/v2.0/devicecode",
                "end_session_endpoint": f"{base}/{tid}/oauth2/v2.0/logout",
                "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nbf", "tid", "oid"],
                "tenant_region_scope": "EU",
                "cloud_instance_name": "microsoftonline.com",
            }
        )

    async def keys(self, request: web.Request) -> web.Response:
        return web.json_response({"keys": [self.ctx.entra_key.jwk(issuer=self.issuer())]})

    async def authorize(self, request: web.Request) -> web.Response:
        return AadError(
            400,
            "unsupported_response_type",
            900144,
            "The sandbox tenant supports only the client credentials grant.",
        ).response()

    async def token(self, request: web.Request) -> web.Response:
        try:
            self._check_tenant(request.match_info["tenant"])
            form = await request.post()
            fields = {k: str(v) for k, v in form.items()}
            basic = basic_credentials(request.headers.get("Authorization", ""))
            if basic is not None:
                fields.setdefault("client_id", basic[0])
                fields.setdefault("client_secret", basic[1])
            return web.json_response(self._issue(fields, str(request.url.with_query(None))))
        except AadError as exc:
            return exc.response()

    def _issue(self, form: dict[str, str], endpoint: str) -> dict[str, Any]:
        grant = form.get("grant_type")
        if not grant:
            raise AadError(
                400,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'grant_type'.",
            )
        if grant != "client_credentials":
            raise AadError(
                400,
                "unsupported_grant_type",
                70003,
                f"The app requested an unsupported grant type '{grant}'.",
            )
        client_id = form.get("client_id", "")
        if not client_id:
            raise AadError(
                400,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'client_id'.",
            )
        app = self.ctx.state.application_for(client_id)
        sp = self.ctx.state.service_principal_for(client_id)
        if app is None or sp is None:
            raise AadError(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id}' was not found in the directory "
                f"'{self.ctx.state.tenant_id}'. This can happen if the application has not been "
                "installed by the administrator of the tenant or consented to by any user in the "
                "tenant. You may have sent your authentication request to the wrong tenant.",
            )
        resource = self._resource(form.get("scope", ""))
        if "client_secret" in form:
            self._check_secret(app, form["client_secret"])
        elif form.get("client_assertion_type") == ASSERTION_TYPE and "client_assertion" in form:
            self._check_assertion(app, form["client_assertion"], endpoint)
        else:
            raise AadError(
                401,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' or "
                "'client_secret'.",
            )
        return {
            "token_type": "Bearer",
            "expires_in": 3599,
            "ext_expires_in": 3599,
            "access_token": self.mint_access_token(sp, resource),
        }

    async def managed_identity_token(self, request: web.Request) -> web.Response:
        """The App Service managed-identity endpoint (``IDENTITY_ENDPOINT``), as msal calls it.

        Without ``client_id`` the host's system-assigned identity answers: here, the Syncwarden
        app's service principal. With one, the user-assigned identity of that client id.
        """
        if request.headers.get("X-IDENTITY-HEADER") != self.ctx.identity_header:
            return web.json_response(
                {"statusCode": 401, "message": "Missing or invalid X-IDENTITY-HEADER."}, status=401
            )
        name = request.query.get("resource", "").rstrip("/")
        resource = RESOURCE_ALIASES.get(name.removesuffix("/.default"))
        client_id = request.query.get("client_id") or self.ctx.seed.app_ids.get("Syncwarden", "")
        sp = self.ctx.state.service_principal_for(client_id)
        if resource is None or sp is None:
            return web.json_response(
                {"statusCode": 400, "message": f"No managed identity or resource for '{name}'."},
                status=400,
            )
        now = int(dt.datetime.now(dt.UTC).timestamp())
        return web.json_response(
            {
                "access_token": self.mint_access_token(sp, resource),
                "expires_on": str(now + 3599),
                "resource": resource,
                "token_type": "Bearer",
                "client_id": client_id,
            }
        )

    def _resource(self, scope: str) -> str:
        scopes = scope.split()
        if not scopes:
            raise AadError(
                400,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'scope'.",
            )
        if len(scopes) > 1 and all(s.endswith("/.default") for s in scopes):
            raise AadError(
                400,
                "invalid_scope",
                700022,
                f"The provided value for the input parameter scope is not valid because it "
                f"contains more than one resource. Scope {scope} is not valid.",
            )
        if len(scopes) != 1 or not scopes[0].endswith("/.default"):
            raise AadError(
                400,
                "invalid_scope",
                1002012,
                f"The provided value for scope {scope} is not valid. Client credential flows must "
                "have a scope value with /.default suffixed to the resource identifier "
                "(application ID URI).",
            )
        name = scopes[0][: -len("/.default")].rstrip("/")
        resource = RESOURCE_ALIASES.get(name)
        if resource is None:
            raise AadError(
                400,
                "invalid_resource",
                500011,
                f"The resource principal named {name} was not found in the tenant named "
                f"{self.ctx.state.tenant_id}. This can happen if the application has not been "
                "installed by the administrator of the tenant or consented to by any user in the "
                "tenant. You might have sent your authentication request to the wrong tenant.",
            )
        return resource

    def _check_secret(self, app: Application, secret: str) -> None:
        now = dt.datetime.now(dt.UTC)
        for credential in app.passwords:
            if hmac.compare_digest(credential.secret.encode(), secret.encode()):
                if credential.end <= now or credential.start > now:
                    raise AadError(
                        401,
                        "invalid_client",
                        7000222,
                        f"The provided client secret keys for app '{app.appId}' are expired. "
                        "Visit the Azure portal to create new keys for your app: "
                        "https://aka.ms/NewClientSecret, or consider using certificate "
                        "credentials for added security: https://aka.ms/certCreds.",
                    )
                return
        raise AadError(
            401,
            "invalid_client",
            7000215,
            "Invalid client secret provided. Ensure the secret being sent in the request is the "
            f"client secret value, not the client secret ID, for a secret added to app "
            f"'{app.appId}'.",
        )

    def _check_assertion(self, app: Application, assertion: str, endpoint: str) -> None:
        try:
            header = jwt.get_unverified_header(assertion)
        except jwt.PyJWTError as exc:
            raise AadError(
                401, "invalid_client", 50027, "JWT token is invalid or malformed."
            ) from exc
        # Padding is optional in practice (msal sends it), so compare without it.
        wanted_sha1 = str(header["x5t"]).rstrip("=") if header.get("x5t") else None
        wanted_sha256 = str(header["x5t#S256"]).rstrip("=") if header.get("x5t#S256") else None
        credential = next(
            (
                k
                for k in app.keys
                if k.public_key_pem is not None
                and (
                    (wanted_sha1 is not None and b64url(k.thumbprint_sha1) == wanted_sha1)
                    or (wanted_sha256 is not None and b64url(k.thumbprint_sha256) == wanted_sha256)
                )
            ),
            None,
        )
        if credential is None or credential.public_key_pem is None:
            raise AadError(
                401,
                "invalid_client",
                700027,
                "The certificate with identifier used to sign the client assertion is not "
                "registered on application. [Reason - The key was not found., Thumbprint of key "
                f"used by client: '{wanted_sha1 or wanted_sha256}']",
            )
        from cryptography.hazmat.primitives.serialization import load_pem_public_key

        key = load_pem_public_key(credential.public_key_pem)
        assert isinstance(key, rsa.RSAPublicKey)
        try:
            claims = jwt.decode(
                assertion,
                key,
                algorithms=["RS256", "PS256"],
                audience=endpoint,
                options={"require": ["exp", "aud", "iss", "sub"]},
                leeway=300,
            )
        except jwt.ExpiredSignatureError as exc:
            raise AadError(
                401,
                "invalid_client",
                700024,
                "Client assertion is not within its valid time range.",
            ) from exc
        except jwt.InvalidAudienceError as exc:
            raise AadError(
                401,
                "invalid_client",
                700027,
                "Client assertion audience claim does not match Realm issuer. "
                f"Expected {endpoint}.",
            ) from exc
        except jwt.PyJWTError as exc:
            raise AadError(
                401, "invalid_client", 700027, "Client assertion failed signature validation."
            ) from exc
        if claims.get("iss") != app.appId or claims.get("sub") != app.appId:
            raise AadError(
                401,
                "invalid_client",
                700027,
                "Client assertion contains an invalid signature or the issuer and subject are not "
                "the client id.",
            )
        now = dt.datetime.now(dt.UTC)
        if credential.end <= now:
            raise AadError(
                401,
                "invalid_client",
                700027,
                "The certificate used to sign the client assertion has expired.",
            )

    def mint_access_token(self, sp: ServicePrincipal, resource: str) -> str:
        now = dt.datetime.now(dt.UTC)
        tid = self.ctx.state.tenant_id
        claims: dict[str, Any] = {
            "aud": resource,
            "iss": self.issuer(),
            "tid": tid,
            "appid": sp.appId,
            "azp": sp.appId,
            "appidacr": "1",
            "idtyp": "app",
            "oid": sp.id,
            "sub": sp.id,
            "roles": sorted(sp.roles.get(resource, set())),
            "ver": "2.0",
            "uti": b64url(guid().encode())[:22],
            **time_claims(now, TOKEN_LIFETIME),
        }
        return self.ctx.entra_key.sign(claims)

    def mint_microsoft_app_token(
        self, client_app_id: str, audience: str, *, version: Literal["1.0", "2.0"]
    ) -> str:
        """An app-only access token as Entra ID writes it for a real tenant: the token any app
        registration of the tenant gets with the client-credentials grant for a resource that is
        another app (here: ``audience``, e.g. the bot's app id), signed with the tenant's key.

        Unlike :meth:`mint_access_token` (the sandbox's own issuer, which our clients are pointed
        at), the issuer is Microsoft's: ``https://sts.windows.net/{tid}/`` in a v1.0 token and
        ``https://login.microsoftonline.com/{tid}/v2.0`` in a v2.0 one, with the claims of that
        version (``appid``/``appidacr`` or ``azp``/``azpacr``), as the access-token claims
        reference lists them. Tests use it to show such a token is not a channel token.
        """
        sp = self.ctx.state.service_principal_for(client_app_id)
        if sp is None:
            raise KeyError(client_app_id)
        tid = self.ctx.state.tenant_id
        now = dt.datetime.now(dt.UTC)
        claims: dict[str, Any] = {
            "aud": audience,
            "tid": tid,
            "oid": sp.id,
            "sub": sp.id,
            "idtyp": "app",
            "ver": version,
            "uti": b64url(guid().encode())[:22],
            **time_claims(now, TOKEN_LIFETIME),
        }
        if version == "1.0":
            issuer = f"https://sts.windows.net/{tid}/"
            claims.update(iss=issuer, idp=issuer, appid=sp.appId, appidacr="1")
        else:
            claims.update(
                iss=f"https://login.microsoftonline.com/{tid}/v2.0", azp=sp.appId, azpacr="1"
            )
        return self.ctx.entra_key.sign(claims)

    def verify_access_token(self, token: str, resource: str) -> dict[str, Any]:
        """Claims of a valid sandbox token for ``resource``; raises jwt errors otherwise."""
        claims: dict[str, Any] = jwt.decode(
            token,
            self.ctx.entra_key.public_key(),
            algorithms=["RS256"],
            audience=resource,
            issuer=self.issuer(),
            options={"require": ["exp", "aud", "iss", "roles"]},
        )
        if claims.get("exp", 0) < time.time():
            raise jwt.ExpiredSignatureError("expired")
        return claims
