"""Building the ticket workflow from settings and connectors.

The workflow writes every notification to the durable outbox. Delivering the outbox to Teams is
the bot's job (its proactive messaging); until it is wired, messages wait in the outbox rather
than being dropped.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from syncwarden.bot.card_posts import CardPostStore
from syncwarden.bot.conversations import ConversationStore
from syncwarden.bot.teams_delivery import TeamsDelivery
from syncwarden.connectors.clouds import resolve_endpoints
from syncwarden.connectors.http import create_http_client
from syncwarden.connectors.scheduling.builtin import BuiltinScheduling
from syncwarden.connectors.scheduling.builtin_appointments import BuiltinAppointments
from syncwarden.connectors.scheduling.ics_source import IcsFeedSource
from syncwarden.connectors.scheduling.ports import AppointmentSource
from syncwarden.connectors.scheduling.sql_source import SqlSource
from syncwarden.connectors.tokens import MsalTokenProvider
from syncwarden.core.db import utc_now
from syncwarden.core.settings import (
    GraphSettings,
    SchedulingAdapter,
    ScimDecision,
    Settings,
    SyncSource,
)
from syncwarden.m365 import Microsoft365
from syncwarden.scim.catch_up import UnassignedCatchUp
from syncwarden.sync.alerts import SyncAlerts
from syncwarden.sync.credential_watch import CredentialWatch
from syncwarden.sync.drift_desk import DriftDesk
from syncwarden.sync.engine import SyncEngine
from syncwarden.sync.reconcile import MappingSource, Reconciler
from syncwarden.sync.subscriptions import MailboxSubscriptions
from syncwarden.sync.worker import SyncWorker
from syncwarden.workflows.handlers import ProvisioningHandlers
from syncwarden.workflows.instructions import InstructionsTemplate
from syncwarden.workflows.outbox import OutboxNotifier
from syncwarden.workflows.outbox_dispatch import OutboxDispatcher
from syncwarden.workflows.provisioning import ProvisioningIntake
from syncwarden.workflows.repairs import AccessRepairs
from syncwarden.workflows.roster import Roster
from syncwarden.workflows.runner import StepRunner
from syncwarden.workflows.service import WorkflowService
from syncwarden.workflows.unit_of_work import UnitsOfWork

BOT_FRAMEWORK_SCOPE = "https://api.botframework.com/.default"
GRAPH_NOTIFICATIONS_PATH = "/api/graph/notifications"


@dataclass
class CalendarSync:
    worker: SyncWorker
    alerts: SyncAlerts
    # The built-in table (import target); ``source`` is what the engine reads, per settings.
    appointments: BuiltinAppointments
    subscriptions: MailboxSubscriptions
    source: AppointmentSource
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def aclose(self) -> None:
        for close in self.closers:
            await close()


@dataclass
class Workflows:
    service: WorkflowService
    runner: StepRunner
    outbox: OutboxNotifier
    scheduling: BuiltinScheduling
    roster: Roster
    credentials: CredentialWatch
    sync: CalendarSync
    reconciler: Reconciler
    drift: DriftDesk
    provisioning: ProvisioningIntake
    unassigned_catch_up: UnassignedCatchUp


def build_workflows(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    m365: Microsoft365,
    *,
    on_notification: Callable[[], None] | None = None,
) -> Workflows | None:
    """The workflow, or None when there is no sync group to provision into."""
    if m365.sync_group is None:
        return None
    scheduling = BuiltinScheduling(
        sessions,
        writes_mappings=settings.provisioning.scheduling_adapter is SchedulingAdapter.BUILTIN,
    )
    outbox = OutboxNotifier(sessions, on_put=on_notification)
    units = UnitsOfWork(sessions, on_queued=_awaitable(on_notification))
    roster = Roster(m365.directory, settings.approvals)
    handlers = ProvisioningHandlers(
        directory=m365.directory,
        calendar=m365.calendar,
        group=m365.sync_group,
        scheduling=scheduling,
        notifier=outbox,
        instructions=InstructionsTemplate(
            settings.provisioning.instructions_template, settings.provisioning.help_article_url
        ),
    )
    runner = StepRunner(units, handlers.as_mapping(), settings.provisioning)
    service = WorkflowService(
        units,
        directory=m365.cached_directory,  # form and request checks; provisioning reads fresh
        scheduling=scheduling,
        roster=roster,
        approvals=settings.approvals,
        provisioning=settings.provisioning,
        on_steps_queued=runner.wake,
        access=settings.access,
        reviews=settings.reviews,
        managers=m365.directory_changes,
        fresh_directory=m365.directory,
    )
    credentials = build_credential_watch(settings, units, m365)
    sync = build_calendar_sync(settings, units, m365)
    reconciler = build_reconciler(settings, units, m365, scheduling, service.repairs)
    drift = DriftDesk(
        units,
        service.repairs,
        roster,
        reconciler=reconciler,
        shown=settings.reconcile.card_findings,
    )
    provisioning = ProvisioningIntake(
        units,
        directory=m365.directory,  # what the identity provider asks is read fresh
        scheduling=scheduling,
        approvals=settings.approvals,
        provisioning=settings.provisioning,
        assignment_decides=settings.scim.decision is ScimDecision.ENROLL,
        clock=utc_now,
        on_steps_queued=runner.wake,
    )
    return Workflows(
        service,
        runner,
        outbox,
        scheduling,
        roster,
        credentials,
        sync,
        reconciler,
        drift,
        provisioning,
        UnassignedCatchUp(sessions, provisioning),
    )


def build_reconciler(
    settings: Settings,
    units: UnitsOfWork,
    m365: Microsoft365,
    mappings: MappingSource,
    repairs: AccessRepairs,
) -> Reconciler:
    """Access reconciliation of the sync group against enrollments, mappings and directory,
    with the fixes policy makes by itself (leavers, movers) carried out as tickets."""
    return Reconciler(
        units,
        m365.directory_changes,
        m365.directory,
        mappings,
        group_id=settings.graph.sync_group_id or "",
        repairs=repairs,
        settings=settings.reconcile,
    )


def _awaitable(call: Callable[[], None] | None) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        if call is not None:
            call()

    return run


def build_calendar_sync(settings: Settings, units: UnitsOfWork, m365: Microsoft365) -> CalendarSync:
    """The sync worker on the configured appointment source, with IT alerts on failures."""
    sessions = units.sessions
    appointments = BuiltinAppointments(sessions)
    source, closers = appointment_source(settings, appointments, sessions)
    engine = SyncEngine(sessions, m365.calendar, source, settings.sync)
    alerts = SyncAlerts(units, digest_minutes=settings.sync.failure_digest_minutes)
    worker = SyncWorker(
        sessions,
        engine,
        settings.sync,
        min_gap=timedelta(minutes=settings.scheduler.sync_interval_minutes / 2),
        on_report=alerts.after_run,
    )
    subscriptions = MailboxSubscriptions(
        sessions, m365.subscriptions, notification_url(settings), worker.request_mailbox
    )
    return CalendarSync(worker, alerts, appointments, subscriptions, source, closers)


def appointment_source(
    settings: Settings,
    builtin: BuiltinAppointments,
    sessions: async_sessionmaker[AsyncSession],
) -> tuple[AppointmentSource, list[Callable[[], Awaitable[None]]]]:
    """The configured source, and what must be closed with it."""
    sync = settings.sync
    if sync.source is SyncSource.ICS and sync.ics_url_template:
        http = create_http_client(extra_ca=settings.graph.ca_bundle, max_connections=16)
        feeds = IcsFeedSource(
            sessions,
            http,
            sync.ics_url_template.get_secret_value(),
            default_zone=sync.source_time_zone,
        )
        return feeds, [http.aclose]
    if sync.source is SyncSource.SQL and sync.sql_url and sync.sql_query:
        engine = create_async_engine(sync.sql_url.get_secret_value(), pool_pre_ping=True)
        table = SqlSource(
            engine, sync.sql_query, columns=sync.sql_columns, default_zone=sync.source_time_zone
        )
        return table, [engine.dispose]
    return builtin, []


def notification_url(settings: Settings) -> str | None:
    """Where Graph should post change notifications; None turns subscriptions off."""
    if settings.sync.notification_url:
        return settings.sync.notification_url
    if settings.bot.public_host:
        return f"https://{settings.bot.public_host}{GRAPH_NOTIFICATIONS_PATH}"
    return None


def build_credential_watch(
    settings: Settings, units: UnitsOfWork, m365: Microsoft365
) -> CredentialWatch:
    """The credential watch; Syncwarden's own Graph and bot apps are always among the watched."""
    own = [settings.graph.client_id or "", settings.bot.app_id or ""]
    return CredentialWatch(m365.applications, units, settings.alerts, own_app_ids=own)


