"""Bot Framework channel-token issuance, so the bot's real JWT validation runs in tests.

Teams signs the tokens it sends to a bot with keys published at the Bot Framework OpenID
metadata; the sandbox publishes its own key there and mints tokens (good and deliberately bad).
The bad flavours are the ways a token can fail Microsoft's checks ("Step 4: Verify the JWT token"
of https://learn.microsoft.com/azure/bot-service/rest-api/bot-framework-rest-connector-authentication):
another issuer or audience, expired, signed by a key the metadata does not publish, no ``exp``, no
``kid`` in the header, ``alg: none`` (unsigned), or no ``serviceurl`` claim.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, Literal, get_args

import jwt
from aiohttp import web

from syncwarden.sandbox.context import Context
from syncwarden.sandbox.signing import SigningKey, b64url, time_claims

ISSUER = "https://api.botframework.com"
Flavour = Literal[
    "valid",
    "wrong_issuer",
    "wrong_audience",
    "expired",
    "unknown_key",
    "no_exp",
    "no_kid",
    "alg_none",
    "no_service_url",
]
FLAVOURS: tuple[str, ...] = get_args(Flavour)


class BotFrameworkFront:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._rogue: SigningKey | None = None

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/botframework/v1/.well-known/openidconfiguration", self.openid_configuration),
            web.get("/botframework/v1/.well-known/keys", self.keys),
        ]

    async def openid_configuration(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "issuer": ISSUER,
                "authorization_endpoint": "https://invalid.botframework.com",
                "jwks_uri": f"{self.ctx.base_url}/botframework/v1/.well-known/keys",
                "id_token_signing_alg_values_supported": ["RS256"],
                "token_endpoint_auth_methods_supported": ["private_key_jwt"],
            }
        )

    async def keys(self, request: web.Request) -> web.Response:
        return web.json_response({"keys": [self.ctx.bot_key.jwk(endorsements=["msteams"])]})

    def mint(
        self,
        audience: str,
        *,
        service_url: str = "https://smba.trafficmanager.net/teams/",
        flavour: str = "valid",
        lifetime: dt.timedelta = dt.timedelta(hours=1),
        extra: dict[str, Any] | None = None,
    ) -> str:
        if flavour not in FLAVOURS:
            raise ValueError(f"unknown token flavour {flavour!r}; one of {FLAVOURS}")
        now = dt.datetime.now(dt.UTC)
        if flavour == "expired":
            now -= lifetime + dt.timedelta(minutes=10)
        claims: dict[str, Any] = {
            "iss": "https://sts.windows.net/sandbox-wrong-issuer/"
            if flavour == "wrong_issuer"
            else ISSUER,
            "aud": "00000000-0000-0000-0000-00000000beef"
            if flavour == "wrong_audience"
            else audience,
            "serviceurl": service_url,
            **time_claims(now, lifetime),
            **(extra or {}),
        }
        if flavour == "no_exp":
            del claims["exp"]
        if flavour == "no_service_url":
            del claims["serviceurl"]
        key = self.ctx.bot_key
        if flavour == "unknown_key":
            if self._rogue is None:
                self._rogue = SigningKey("sandbox-rogue-signer")
            key = self._rogue
        if flavour == "alg_none":
            # An unsecured JWT (RFC 7519 section 6): header and claims, an empty signature.
            header = {"typ": "JWT", "alg": "none", "kid": key.kid}
            return ".".join(
                (
                    b64url(json.dumps(header).encode()),
                    b64url(json.dumps(claims).encode()),
                    "",
                )
            )
        if flavour == "no_kid":
            return jwt.encode(claims, key.key, algorithm="RS256", headers={"typ": "JWT"})
        return key.sign(claims)
