"""Bot Framework channel tokens and Graph change-notification subscriptions."""

from __future__ import annotations

import datetime as dt

import httpx
import jwt
import pytest
from aiohttp import web

from syncwarden.sandbox.server import SandboxTenant

AVERY = "avery.quinlan@example.edu"


async def test_channel_tokens_validate_against_published_keys(
    tenant: SandboxTenant, raw: httpx.AsyncClient
) -> None:
    config = (await raw.get("/botframework/v1/.well-known/openidconfiguration")).json()
    assert config["issuer"] == "https://api.botframework.com"
    keys = (await raw.get(config["jwks_uri"].replace(tenant.base_url, ""))).json()["keys"]
    assert keys[0]["endorsements"] == ["msteams"]
    bot_id = tenant.seed.app_ids["Syncwarden Bot"]
    by_kid = {k["kid"]: jwt.PyJWK(k).key for k in keys}

    def validate(token: str) -> dict[str, object]:
        kid = jwt.get_unverified_header(token)["kid"]
        if kid not in by_kid:
            raise jwt.InvalidKeyError(kid)
        claims: dict[str, object] = jwt.decode(
            token, by_kid[kid], algorithms=["RS256"], audience=bot_id, issuer=config["issuer"]
        )
        return claims

    assert (
        validate(tenant.mint_channel_token(service_url="https://example.edu/svc"))["serviceurl"]
        == "https://example.edu/svc"
    )
    for flavour, error in (
        ("wrong_issuer", jwt.InvalidIssuerError),
        ("wrong_audience", jwt.InvalidAudienceError),
        ("expired", jwt.ExpiredSignatureError),
        ("unknown_key", jwt.InvalidKeyError),
    ):
        with pytest.raises(error):
            validate(tenant.mint_channel_token(flavour=flavour))


async def test_subscription_validation_and_notifications(
    tenant: SandboxTenant, graph: httpx.AsyncClient
) -> None:
    received: list[dict[str, object]] = []

    async def hook(request: web.Request) -> web.StreamResponse:
        if "validationToken" in request.query:
            return web.Response(text=request.query["validationToken"], content_type="text/plain")
        received.append(await request.json())
        return web.Response(status=202)

    async def refuse(request: web.Request) -> web.StreamResponse:
        return web.Response(status=500)

    app = web.Application()
    app.router.add_post("/hook", hook)
    app.router.add_post("/refuse", refuse)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        too_long = (dt.datetime.now(dt.UTC) + dt.timedelta(days=30)).isoformat()
        asked = (dt.datetime.now(dt.UTC) + dt.timedelta(days=2)).replace(microsecond=0)
        expires = asked.isoformat()
        body = {
            "changeType": "created,updated,deleted",
            "notificationUrl": f"http://127.0.0.1:{port}/hook",
            "resource": f"/users/{AVERY}/events",
            "expirationDateTime": too_long,
            "clientState": "sandbox-state",
        }
        longer = await graph.post("/subscriptions", json=body)
        assert (longer.status_code, longer.json()["error"]["code"]) == (400, "ExtensionError")
        assert "minutes in the future" in longer.json()["error"]["message"]
        body["expirationDateTime"] = expires
        created = await graph.post("/subscriptions", json=body)
        assert created.status_code == 201, created.text
        granted = dt.datetime.fromisoformat(
            created.json()["expirationDateTime"].replace("Z", "+00:00")
        )
        assert granted == asked, "a lifetime within the limit is granted as asked"
        refused = await graph.post(
            "/subscriptions", json={**body, "notificationUrl": f"http://127.0.0.1:{port}/refuse"}
        )
        assert (refused.status_code, refused.json()["error"]["code"]) == (400, "ValidationError")
        event = {
            "subject": "x",
            "start": {"dateTime": "2031-01-01T09:00:00", "timeZone": "UTC"},
            "end": {"dateTime": "2031-01-01T10:00:00", "timeZone": "UTC"},
        }
        made = (await graph.post(f"/users/{AVERY}/events", json=event)).json()
        await tenant.drain_notifications()
        item = received[0]["value"][0]  # type: ignore[index]
        assert item["changeType"] == "created" and item["clientState"] == "sandbox-state"
        assert item["resourceData"]["id"] == made["id"]
        sub_id = created.json()["id"]
        tenant.send_lifecycle_event(sub_id, "reauthorizationRequired")
        await tenant.drain_notifications()
        assert received[-1]["value"][0]["lifecycleEvent"] == "reauthorizationRequired"  # type: ignore[index]
        too_far = await graph.patch(
            f"/subscriptions/{sub_id}", json={"expirationDateTime": too_long}
        )
        assert (too_far.status_code, too_far.json()["error"]["code"]) == (400, "ExtensionError")
        renewed = await graph.patch(
            f"/subscriptions/{sub_id}", json={"expirationDateTime": expires}
        )
        assert renewed.status_code == 200
        assert (await graph.delete(f"/subscriptions/{sub_id}")).status_code == 204
    finally:
        await runner.cleanup()