class BotTokens:
    """Tokens for the Bot Framework connector; none in sandbox mode (anonymous connector)."""

    def __init__(self, settings: Settings) -> None:
        self._provider: MsalTokenProvider | None = None
        bot = settings.bot
        if not settings.anonymous_bot_auth and bot.app_id:
            credentials = GraphSettings(
                tenant_id=bot.tenant_id,
                client_id=bot.app_id,
                client_secret=bot.client_secret,
                certificate_path=bot.certificate_path,
                managed_identity=bot.managed_identity,
                cloud=settings.graph.cloud,
                # One login host per deployment: a proxy or test tenant set for Graph serves both.
                login_url=settings.graph.login_url,
                ca_bundle=settings.graph.ca_bundle,
            )
            self._provider = MsalTokenProvider(
                credentials, resolve_endpoints(credentials, settings.exchange)
            )

    @property
    def anonymous(self) -> bool:
        return self._provider is None

    async def bot_token(self, *, fresh: bool = False) -> str | None:
        """A token for the Bot Framework; ``fresh`` skips every cache (the doctor's proof)."""
        if self._provider is None:
            return None
        if fresh:
            self._provider.invalidate(BOT_FRAMEWORK_SCOPE)
        return await self._provider.get_token(BOT_FRAMEWORK_SCOPE)


def build_teams_delivery(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    http: httpx.AsyncClient,
    *,
    m365: Microsoft365 | None = None,
) -> tuple[OutboxDispatcher, ConversationStore]:
    """The outbox dispatcher that delivers to Teams, and the conversation store it writes with.

    With ``m365``, a person with no chat with the bot gets the Teams app installed for them
    through Graph (the manifest id is the bot's app id); without it they stay undeliverable.
    """
    conversations = ConversationStore(sessions)
    delivery = TeamsDelivery(
        http,
        BotTokens(settings),
        conversations,
        CardPostStore(sessions),
        installer=m365.teamwork if m365 is not None else None,
        teams_app_id=settings.bot.app_id,
    )
    return OutboxDispatcher(sessions, delivery), conversations
