"""The SCIM door over the workflow harness: the real app (middlewares and all) on a live port."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select

from syncwarden.core.settings import Mode, Settings
from syncwarden.scim.endpoint import ScimEndpoint
from syncwarden.scim.records import ScimUser
from syncwarden.scim.tokens import ScimTokens
from syncwarden.web import create_app
from syncwarden.workflows.audit import AuditEvent
from syncwarden.workflows.provisioning import ProvisioningIntake
from syncwarden.workflows.records import Enrollment, Ticket
from tests.support.notifier import recording_units
from tests.support.workflow import Harness

WebClient = TestClient[web.Request, web.Application]
USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
ENTERPRISE_SCHEMA = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"


@dataclass
class ScimHarness:
    h: Harness
    client: WebClient
    token: str
    intake: ProvisioningIntake

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        response = await self.client.request(
            method,
            "/scim/v2" + path,
            json=body,
            params=params,
            headers=self.auth if headers is None else headers,
        )
        text = await response.text()
        return response.status, (json.loads(text) if text else None)

    async def tokens_valid(self) -> int:
        return sum(1 for t in await ScimTokens(self.h.sessions).listing() if t.revoked_at is None)

    async def tickets(self) -> list[Ticket]:
        async with self.h.sessions() as session:
            return list((await session.scalars(select(Ticket).order_by(Ticket.id))).all())

    async def enrollments(self) -> list[Enrollment]:
        async with self.h.sessions() as session:
            rows = await session.scalars(select(Enrollment).order_by(Enrollment.id))
            return list(rows.all())

    async def scim_users(self) -> list[ScimUser]:
        async with self.h.sessions() as session:
            return list((await session.scalars(select(ScimUser).order_by(ScimUser.id))).all())

    async def audit(self, action: str) -> list[AuditEvent]:
        async with self.h.sessions() as session:
            rows = await session.scalars(
                select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)
            )
            return list(rows.all())


def user_body(upn: str, *, active: bool = True, external_id: str | None = None) -> dict[str, Any]:
    """A create as Entra ID sends it (the tutorial's Create User request, with our person)."""
    given, family = upn.split("@")[0].split(".", 1)
    return {
        "schemas": [USER_SCHEMA, ENTERPRISE_SCHEMA],
        "externalId": external_id or upn.split("@")[0],
        "userName": upn,
        "active": active,
        "emails": [{"primary": True, "type": "work", "value": upn}],
        "meta": {"resourceType": "User"},
        "name": {
            "formatted": f"{given.title()} {family.title()}",
            "familyName": family.title(),
            "givenName": given.title(),
        },
        "roles": [],
    }


def patch(*operations: dict[str, Any]) -> dict[str, Any]:
    return {"schemas": [PATCH_SCHEMA], "Operations": list(operations)}


@asynccontextmanager
async def scim_harness(
    h: Harness,
    *,
    decision: str = "enroll",
    pilot_cap: int = 10,
    https_only: bool = False,
    monotonic: Callable[[], float] = time.monotonic,
    **scim: Any,
) -> AsyncIterator[ScimHarness]:
    settings = Settings.model_validate(
        {
            "mode": Mode.SANDBOX,
            "scim": {"enabled": True, "decision": decision, "pilot_cap": pilot_cap, **scim},
        }
    )
    intake = ProvisioningIntake(
        recording_units(h.sessions, h.notifier, clock=h.clock),
        directory=h.m365.directory,
        scheduling=h.scheduling,
        approvals=h.approvals,
        provisioning=h.provisioning,
        assignment_decides=decision == "enroll",
        clock=h.clock,
        on_steps_queued=h.runner.wake,
    )
    endpoint = ScimEndpoint(
        settings.scim, h.sessions, intake, https_only=https_only, monotonic=monotonic
    )
    app = create_app(settings, h.engine, scim=endpoint)
    client: WebClient = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    token = (await ScimTokens(h.sessions).new()).secret
    try:
        yield ScimHarness(h, client, token, intake)
    finally:
        await client.close()
