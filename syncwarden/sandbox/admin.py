"""Admin endpoints under ``/_sandbox``: the HTTP face of the Python API, loopback only.

They exist so a sandbox started as a separate process (``make run``) can be steered by tests and
people exactly as one started in-process.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from aiohttp import web
from cryptography import x509

from syncwarden.sandbox import directory_admin
from syncwarden.sandbox.knobs import FaultRule
from syncwarden.sandbox.state import DirectoryDeltaSettings, iso

if TYPE_CHECKING:
    from syncwarden.sandbox.server import SandboxTenant

Handler = Any


class AdminApi:
    def __init__(self, tenant: SandboxTenant) -> None:
        self.t = tenant

    @staticmethod
    @web.middleware
    async def loopback_only(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/_sandbox"):
            remote = request.remote or ""
            try:
                loopback = ipaddress.ip_address(remote).is_loopback
            except ValueError:
                loopback = False
            if not loopback:
                return web.json_response({"error": "admin endpoints are loopback only"}, status=403)
        response: web.StreamResponse = await handler(request)
        return response

    def routes(self) -> list[web.RouteDef]:
        p = "/_sandbox"
        return [
            web.get(f"{p}/health", self.health),
            web.get(f"{p}/knobs", self.get_knobs),
            web.patch(f"{p}/knobs", self.patch_knobs),
            web.get(f"{p}/faults", self.get_faults),
            web.post(f"{p}/faults", self.add_fault),
            web.delete(f"{p}/faults", self.clear_faults),
            web.get(f"{p}/requests", self.get_requests),
            web.delete(f"{p}/requests", self.clear_requests),
            web.get(f"{p}/groups/{{group}}/members", self.members),
            web.post(f"{p}/groups/{{group}}/members", self.add_member),
            web.delete(f"{p}/groups/{{group}}/members/{{member}}", self.remove_member),
            web.post(f"{p}/users", self.add_user),
            web.delete(f"{p}/users/{{user}}", self.remove_user),
            web.post(f"{p}/users/{{user}}/disable", self.disable_user),
            web.post(f"{p}/users/{{user}}/enable", self.enable_user),
            web.post(f"{p}/users/{{user}}/soft-delete", self.soft_delete_user),
            web.post(f"{p}/deleted-users/{{user}}/restore", self.restore_user),
            web.put(f"{p}/users/{{user}}/primary-address", self.primary_address),
            web.put(f"{p}/users/{{user}}/manager", self.set_manager),
            web.get(f"{p}/directory-delta", self.get_directory_delta),
            web.patch(f"{p}/directory-delta", self.patch_directory_delta),
            web.post(f"{p}/directory-delta/expire", self.expire_directory_delta),
            web.put(f"{p}/access-policies/{{app}}", self.put_policy),
            web.post(f"{p}/access-policies/{{app}}/propagate", self.propagate),
            web.post(f"{p}/delta/expire", self.expire_delta),
            web.post(f"{p}/apps/{{app}}/roles", self.grant),
            web.delete(f"{p}/apps/{{app}}/roles", self.revoke),
            web.get(f"{p}/apps/{{app}}/exchange-roles", self.exchange_roles),
            web.post(f"{p}/apps/{{app}}/exchange-roles", self.assign_exchange_role),
            web.delete(f"{p}/apps/{{app}}/exchange-roles", self.remove_exchange_role),
            web.post(f"{p}/apps/{{app}}/certificates", self.add_certificate),
            web.post(f"{p}/apps/{{app}}/secrets", self.add_secret),
            web.post(f"{p}/apps/generate", self.generate),
            web.post(f"{p}/tokens", self.token),
            web.post(f"{p}/botframework/tokens", self.channel_token),
            web.post(f"{p}/subscriptions/{{sub}}/lifecycle", self.lifecycle),
            web.get(f"{p}/notifications", self.notifications),
        ]

    async def _json(self, request: web.Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError as exc:
            raise web.HTTPBadRequest(text="body must be JSON") from exc
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(text="body must be a JSON object")
        return body

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"status": "ok", **self.t.state.summary(), "base_url": self.t.base_url}
        )

    async def get_knobs(self, request: web.Request) -> web.Response:
        return web.json_response(self.t.knobs.to_json())

    async def patch_knobs(self, request: web.Request) -> web.Response:
        try:
            self.t.set_knobs(**await self._json(request))
        except ValueError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from exc
        return web.json_response(self.t.knobs.to_json())

    async def get_faults(self, request: web.Request) -> web.Response:
        return web.json_response([r.to_json() for r in self.t.ctx.behaviour.faults])

    async def add_fault(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        try:
            rule = self.t.ctx.behaviour.add_fault(FaultRule(**body))
        except TypeError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from exc
        return web.json_response(rule.to_json(), status=201)

    async def clear_faults(self, request: web.Request) -> web.Response:
        self.t.clear_faults()
        return web.Response(status=204)

    async def get_requests(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "requests": [r.to_json() for r in self.t.requests],
                "max_in_flight": self.t.max_in_flight,
            }
        )

    async def clear_requests(self, request: web.Request) -> web.Response:
        self.t.clear_requests()
        return web.Response(status=204)

    async def members(self, request: web.Request) -> web.Response:
        try:
            ids = self.t.group_member_ids(request.match_info["group"])
        except KeyError as exc:
            raise web.HTTPNotFound(text="unknown group") from exc
        return web.json_response({"members": ids})

    async def add_member(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        try:
            self.t.add_group_member(request.match_info["group"], str(body["member"]))
        except KeyError as exc:
            raise web.HTTPNotFound(text=f"unknown {exc}") from exc
        return web.Response(status=204)

    async def remove_member(self, request: web.Request) -> web.Response:
        try:
            removed = self.t.remove_group_member(
                request.match_info["group"], request.match_info["member"]
            )
        except KeyError as exc:
            raise web.HTTPNotFound(text="unknown group") from exc
        return web.Response(status=204 if removed else 404)

    async def add_user(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        try:
            user = self.t.add_user(**body)
        except (TypeError, KeyError) as exc:
            raise web.HTTPBadRequest(text=str(exc)) from exc
        return web.json_response(user.to_graph(), status=201)

    async def remove_user(self, request: web.Request) -> web.Response:
        """Delete for good (a soft-deleted user too); an unknown user is left as it was."""
        try:
            directory_admin.hard_delete(self.t.state, request.match_info["user"])
        except KeyError:
            self.t.remove_user(request.match_info["user"])
        return web.Response(status=204)

    def _user_change(self, change: Callable[[], Any]) -> web.Response:
        try:
            change()
        except KeyError as exc:
            raise web.HTTPNotFound(text=f"unknown {exc}") from exc
        except ValueError as exc:
            raise web.HTTPConflict(text=str(exc)) from exc
        return web.Response(status=204)

    async def disable_user(self, request: web.Request) -> web.Response:
        user = request.match_info["user"]
        return self._user_change(lambda: directory_admin.set_enabled(self.t.state, user, False))

    async def enable_user(self, request: web.Request) -> web.Response:
        user = request.match_info["user"]
        return self._user_change(lambda: directory_admin.set_enabled(self.t.state, user, True))

    async def soft_delete_user(self, request: web.Request) -> web.Response:
        user = request.match_info["user"]
        return self._user_change(lambda: directory_admin.soft_delete(self.t.state, user))

    async def restore_user(self, request: web.Request) -> web.Response:
        user = request.match_info["user"]
        return self._user_change(lambda: directory_admin.restore(self.t.state, user))

    async def primary_address(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        user = request.match_info["user"]
        address = str(body.get("address") or "")
        return self._user_change(
            lambda: directory_admin.change_primary_address(self.t.state, user, address)
        )

    async def set_manager(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        user = request.match_info["user"]
        manager = body.get("manager")
        return self._user_change(
            lambda: directory_admin.set_manager(
                self.t.state, user, None if manager is None else str(manager)
            )
        )

    async def get_directory_delta(self, request: web.Request) -> web.Response:
        return web.json_response(asdict(self.t.state.directory_delta))

    async def patch_directory_delta(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        try:
            settings = DirectoryDeltaSettings(**{**asdict(self.t.state.directory_delta), **body})
        except TypeError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from exc
        if settings.expiry not in ("bad_request", "gone", "resync_required"):
            raise web.HTTPBadRequest(text=f"unknown expiry {settings.expiry!r}")
        self.t.state.directory_delta = settings
        return web.json_response(asdict(settings))

    async def expire_directory_delta(self, request: web.Request) -> web.Response:
        tokens = self.t.state.directory_delta_tokens
        expired = len(tokens)
        tokens.clear()
        return web.json_response({"expired": expired})

    async def put_policy(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        try:
            self.t.set_access_policy(
                request.match_info["app"], body.get("scopeGroupId"), frozen=body.get("frozen")
            )
        except KeyError as exc:
            raise web.HTTPNotFound(text="no such policy") from exc
        return web.Response(status=204)

    async def propagate(self, request: web.Request) -> web.Response:
        try:
            self.t.propagate_access_policy(request.match_info["app"])
        except KeyError as exc:
            raise web.HTTPNotFound(text="no such policy") from exc
        return web.Response(status=204)

    async def expire_delta(self, request: web.Request) -> web.Response:
        return web.json_response({"expired": self.t.expire_delta_tokens()})

    async def grant(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        try:
            self.t.grant_role(request.match_info["app"], body["resource"], body["role"])
        except KeyError as exc:
            raise web.HTTPNotFound(text=f"unknown {exc}") from exc
        return web.Response(status=204)

    async def revoke(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        try:
            self.t.revoke_role(request.match_info["app"], body["resource"], body["role"])
        except KeyError as exc:
            raise web.HTTPNotFound(text=f"unknown {exc}") from exc
        return web.Response(status=204)

    async def exchange_roles(self, request: web.Request) -> web.Response:
        """The Exchange management roles and role groups assigned to an app (not its app roles)."""
        app_id = request.match_info["app"]
        if self.t.state.service_principal_for(app_id) is None:
            raise web.HTTPNotFound(text=f"unknown app {app_id}")
        return web.json_response({"roles": sorted(self.t.exchange.roles_of(app_id))})

    async def assign_exchange_role(self, request: web.Request) -> web.Response:
        return await self._change_exchange_role(request, self.t.exchange.assign_role)

    async def remove_exchange_role(self, request: web.Request) -> web.Response:
        return await self._change_exchange_role(request, self.t.exchange.remove_role)

    async def _change_exchange_role(
        self, request: web.Request, change: Callable[[str, str], None]
    ) -> web.Response:
        body = await self._json(request)
        try:
            change(request.match_info["app"], str(body["role"]))
        except KeyError as exc:
            raise web.HTTPNotFound(text=f"unknown {exc}") from exc
        except ValueError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from exc
        return web.Response(status=204)

    async def add_certificate(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        try:
            cert = x509.load_pem_x509_certificate(str(body["pem"]).encode())
            credential = self.t.register_certificate(
                request.match_info["app"], cert, body.get("displayName")
            )
        except (KeyError, ValueError) as exc:
            raise web.HTTPBadRequest(text=str(exc)) from exc
        return web.json_response(credential.to_graph(), status=201)

    async def add_secret(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        try:
            credential = self.t.add_secret(
                request.match_info["app"],
                str(body["value"]),
                end_days=float(body.get("endDays", 365)),
                display_name=body.get("displayName"),
            )
        except KeyError as exc:
            raise web.HTTPNotFound(text=f"unknown {exc}") from exc
        return web.json_response(
            {**credential.to_graph(), "endDateTime": iso(credential.end)}, status=201
        )

    async def generate(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        self.t.add_generated_apps(int(body.get("count", 0)))
        return web.json_response(self.t.state.summary())

    async def token(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        try:
            token = self.t.mint_access_token(
                str(body["appId"]), str(body.get("resource", "https://graph.microsoft.com"))
            )
        except KeyError as exc:
            raise web.HTTPNotFound(text=f"unknown {exc}") from exc
        return web.json_response({"access_token": token})

    async def channel_token(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        try:
            token = self.t.mint_channel_token(
                body.get("audience"),
                service_url=body.get("serviceUrl", "https://smba.trafficmanager.net/teams/"),
                flavour=body.get("flavour", "valid"),
            )
        except ValueError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from exc
        return web.json_response({"token": token})

    async def lifecycle(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        try:
            self.t.send_lifecycle_event(request.match_info["sub"], str(body.get("event")))
        except KeyError as exc:
            raise web.HTTPNotFound(text="unknown subscription") from exc
        except ValueError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from exc
        return web.Response(status=202)

    async def notifications(self, request: web.Request) -> web.Response:
        return web.json_response([d.to_json() for d in self.t.subscriptions.deliveries])
