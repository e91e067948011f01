"""Bot Framework channel-token issuance, so the bot's real JWT validation runs in tests.

Teams signs the tokens it sends to a bot with keys published at the Bot Framework OpenID
metadata; the sandbox publishes its own key there and mints tokens (good and deliberately bad).
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from aiohttp import web

from sandbox.context import Context
from sandbox.signing import SigningKey, time_claims

ISSUER = "https://api.botframework.com"
Flavour = Literal["valid", "wrong_issuer", "wrong_audience", "expired", "unknown_key"]
FLAVOURS: tuple[str, ...] = ("valid", "wrong_issuer", "wrong_audience", "expired", "unknown_key")


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
        key = self.ctx.bot_key
        if flavour == "unknown_key":
            if self._rogue is None:
                self._rogue = SigningKey("sandbox-rogue-signer")
            key = self._rogue
        return key.sign(claims)
