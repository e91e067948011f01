"""``syncwarden doctor`` against the sandbox tenant: green on the default set-up, and the right
failure (with its fix) for each way a real tenant is commonly misconfigured."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from syncwarden.bot.conversations import (
    ChannelRole,
    ConversationKind,
    ConversationRef,
    ConversationStore,
)
from syncwarden.core.db import create_engine, session_factory
from syncwarden.doctor import Check, Doctor, DoctorReport, Verdict
from syncwarden.m365 import build_microsoft365
from syncwarden.migrate import upgrade_to_head
from syncwarden.sandbox.server import SandboxTenant
from syncwarden.workflow_wiring import BotTokens
from tests.integration.test_cli import run
from tests.support.m365 import SYNCWARDEN_APP, sandbox_settings

GRAPH = "https://graph.microsoft.com"
EXCHANGE = "https://outlook.office365.com"
BOT_APP = "Syncwarden Bot"
IN_GROUP = "avery.quinlan@example.edu"
OUTSIDE_GROUP = "sasha.verhoeven@example.edu"

RunDoctor = Callable[..., Awaitable[DoctorReport]]


def doctor_settings(tenant: SandboxTenant, **overrides: Any) -> dict[str, Any]:
    """The default sandbox set-up, as an administrator would configure it, plus ``overrides``."""
    groups = tenant.seed.group_ids
    graph = {
        "sync_group_id": groups["Calendar Sync"],
        "test_mailbox": IN_GROUP,
        **overrides.pop("graph", {}),
    }
    return {
        "graph": graph,
        "approvals": {
            "approvers_group_id": groups["Calendar Sync Approvers"],
            "it_admins_group_id": groups["IT Admins"],
            **overrides.pop("approvals", {}),
        },
        "bot": {
            "app_id": tenant.seed.app_ids[BOT_APP],
            "tenant_id": tenant.tenant_id,
            "client_secret": tenant.seed.secret_for(BOT_APP),
            **overrides.pop("bot", {}),
        },
        **overrides,
    }


async def set_channels(engine: AsyncEngine, *roles: ChannelRole) -> None:
    store = ConversationStore(session_factory(engine))
    for role in roles:
        conversation_id = f"19:{role.value}@thread.tacv2"
        await store.remember(
            ConversationRef(
                conversation_id,
                ConversationKind.CHANNEL,
                "https://smba.example.test/",
                "t",
                "28:bot",
            )
        )
        await store.assign_role(conversation_id, role)


@pytest.fixture
async def run_doctor(
    tenant: SandboxTenant, migrated_engine: AsyncEngine
) -> AsyncIterator[RunDoctor]:
    await set_channels(migrated_engine, ChannelRole.IT, ChannelRole.APPROVALS)
    closers: list[Callable[[], Awaitable[None]]] = []

    async def go(engine: AsyncEngine = migrated_engine, **overrides: Any) -> DoctorReport:
        settings = sandbox_settings(tenant, **doctor_settings(tenant, **overrides))
        m365 = build_microsoft365(settings)
        closers.append(m365.aclose)
        doctor = Doctor(settings, engine, session_factory(engine), m365, BotTokens(settings))
        return await doctor.run()

    yield go
    for close in closers:
        await close()


def by_name(report: DoctorReport) -> dict[str, Check]:
    return {check.name: check for check in report.checks}


async def test_default_sandbox_passes_every_check(run_doctor: RunDoctor) -> None:
    report = await run_doctor()

    assert report.ok, "\n".join(check.line() for check in report.checks)
    checks = by_name(report)
    assert all(check.verdict is Verdict.PASS for check in report.checks), [
        c.line() for c in report.checks
    ]
    assert set(checks) == {
        "settings",
        "database",
        "graph token",
        "graph permissions",
        "sync group",
        "exchange token",
        "exchange group access",
        "test mailbox",
        "access policy",
        "approvers",
        "IT admins",
        "IT channel",
        "approvals channel",
        "bot credentials",
        "teams app",
    }
    assert "through Exchange Online" in checks["sync group"].detail
    assert "Granted" in checks["access policy"].detail
    assert checks["approvers"].detail == "2 people"


async def test_a_missing_graph_permission_is_named_with_how_to_grant_it(
    tenant: SandboxTenant, run_doctor: RunDoctor
) -> None:
    tenant.revoke_role(tenant.seed.app_ids[SYNCWARDEN_APP], GRAPH, "GroupMember.ReadWrite.All")

    report = await run_doctor()

    assert not report.ok
    permissions = by_name(report)["graph permissions"]
    assert permissions.verdict is Verdict.FAIL
    assert permissions.detail == "missing GroupMember.ReadWrite.All"
    assert permissions.fix is not None
    assert "GroupMember.ReadWrite.All" in permissions.fix and "admin consent" in permissions.fix


@pytest.mark.parametrize(
    "permission", ["TeamsAppInstallation.ReadWriteForUser.All", "AppCatalog.Read.All"]
)
async def test_the_permissions_to_install_the_teams_app_are_checked(
    tenant: SandboxTenant, run_doctor: RunDoctor, permission: str
) -> None:
    """Without them a person who never opened the app cannot get their card."""
    tenant.revoke_role(tenant.seed.app_ids[SYNCWARDEN_APP], GRAPH, permission)

    checks = by_name(await run_doctor())

    assert checks["graph permissions"].verdict is Verdict.FAIL
    assert checks["graph permissions"].detail == f"missing {permission}"
    teams_app = checks["teams app"]
    if permission == "AppCatalog.Read.All":
        assert teams_app.verdict is Verdict.SKIP and permission in teams_app.detail
    else:
        assert teams_app.verdict is Verdict.PASS


async def test_a_teams_app_missing_from_the_catalog_is_named_with_how_to_upload_it(
    tenant: SandboxTenant, run_doctor: RunDoctor
) -> None:
    tenant.state.teams_apps.clear()

    report = await run_doctor()

    teams_app = by_name(report)["teams app"]
    assert not report.ok and teams_app.verdict is Verdict.FAIL
    assert tenant.seed.app_ids[BOT_APP] in teams_app.detail
    assert "Upload new app" in (teams_app.fix or "")


async def test_a_missing_calendar_permission_is_named_not_taken_for_the_access_policy(
    tenant: SandboxTenant, run_doctor: RunDoctor
) -> None:
    """Outlook's 403 for the missing permission has the access policy's code; doctor must not
    send IT to the sync group for it."""
    tenant.revoke_role(tenant.seed.app_ids[SYNCWARDEN_APP], GRAPH, "Calendars.ReadWrite")

    report = await run_doctor()

    checks = by_name(report)
    assert checks["graph permissions"].verdict is Verdict.FAIL
    assert checks["graph permissions"].detail == "missing Calendars.ReadWrite"
    mailbox = checks["test mailbox"]
    assert mailbox.verdict is Verdict.FAIL
    assert "Calendars.ReadWrite" in (mailbox.fix or "")
    assert "sync group" not in (mailbox.fix or "")


async def test_a_missing_exchange_role_fails_only_for_a_mail_enabled_group(
    tenant: SandboxTenant, run_doctor: RunDoctor
) -> None:
    tenant.revoke_role(tenant.seed.app_ids[SYNCWARDEN_APP], EXCHANGE, "Exchange.ManageAsApp")

    mail_enabled = by_name(await run_doctor())
    assert mail_enabled["exchange token"].verdict is Verdict.FAIL
    assert "Exchange.ManageAsApp" in (mail_enabled["exchange token"].fix or "")
    assert mail_enabled["exchange group access"].verdict is Verdict.SKIP

    graph_group = await run_doctor(
        graph={
            "sync_group_id": tenant.seed.group_ids["Calendar Sync (Graph)"],
            "test_mailbox": "kai.nakamura-ellis@example.edu",
        }
    )
    checks = by_name(graph_group)
    assert checks["exchange token"].verdict is Verdict.SKIP
    assert "exchange group access" not in checks
    assert "through Graph" in checks["sync group"].detail


@pytest.mark.parametrize("instead", [None, "Recipient Management"])
async def test_a_missing_exchange_role_is_named_by_the_doctor(
    tenant: SandboxTenant, run_doctor: RunDoctor, instead: str | None
) -> None:
    """The token still has Exchange.ManageAsApp; Exchange's own role is what is missing.

    Without any role that grants the membership cmdlets Exchange refuses them outright; with
    Recipient Management it runs them but hides -BypassSecurityGroupManagerCheck. Either way the
    doctor names the role that grants the switch, not a role that merely manages groups.
    """
    app_id = tenant.seed.app_ids[SYNCWARDEN_APP]
    tenant.exchange.remove_role(app_id, "Security Group Creation and Membership")
    if instead is not None:
        tenant.exchange.assign_role(app_id, instead)

    report = await run_doctor()

    checks = by_name(report)
    assert not report.ok
    assert checks["exchange token"].verdict is Verdict.PASS
    access = checks["exchange group access"]
    assert access.verdict is Verdict.FAIL
    assert "Add-DistributionGroupMember" in access.detail
    assert "Security Group Creation and Membership" in (access.fix or "")
    assert "Organization Management" in (access.fix or "")


async def test_the_group_access_probe_changes_nothing(
    tenant: SandboxTenant, run_doctor: RunDoctor
) -> None:
    group = tenant.seed.group_ids["Calendar Sync"]
    before = tenant.group_member_ids(group)
    tenant.clear_requests()

    report = await run_doctor()

    assert by_name(report)["exchange group access"].verdict is Verdict.PASS
    assert tenant.group_member_ids(group) == before
    writes = [
        r.status
        for r in tenant.requests
        if r.path.endswith("/InvokeCommand") and r.status != 200  # the policy test answers 200
    ]
    assert writes == [404, 404], "both cmdlets ran, and found no such member"


async def test_a_missing_policy_test_role_is_named(
    tenant: SandboxTenant, run_doctor: RunDoctor
) -> None:
    tenant.exchange.remove_role(tenant.seed.app_ids[SYNCWARDEN_APP], "Organization Configuration")

    policy = by_name(await run_doctor())["access policy"]

    assert policy.verdict is Verdict.FAIL
    assert "Test-ApplicationAccessPolicy" in policy.detail
    assert "Organization Configuration" in (policy.fix or "")


async def test_a_missing_group_says_where_to_copy_the_id_from(
    tenant: SandboxTenant, run_doctor: RunDoctor
) -> None:
    missing = str(uuid.uuid4())

    report = await run_doctor(graph={"sync_group_id": missing})

    group = by_name(report)["sync group"]
    assert group.verdict is Verdict.FAIL
    assert group.detail == f"no group with id {missing} in the tenant"
    assert "SYNCWARDEN_GRAPH__SYNC_GROUP_ID" in (group.fix or "")
    assert not report.ok


async def test_a_mailbox_outside_the_access_policy_fails_both_mailbox_checks(
    run_doctor: RunDoctor,
) -> None:
    report = await run_doctor(graph={"test_mailbox": OUTSIDE_GROUP})

    checks = by_name(report)
    assert checks["test mailbox"].verdict is Verdict.FAIL
    assert "ErrorAccessDenied" in checks["test mailbox"].detail
    assert "sync group" in (checks["test mailbox"].fix or "")
    assert checks["access policy"].verdict is Verdict.FAIL
    assert "Denied" in checks["access policy"].detail


async def test_unset_test_mailbox_unknown_people_and_missing_channels_each_say_what_to_set(
    tenant: SandboxTenant, tmp_path: Path, database_url: str
) -> None:
    engine = create_engine(database_url)
    try:
        await upgrade_to_head(engine)
        settings = sandbox_settings(
            tenant,
            **doctor_settings(
                tenant,
                graph={"test_mailbox": None},
                approvals={"approvers_group_id": None, "approvers": ["nobody@example.edu"]},
            ),
        )
        m365 = build_microsoft365(settings)
        try:
            sessions = session_factory(engine)
            report = await Doctor(settings, engine, sessions, m365, BotTokens(settings)).run()
        finally:
            await m365.aclose()
    finally:
        await engine.dispose()

    checks = by_name(report)
    assert "SYNCWARDEN_GRAPH__TEST_MAILBOX" in (checks["test mailbox"].fix or "")
    assert checks["access policy"].verdict is Verdict.SKIP
    assert checks["approvers"].verdict is Verdict.FAIL
    assert checks["approvers"].detail == "nobody resolves"
    assert checks["IT admins"].verdict is Verdict.PASS
    for channel, phrase in (("IT channel", "alerts"), ("approvals channel", "approvals")):
        assert checks[channel].verdict is Verdict.FAIL
        assert f"use this channel for {phrase}" in (checks[channel].fix or "")


async def test_an_unmigrated_database_and_a_wrong_bot_secret_are_reported(
    tmp_path: Path, run_doctor: RunDoctor
) -> None:
    empty = create_engine(f"sqlite+aiosqlite:///{tmp_path}/never-migrated.db")
    try:
        report = await run_doctor(engine=empty, bot={"client_secret": "not-the-secret"})
    finally:
        await empty.dispose()

    checks = by_name(report)
    assert checks["database"].verdict is Verdict.FAIL
    assert "syncwarden migrate" in (checks["database"].fix or "")
    assert checks["IT channel"].verdict is Verdict.SKIP
    assert checks["bot credentials"].verdict is Verdict.FAIL
    assert "client secret is wrong" in checks["bot credentials"].detail
    assert "SYNCWARDEN_BOT__APP_ID" in (checks["bot credentials"].fix or "")


async def test_a_wrong_graph_secret_stops_at_the_token_and_skips_what_depends_on_it(
    run_doctor: RunDoctor,
) -> None:
    report = await run_doctor(graph={"client_secret": "wrong"})

    checks = by_name(report)
    assert checks["graph token"].verdict is Verdict.FAIL
    assert "client secret is wrong" in checks["graph token"].detail
    dependent = ("graph permissions", "sync group", "test mailbox", "approvers")
    assert all(checks[name].verdict is Verdict.SKIP for name in dependent)
    assert report.failures == 1


async def test_the_command_exits_0_when_green_and_1_with_the_fix_when_not(
    tmp_path: Path, tenant: SandboxTenant
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/sw.db"
    engine = create_engine(url)
    try:
        await upgrade_to_head(engine)
        await set_channels(engine, ChannelRole.IT, ChannelRole.APPROVALS)
    finally:
        await engine.dispose()
    groups = tenant.seed.group_ids
    env = {
        "SYNCWARDEN_MODE": "sandbox",
        "SYNCWARDEN_DATABASE__URL": url,
        "SYNCWARDEN_GRAPH__TENANT_ID": tenant.tenant_id,
        "SYNCWARDEN_GRAPH__CLIENT_ID": tenant.seed.app_ids[SYNCWARDEN_APP],
        "SYNCWARDEN_GRAPH__CLIENT_SECRET": tenant.seed.secret_for(SYNCWARDEN_APP),
        "SYNCWARDEN_GRAPH__LOGIN_URL": tenant.base_url,
        "SYNCWARDEN_GRAPH__BASE_URL": f"{tenant.base_url}/v1.0",
        "SYNCWARDEN_EXCHANGE__BASE_URL": tenant.base_url,
        "SYNCWARDEN_GRAPH__CA_BUNDLE": str(tenant.ca_path),
        "SYNCWARDEN_GRAPH__SYNC_GROUP_ID": groups["Calendar Sync"],
        "SYNCWARDEN_GRAPH__TEST_MAILBOX": IN_GROUP,
        "SYNCWARDEN_APPROVALS__APPROVERS_GROUP_ID": groups["Calendar Sync Approvers"],
        "SYNCWARDEN_APPROVALS__IT_ADMINS_GROUP_ID": groups["IT Admins"],
    }

    # The sandbox answers from this event loop, so the CLI runs in a thread meanwhile.
    green = await asyncio.to_thread(run, "doctor", cwd=tmp_path, **env)
    assert green.returncode == 0, green.stdout + green.stderr
    assert "PASS  sync group: 'Calendar Sync'" in green.stdout
    assert "SKIP  bot credentials: anonymous" in green.stdout
    assert green.stdout.rstrip().endswith("checks passed.")

    env["SYNCWARDEN_GRAPH__TEST_MAILBOX"] = OUTSIDE_GROUP
    red = await asyncio.to_thread(run, "doctor", cwd=tmp_path, **env)
    assert red.returncode == 1
    assert "FAIL  test mailbox:" in red.stdout
    assert "      fix: make sure the person is in the sync group" in red.stdout
    assert red.stdout.rstrip().endswith("2 of 15 checks failed.")
