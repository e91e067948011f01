"""The sandbox tenant as one HTTPS server, and the Python API tests drive it with.

One host serves every protocol (Entra, Graph, Exchange, Bot Framework, admin), told apart by
path, so a client needs a single base URL and a single CA bundle.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography import x509
from multidict import CIMultiDict

from syncwarden.sandbox.botframework import BotFrameworkFront
from syncwarden.sandbox.ca import TlsMaterial, create_tls_material
from syncwarden.sandbox.context import Context
from syncwarden.sandbox.entra import EntraFront, register_certificate
from syncwarden.sandbox.exchange import ExchangeFront
from syncwarden.sandbox.graph_apps import AppsFront
from syncwarden.sandbox.graph_batch import run_batch
from syncwarden.sandbox.graph_core import (
    DropError,
    GraphPipeline,
    GraphRequest,
    GraphResponse,
    HangError,
    error_body,
    parse_json,
)
from syncwarden.sandbox.graph_events import EventsFront
from syncwarden.sandbox.graph_groups import GroupsFront
from syncwarden.sandbox.graph_subscriptions import SubscriptionsFront
from syncwarden.sandbox.graph_teamwork import TeamworkFront
from syncwarden.sandbox.graph_users import UsersFront
from syncwarden.sandbox.knobs import Behaviour, FaultRule, Knobs, RequestRecord
from syncwarden.sandbox.odata import GraphError
from syncwarden.sandbox.seed import DEFAULT_SEED, SeedInfo, generate_apps, load_seed
from syncwarden.sandbox.state import KeyCredential, PasswordCredential, TenantState, User, new_id


class SandboxTenant:
    """A running sandbox: ``async with SandboxTenant.start(...) as tenant``."""

    def __init__(self, ctx: Context, tls: TlsMaterial) -> None:
        self.ctx = ctx
        self.tls = tls
        self.entra = EntraFront(ctx)
        self.bot = BotFrameworkFront(ctx)
        self.exchange = ExchangeFront(ctx, self.entra)
        self.events = EventsFront(ctx)
        self.subscriptions = SubscriptionsFront(ctx)
        self.pipeline = GraphPipeline(ctx, self.entra.verify_access_token)
        self.pipeline.add(UsersFront(ctx).routes())
        self.pipeline.add(GroupsFront(ctx).routes())
        self.pipeline.add(AppsFront(ctx).routes())
        self.pipeline.add(self.events.routes())
        self.pipeline.add(self.subscriptions.routes())
        self.pipeline.add(TeamworkFront(ctx).routes())
        self._runner: web.AppRunner | None = None

    # ------------------------------------------------------------ lifecycle

    @classmethod
    @asynccontextmanager
    async def start(
        cls,
        seed_path: Path | str = DEFAULT_SEED,
        state_dir: Path | str | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        extra_apps: int | None = None,
        latency_ms: float = 0.0,
        mailbox_concurrency: int = 4,
        mailbox_budget: int | None = None,
        mailbox_budget_window_s: float = 600.0,
        exchange_page_size: int = 1000,
    ) -> AsyncIterator[SandboxTenant]:
        with tempfile.TemporaryDirectory(prefix="sandbox-") as scratch:
            tenant = await cls.launch(
                seed_path,
                Path(state_dir) if state_dir is not None else Path(scratch),
                host=host,
                port=port,
                extra_apps=extra_apps,
                knobs=Knobs(
                    latency_ms=latency_ms,
                    mailbox_concurrency=mailbox_concurrency,
                    mailbox_budget=mailbox_budget,
                    mailbox_budget_window_s=mailbox_budget_window_s,
                    exchange_page_size=exchange_page_size,
                ),
            )
            try:
                yield tenant
            finally:
                await tenant.stop()

    @classmethod
    async def launch(
        cls,
        seed_path: Path | str,
        state_dir: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        extra_apps: int | None = None,
        knobs: Knobs | None = None,
    ) -> SandboxTenant:
        state, seed = load_seed(Path(seed_path), extra_apps=extra_apps)
        ctx = Context(state=state, seed=seed, behaviour=Behaviour(knobs=knobs or Knobs()))
        tls = create_tls_material(state_dir)
        tenant = cls(ctx, tls)
        from syncwarden.sandbox.admin import AdminApi

        app = web.Application(client_max_size=8 * 1024 * 1024, middlewares=[AdminApi.loopback_only])
        app.add_routes(tenant.entra.routes())
        app.add_routes(tenant.bot.routes())
        app.add_routes(tenant.exchange.routes())
        app.add_routes(AdminApi(tenant).routes())
        app.router.add_route("*", "/v1.0/{tail:.*}", tenant._graph)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, host, port, ssl_context=tls.server_context())
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.base_events.Server)
        bound = server.sockets[0].getsockname()[1]
        shown = "127.0.0.1" if host in ("0.0.0.0", "127.0.0.1") else host  # noqa: S104
        ctx.base_url = f"https://{shown}:{bound}"
        tenant._runner = runner
        return tenant

    async def stop(self) -> None:
        self.ctx.stopping.set()
        await self.subscriptions.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ------------------------------------------------------------ Graph over HTTP

    async def _graph(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["tail"]
        query: dict[str, str] = {}
        req = GraphRequest(
            method=request.method,
            path=path,
            query=query,
            headers=CIMultiDict(request.headers),
            body=None,
        )
        try:
            for name, value in request.query.items():
                if name in query:
                    raise GraphError(
                        400, "BadRequest", f"Query option '{name}' was specified more than once."
                    )
                query[name] = value
            req.body = parse_json(await request.read())
            if path.lower() == "/$batch" and request.method == "POST":
                response = await self._batch(req)
            else:
                response = await self.pipeline.dispatch(req)
        except GraphError as err:
            response = GraphResponse(
                err.status, error_body(err, req.request_id, req.client_request_id)
            )
        except HangError as hang:
            await self._hang(hang.rule)
            response = GraphResponse(
                504,
                error_body(
                    GraphError(504, "GatewayTimeout", "The request timed out."),
                    req.request_id,
                    req.client_request_id,
                ),
            )
        except DropError:
            if request.transport is not None:
                request.transport.abort()
            raise ConnectionResetError("sandbox fault: connection dropped") from None
        headers = {
            **response.headers,
            "request-id": req.request_id,
            "client-request-id": req.client_request_id,
            "x-ms-ags-diagnostic": '{"ServerInfo":{"DataCenter":"Sandbox","Slice":"E","Ring":"0"}}',
        }
        if response.body is None:
            return web.Response(status=response.status, headers=headers)
        return web.json_response(response.body, status=response.status, headers=headers)

    async def _batch(self, req: GraphRequest) -> GraphResponse:
        record = RequestRecord("POST", "/$batch", "", None, dt.datetime.now(dt.UTC).timestamp())
        self.ctx.behaviour.record(record)
        try:
            self.pipeline.authenticate(req)
            response = await run_batch(self.pipeline, req)
        except GraphError as refused:
            record.status = refused.status  # the request log shows refused batches too
            raise
        finally:
            record.ended = dt.datetime.now(dt.UTC).timestamp()
        record.status = response.status
        return response

    async def _hang(self, rule: FaultRule) -> None:
        try:
            await asyncio.wait_for(self.ctx.stopping.wait(), rule.hang_seconds)
        except TimeoutError:
            return

    # ------------------------------------------------------------ Python API

    @property
    def base_url(self) -> str:
        return self.ctx.base_url

    @property
    def ca_path(self) -> Path:
        return self.tls.ca_path

    @property
    def tenant_id(self) -> str:
        return self.ctx.state.tenant_id

    @property
    def seed(self) -> SeedInfo:
        return self.ctx.seed

    @property
    def state(self) -> TenantState:
        return self.ctx.state

    @property
    def knobs(self) -> Knobs:
        return self.ctx.behaviour.knobs

    @property
    def requests(self) -> list[RequestRecord]:
        return self.ctx.behaviour.log

    @property
    def max_in_flight(self) -> dict[str, int]:
        return dict(self.ctx.behaviour.max_in_flight)

    def authority(self) -> str:
        return f"{self.base_url}/{self.tenant_id}"

    def set_knobs(self, **values: Any) -> Knobs:
        self.knobs.update(values)
        return self.knobs

    def add_fault(self, path: str, **options: Any) -> FaultRule:
        return self.ctx.behaviour.add_fault(FaultRule(path=path, **options))

    def clear_faults(self) -> None:
        self.ctx.behaviour.clear_faults()

    async def wait_for_request(self, matches: Callable[[RequestRecord], bool]) -> RequestRecord:
        """Wait (without polling) until a request ``matches`` accepts has arrived."""
        return await self.ctx.behaviour.wait_for(matches)

    def clear_requests(self) -> None:
        self.ctx.behaviour.reset_counters()

    def group_member_ids(self, group_id: str) -> list[str]:
        group = self.state.group(group_id)
        if group is None:
            raise KeyError(group_id)
        return list(group.members)

    def add_group_member(self, group_id: str, member: str) -> None:
        group = self.state.group(group_id)
        user = self.state.recipient(member)
        target = user.id if user is not None else member
        if group is None or (user is None and member not in self.state.groups):
            raise KeyError(group_id if group is None else member)
        self.state.add_members(group, [target])

    def remove_group_member(self, group_id: str, member: str) -> bool:
        group = self.state.group(group_id)
        user = self.state.recipient(member)
        if group is None:
            raise KeyError(group_id)
        return self.state.remove_member(group, user.id if user is not None else member)

    def add_user(self, **fields: Any) -> User:
        upn = fields["userPrincipalName"]
        user = User(
            id=fields.pop("id", None) or new_id(),
            displayName=fields.pop("displayName", upn.split("@")[0]),
            userPrincipalName=fields.pop("userPrincipalName"),
            has_mailbox=fields.pop("hasMailbox", True),
            **fields,
        )
        if user.mail is None and user.has_mailbox:
            user.mail = user.userPrincipalName
            user.proxyAddresses = user.proxyAddresses or [f"SMTP:{user.userPrincipalName}"]
        self.state.users[user.id] = user
        return user

    def remove_user(self, user_id: str) -> None:
        self.state.users.pop(user_id, None)
        for group in self.state.groups.values():
            if user_id in group.members:
                group.members.remove(user_id)

    def set_access_policy(
        self, app_id: str, scope_group_id: str | None = None, *, frozen: bool | None = None
    ) -> None:
        """Change the scope group; ``frozen`` snapshots who is allowed (propagation lag)."""
        from syncwarden.sandbox.state import AccessPolicy

        policy = self.state.access_policies.get(app_id)
        if policy is None:
            if scope_group_id is None:
                raise KeyError(app_id)
            policy = self.state.access_policies[app_id] = AccessPolicy(app_id, scope_group_id)
        if scope_group_id is not None and frozen is not True:
            policy.scope_group_id = scope_group_id
        if frozen is True:
            policy.propagated = self._allowed(policy.app_id)
            if scope_group_id is not None:
                policy.scope_group_id = scope_group_id
        elif frozen is False:
            policy.propagated = None

    def _allowed(self, app_id: str) -> set[str]:
        return {u for u in self.state.users if self.state.mailbox_allowed(app_id, u, live=True)}

    def propagate_access_policy(self, app_id: str) -> None:
        policy = self.state.access_policies[app_id]
        if policy.propagated is not None:
            policy.propagated = self._allowed(app_id)

    def remove_access_policy(self, app_id: str) -> None:
        self.state.access_policies.pop(app_id, None)

    def expire_delta_tokens(self) -> int:
        return self.events.expire_delta_tokens()

    def grant_role(self, app_id: str, resource: str, role: str) -> None:
        sp = self.state.service_principal_for(app_id)
        if sp is None:
            raise KeyError(app_id)
        sp.roles.setdefault(resource, set()).add(role)

    def revoke_role(self, app_id: str, resource: str, role: str) -> None:
        sp = self.state.service_principal_for(app_id)
        if sp is None:
            raise KeyError(app_id)
        sp.roles.get(resource, set()).discard(role)

    def register_certificate(
        self, app_id: str, cert: x509.Certificate, display_name: str | None = None
    ) -> KeyCredential:
        return register_certificate(self.ctx, app_id, cert, display_name)

    def add_secret(
        self, app_id: str, value: str, *, end_days: float = 365, display_name: str | None = None
    ) -> PasswordCredential:
        app = self.state.application_for(app_id)
        if app is None:
            raise KeyError(app_id)
        now = dt.datetime.now(dt.UTC)
        credential = PasswordCredential(
            keyId=new_id(),
            displayName=display_name,
            start=now - dt.timedelta(days=1)
            if end_days > 0
            else now + dt.timedelta(days=end_days - 30),
            end=now + dt.timedelta(days=end_days),
            secret=value,
        )
        app.passwords.append(credential)
        return credential

    def add_generated_apps(self, count: int) -> None:
        generate_apps(self.state, count, dt.datetime.now(dt.UTC))

    @property
    def identity_endpoint(self) -> tuple[str, str]:
        """(IDENTITY_ENDPOINT, IDENTITY_HEADER) for code using a managed identity."""
        return f"{self.base_url}/msi/token", self.ctx.identity_header

    def mint_access_token(self, app_id: str, resource: str = "https://graph.microsoft.com") -> str:
        sp = self.state.service_principal_for(app_id)
        if sp is None:
            raise KeyError(app_id)
        return self.entra.mint_access_token(sp, resource)

    def mint_channel_token(
        self,
        audience: str | None = None,
        *,
        service_url: str = "https://smba.trafficmanager.net/teams/",
        flavour: str = "valid",
    ) -> str:
        return self.bot.mint(
            audience or self.seed.app_ids["Syncwarden Bot"],
            service_url=service_url,
            flavour=flavour,
        )

    def botframework_openid_url(self) -> str:
        return f"{self.base_url}/botframework/v1/.well-known/openidconfiguration"

    def send_lifecycle_event(self, subscription_id: str, event: str) -> None:
        self.subscriptions.lifecycle(subscription_id, event)

    async def drain_notifications(self) -> None:
        await self.subscriptions.drain()
