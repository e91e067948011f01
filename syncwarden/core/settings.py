"""Every setting Syncwarden reads, in one typed tree.

Settings come from environment variables prefixed ``SYNCWARDEN_`` (nested groups joined with
``__``, e.g. ``SYNCWARDEN_GRAPH__CLIENT_ID``) and from a ``.env`` file when one is present.
Secrets are ``SecretStr`` so that printing or logging a settings object never shows them.

The mode defaults to production: sandbox mode (anonymous Bot Framework traffic allowed) must be
asked for, and it only ever talks to the sandbox tenant on this machine.

Validation that depends on the *mode* (what production demands) lives in :func:`find_problems`
rather than in pydantic validators: ``syncwarden config check`` must be able to load a broken
configuration and list every problem at once instead of stopping at the first.
"""

from __future__ import annotations

import ipaddress
import re
import string
from enum import StrEnum
from pathlib import Path
from typing import Any, get_args
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

SUPPORTED_DATABASE_DRIVERS = ("sqlite+aiosqlite", "postgresql+asyncpg")
DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///var/syncwarden.db"


class Mode(StrEnum):
    """Whether Syncwarden talks to the sandbox tenant or to a real Microsoft 365 tenant.

    Production is the default; sandbox mode is for the local sandbox tenant only.
    """

    SANDBOX = "sandbox"
    PRODUCTION = "production"


class Cloud(StrEnum):
    """The Microsoft cloud the tenant lives in; it decides the login, Graph and Exchange hosts."""

    GLOBAL = "global"
    US_GOVERNMENT = "usgov"
    CHINA = "china"


class LogFormat(StrEnum):
    AUTO = "auto"
    CONSOLE = "console"
    JSON = "json"


class HttpSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(default=3978, ge=1, le=65535)
    max_body_bytes: int = Field(default=256 * 1024, ge=1024)
    shutdown_timeout_seconds: float = Field(default=30.0, ge=0)
    # Slow clients: a request's head (request line and headers) must arrive within this long of
    # the connection opening or of its first byte; its body within this long of the head.
    header_timeout_seconds: float = Field(default=10.0, gt=0)
    body_timeout_seconds: float = Field(default=30.0, gt=0)
    # An idle kept-alive connection is closed after this long.
    keepalive_timeout_seconds: float = Field(default=75.0, gt=0)
    # Connections open at once; one more is answered 503 and closed at once.
    max_connections: int = Field(default=1000, ge=1)


class BotSettings(BaseModel):
    """The Teams bot's identity (its Entra app registration) and how its tokens are checked."""

    app_id: str | None = None
    tenant_id: str | None = None
    client_secret: SecretStr | None = None
    certificate_path: Path | None = None
    managed_identity: bool = False
    allow_anonymous: bool = False
    # For the Teams app package (`syncwarden manifest build`).
    public_host: str | None = None
    app_version: str = "1.0.0"
    developer_name: str = "Syncwarden"
    website_url: str = "https://example.edu/it/syncwarden"
    privacy_url: str = "https://example.edu/it/syncwarden/privacy"
    terms_url: str = "https://example.edu/it/syncwarden/terms"

    @property
    def has_credential(self) -> bool:
        return bool(self.client_secret or self.certificate_path or self.managed_identity)


class GraphSettings(BaseModel):
    """The app registration Syncwarden uses to call Microsoft Graph (and Exchange Online)."""

    tenant_id: str | None = None
    client_id: str | None = None
    client_secret: SecretStr | None = None
    certificate_path: Path | None = None
    certificate_password: SecretStr | None = None
    managed_identity: bool = False
    cloud: Cloud = Cloud.GLOBAL
    login_url: str | None = None
    base_url: str | None = None
    ca_bundle: Path | None = None
    timeout_seconds: float = Field(default=30.0, gt=0)
    max_attempts: int = Field(default=5, ge=1, le=10)
    max_concurrency: int = Field(default=32, ge=1)
    mailbox_concurrency: int = Field(default=4, ge=1, le=4)
    sync_group_id: str | None = None
    # A mailbox in the sync group that `syncwarden doctor` reads to prove access works end to end.
    test_mailbox: str | None = None

    @property
    def has_credential(self) -> bool:
        return bool(self.client_secret or self.certificate_path or self.managed_identity)


class ExchangeSettings(BaseModel):
    """Exchange Online admin API, used only when the sync group is mail-enabled."""

    base_url: str | None = None
    timeout_seconds: float = Field(default=60.0, gt=0)


# Connections a process needs beside its sync runs: bot turns, the step runner, the outbox,
# scheduled jobs and /metrics (what the whole pool was sized for before the sync had a share).
POOL_HEADROOM = 5


class DatabaseSettings(BaseModel):
    url: SecretStr = SecretStr(DEFAULT_DATABASE_URL)
    echo: bool = False
    # PostgreSQL connections kept open per process. Unset, it is the sync concurrency plus
    # POOL_HEADROOM (see Settings).
    pool_size: int = Field(default=5, ge=1)
    # Connections opened beyond pool_size under a burst, and closed again after it. None by
    # default: a new connection pays its start-up and prepares every statement again, and under
    # a burst of clicks the opening and closing cost more than waiting in line for one of the
    # pool's (core/fair_pool.py); approve p99 at 50 clients fell from about 7x echo's to 3x.
    max_overflow: int = Field(default=0, ge=0)


def pool_size_for(sync_concurrency: int) -> int:
    """A pool that holds every sync run at once (each holds at most one connection at a time)
    with room left for everything else the process does."""
    return sync_concurrency + POOL_HEADROOM


class SchedulerSettings(BaseModel):
    enabled: bool = True
    timezone: str = "UTC"
    sync_interval_minutes: float = Field(default=5.0, gt=0)
    sync_jitter_seconds: float = Field(default=30.0, ge=0)
    approval_check_minutes: float = Field(default=15.0, gt=0)
    credential_scan_hours: float = Field(default=24.0, gt=0)


class SchedulingAdapter(StrEnum):
    BUILTIN = "builtin"
    MANUAL = "manual"


class ApprovalSettings(BaseModel):
    """Who may approve, and how long a request may wait for them."""

    approvers: list[str] = Field(default_factory=list)
    approvers_group_id: str | None = None
    fallback_approvers: list[str] = Field(default_factory=list)
    it_admins: list[str] = Field(default_factory=list)
    it_admins_group_id: str | None = None
    required_approvals: int = Field(default=1, ge=1, le=2)
    auto_approve_it_on_behalf: bool = False
    reminder_hours: float = Field(default=24.0, gt=0)
    escalation_hours: float = Field(default=48.0, gt=0)
    expiry_days: float = Field(default=7.0, gt=0)
    group_cache_seconds: int = Field(default=300, ge=0)


class AccessSettings(BaseModel):
    """Time-bound access: how long a grant may last and when its holder hears it is ending."""

    # The longest a request may ask for, in days from the request; None: no limit, and a
    # request without an end date is open-ended. With a limit, a request without one gets it.
    max_days: int | None = Field(default=None, ge=1, le=3650)
    # How many days before the end the person is reminded, with an Extend button.
    reminder_days: int = Field(default=7, ge=1, le=90)
    check_minutes: float = Field(default=60.0, gt=0)


class ReviewerSource(StrEnum):
    APPROVERS = "approvers"
    MANAGER = "manager"


class ReviewDefault(StrEnum):
    """What happens to people nobody decided on when a review closes (Entra's
    ``expirationBehavior``: keep access, or remove it)."""

    KEEP = "keep"
    REMOVE = "remove"


class ReviewSettings(BaseModel):
    """Periodic access reviews of everyone enrolled."""

    # A review every this many months; 0 turns scheduled reviews off (``review start`` still works).
    every_months: int = Field(default=0, ge=0, le=36)
    reviewers: ReviewerSource = ReviewerSource.APPROVERS
    window_days: int = Field(default=14, ge=1, le=180)
    # Days after the start when undecided reviewers are reminded and the fallback reviewers
    # (APPROVALS__FALLBACK_APPROVERS, else the approvers) are asked as well.
    reminder_days: int = Field(default=7, ge=1, le=180)
    default_decision: ReviewDefault = ReviewDefault.KEEP


class ProvisioningSettings(BaseModel):
    """How approved tickets are carried out."""

    scheduling_adapter: SchedulingAdapter = SchedulingAdapter.BUILTIN
    remove_synced_events: bool = False
    instructions_template: Path | None = None
    help_article_url: str | None = None
    max_attempts: int = Field(default=8, ge=1)
    lease_seconds: int = Field(default=300, ge=10)


class ScimDecision(StrEnum):
    """What a provisioned, active user's ticket waits for: nothing (the identity provider's
    assignment is the decision) or the approvers, as a Teams request does."""

    ENROLL = "enroll"
    APPROVE = "approve"


class ScimSettings(BaseModel):
    """The SCIM 2.0 door (``/scim/v2``) that Entra ID's app provisioning drives.

    Off unless enabled: it is a second way in, so an operator turns it on, makes a token
    (``syncwarden scim token new``) and gives it to Entra ID as the secret token.
    """

    enabled: bool = False
    decision: ScimDecision = ScimDecision.ENROLL
    # Active provisioned people at most (Clockwise pilots with 10); a create or re-activation
    # beyond it is refused with a SCIM error until this is raised. 0: no cap.
    pilot_cap: int = Field(default=10, ge=0)
    # Requests per minute per client (a token, or an address before it has authenticated).
    requests_per_minute: int = Field(default=600, ge=1)
    # SCIM bodies are small (one user, or a PATCH of a few operations).
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)


class AlertSettings(BaseModel):
    credential_thresholds_days: list[int] = Field(default_factory=lambda: [60, 30, 14, 7, 3, 1])
    runbook_url: str | None = None
    # App registrations (by appId) whose secrets and certificates are watched; Syncwarden's own
    # Graph and bot apps always are. With watch_all_apps, every app in the tenant is.
    watch_app_ids: list[str] = Field(default_factory=list)
    watch_all_apps: bool = False


class ReconcileSettings(BaseModel):
    """Access reconciliation: how long a leaver keeps access, and when a run stops and asks."""

    # Days a disabled or deleted account stays enrolled before its removal ticket opens; an
    # account re-enabled or restored meanwhile keeps its access.
    leaver_grace_days: float = Field(default=7.0, ge=0)
    # A run that would end more than this share of the enrollments by itself stops and asks
    # (an empty or wrong directory read looks exactly like everyone leaving).
    max_removal_share: float = Field(default=0.1, gt=0, le=1)
    # Follow a mover (primary address changed) to the new address without asking IT.
    follow_movers: bool = True
    # Findings shown with buttons on the drift card; the rest are counted (all: the CLI).
    card_findings: int = Field(default=5, ge=1, le=20)


class SyncSource(StrEnum):
    BUILTIN = "builtin"
    ICS = "ics"
    SQL = "sql"


class SyncSettings(BaseModel):
    """The calendar sync worker: what it reads, how far, and when it refuses to act."""

    source: SyncSource = SyncSource.BUILTIN
    days_back: int = Field(default=14, ge=0, le=365)
    days_ahead: int = Field(default=120, ge=1, le=730)
    # Appointment titles often name clients; the default shows no title at all.
    subject_template: str = "Appointment"
    max_deletion_share: float = Field(default=0.2, gt=0, le=1)
    # Deletions below this count never trip the share valve (a person cancelling 1 of 3).
    deletion_valve_minimum: int = Field(default=5, ge=1)
    # A source that returned at least this many before and nothing now is not believed.
    empty_read_minimum: int = Field(default=5, ge=1)
    max_creations_per_run: int = Field(default=500, ge=1)
    concurrency: int = Field(default=8, ge=1, le=64)
    lease_seconds: int = Field(default=600, ge=30)
    # calendarView/delta keeps the window it started with; start a fresh round this often.
    delta_restart_hours: float = Field(default=24.0, gt=0)
    failure_digest_minutes: float = Field(default=60.0, ge=5)
    # Where Graph posts change notifications (public HTTPS); defaults to the bot's public host.
    notification_url: str | None = None
    # ics: each profile's feed, {profile_id} filled in; feed addresses often carry a token.
    ics_url_template: SecretStr | None = None
    # Zone for floating times and all-day dates in feeds and SQL rows without a time_zone column.
    source_time_zone: str = "UTC"
    # sql: a read-only query with :profile_id, :window_start and :window_end bound (never
    # formatted in), and how its columns map to ours (our name -> theirs) where they differ.
    sql_url: SecretStr | None = None
    sql_query: str | None = None
    sql_columns: dict[str, str] = Field(default_factory=dict)


class LimitSettings(BaseModel):
    """What a flood of Teams turns may cost one process: turns per person and per conversation
    (token buckets: a burst, then a steady rate; 0 per minute turns a scope off), and how long
    the directory answers a request form needs are reused instead of asked again."""

    # A person: 15 at once (an approver working through a queue of cards, the card refreshes
    # Teams sends when a chat is opened), then one every 3 seconds; nobody types faster.
    person_turns_per_minute: float = Field(default=20.0, ge=0)
    person_burst: int = Field(default=15, ge=1)
    # A conversation (a channel with many people): above the person's, so a 1:1 chat never
    # meets it first.
    conversation_turns_per_minute: float = Field(default=60.0, ge=0)
    conversation_burst: int = Field(default=40, ge=1)
    # Directory reads for the request form and the request itself (a person, their mailbox);
    # provisioning and sync always read fresh. 0 turns the cache off.
    directory_cache_seconds: float = Field(default=60.0, ge=0, le=3600)
    directory_cache_entries: int = Field(default=1000, ge=1)


class LogSettings(BaseModel):
    level: str = "INFO"
    format: LogFormat = LogFormat.AUTO


class TracingSettings(BaseModel):
    """OpenTelemetry traces, sent over OTLP/HTTP when an endpoint is set; off otherwise."""

    otlp_endpoint: str | None = None
    service_name: str = "syncwarden"


class Settings(BaseSettings):
    """The whole configuration. Build it with :func:`load_settings`, never at import time."""

    model_config = SettingsConfigDict(
        env_prefix="SYNCWARDEN_",
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
    )

    mode: Mode = Mode.PRODUCTION
    http: HttpSettings = Field(default_factory=HttpSettings)
    bot: BotSettings = Field(default_factory=BotSettings)
    graph: GraphSettings = Field(default_factory=GraphSettings)
    exchange: ExchangeSettings = Field(default_factory=ExchangeSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings)
    approvals: ApprovalSettings = Field(default_factory=ApprovalSettings)
    provisioning: ProvisioningSettings = Field(default_factory=ProvisioningSettings)
    access: AccessSettings = Field(default_factory=AccessSettings)
    reviews: ReviewSettings = Field(default_factory=ReviewSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    sync: SyncSettings = Field(default_factory=SyncSettings)
    reconcile: ReconcileSettings = Field(default_factory=ReconcileSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    tracing: TracingSettings = Field(default_factory=TracingSettings)
    scim: ScimSettings = Field(default_factory=ScimSettings)

    @model_validator(mode="after")
    def _pool_fits_the_sync(self) -> Settings:
        """Size the pool from the sync concurrency unless ``DATABASE__POOL_SIZE`` says otherwise."""
        if "pool_size" not in self.database.model_fields_set:
            self.database = self.database.model_copy(
                update={"pool_size": pool_size_for(self.sync.concurrency)}
            )
        return self

    @property
    def is_production(self) -> bool:
        return self.mode is Mode.PRODUCTION

    @property
    def anonymous_bot_auth(self) -> bool:
        """Anonymous Bot Framework traffic is accepted only in sandbox mode, whatever is set."""
        return self.mode is Mode.SANDBOX and (self.bot.allow_anonymous or not self.bot.app_id)

    def secret_values(self) -> list[str]:
        """Every configured secret in clear text, so the logger can scrub them from any output.

        For the database URL only its password counts: the rest of it is useful in logs.
        """
        values: list[str] = []
        for name, secret in iter_secrets(self):
            if secret is None:
                continue
            if name == "database.url":
                password = _database_password(secret.get_secret_value())
                if password:
                    values.append(password)
            elif secret.get_secret_value():
                values.append(secret.get_secret_value())
        return values


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment and ``.env``; keyword overrides win (used by tests)."""
    return Settings(**overrides)


def iter_secrets(model: BaseModel, prefix: str = "") -> list[tuple[str, SecretStr | None]]:
    """Walk a settings tree and return ``(dotted.name, secret)`` for every ``SecretStr`` field."""
    found: list[tuple[str, SecretStr | None]] = []
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        dotted = f"{prefix}{name}"
        if isinstance(value, BaseModel):
            found.extend(iter_secrets(value, prefix=f"{dotted}."))
        elif isinstance(value, SecretStr) or _is_secret_annotation(field.annotation):
            found.append((dotted, value))
    return found


def _is_secret_annotation(annotation: Any) -> bool:
    """True for ``SecretStr`` and ``SecretStr | None`` fields, set or not."""
    return annotation is SecretStr or SecretStr in get_args(annotation)


_PLACEHOLDER_PATTERN = re.compile(
    r"^(change[-_ ]?me|changeit|placeholder|replace[-_ ]?me|todo|tbd|fixme|secret|password|"
    r"your[-_ ].*|<.*>|\{\{.*\}\}|x+|\*+|0+|dummy|example|test)$",
    re.IGNORECASE,
)


def is_placeholder(value: str) -> bool:
    """True for values left from a template instead of a real secret (``changeme``, ``<x>``)."""
    stripped = value.strip()
    return (
        not stripped or bool(_PLACEHOLDER_PATTERN.match(stripped)) or "changeme" in stripped.lower()
    )


def database_url_problem(url: str) -> str | None:
    """Explain why a database URL cannot be used, or return None when it can."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return (
            "database.url is not a valid SQLAlchemy URL; use e.g. "
            "sqlite+aiosqlite:///var/syncwarden.db or postgresql+asyncpg://user@host/db"
        )
    driver = parsed.drivername
    if driver not in SUPPORTED_DATABASE_DRIVERS:
        return (
            f"database.url uses driver '{driver}', which Syncwarden cannot use; "
            f"use one of: {', '.join(SUPPORTED_DATABASE_DRIVERS)}"
        )
    if driver.startswith("sqlite") and not parsed.database:
        return "database.url names no SQLite file; an in-memory database would lose every ticket"
    if driver.startswith("postgresql") and not parsed.database:
        return "database.url names no PostgreSQL database"
    return None


def find_problems(settings: Settings) -> list[str]:
    """Everything that stops Syncwarden from starting in its configured mode, one sentence each.

    Sandbox mode needs a usable database and must not reach beyond the sandbox tenant (it accepts
    anonymous bot traffic, so a real tenant behind it would be open to anyone). Production
    additionally needs real bot and Graph credentials, because anonymous bot traffic or a missing
    credential there would either expose the service or fail on the first real request.
    """
    problems: list[str] = []
    url_problem = database_url_problem(settings.database.url.get_secret_value())
    if url_problem:
        problems.append(url_problem)
    template_problem = subject_template_problem(settings.sync.subject_template)
    if template_problem:
        problems.append(f"{template_problem} (SYNCWARDEN_SYNC__SUBJECT_TEMPLATE)")
    problems.extend(_sync_source_problems(settings.sync))
    problems.extend(_limit_problems(settings.limits))
    if not settings.is_production:
        sandbox_problem = sandbox_target_problem(settings)
        if sandbox_problem:
            problems.append(sandbox_problem)
        return problems

    env = "SYNCWARDEN_"
    bot, graph = settings.bot, settings.graph
    url = settings.sync.notification_url
    if url and not url.startswith("https://"):
        problems.append(
            f"sync.notification_url must be an https:// address Graph can reach "
            f"({env}SYNC__NOTIFICATION_URL)"
        )
    if bot.allow_anonymous:
        problems.append(
            f"bot.allow_anonymous is set; anonymous Bot Framework traffic is refused in production "
            f"(unset {env}BOT__ALLOW_ANONYMOUS)"
        )
    if not bot.app_id:
        problems.append(
            f"bot.app_id is missing: set {env}BOT__APP_ID to the bot's Entra app (client) id"
        )
    if not bot.tenant_id:
        problems.append(
            f"bot.tenant_id is missing: set {env}BOT__TENANT_ID to your Entra tenant id"
        )
    if not bot.has_credential:
        problems.append(
            f"bot credential is missing: set {env}BOT__CLIENT_SECRET, {env}BOT__CERTIFICATE_PATH "
            f"or {env}BOT__MANAGED_IDENTITY=true"
        )
    if not graph.tenant_id:
        problems.append(f"graph.tenant_id is missing: set {env}GRAPH__TENANT_ID")
    if not graph.client_id:
        problems.append(f"graph.client_id is missing: set {env}GRAPH__CLIENT_ID")
    if not (settings.approvals.approvers or settings.approvals.approvers_group_id):
        problems.append(
            f"nobody can approve requests: set {env}APPROVALS__APPROVERS (object ids or UPNs) "
            f"or {env}APPROVALS__APPROVERS_GROUP_ID"
        )
    if not graph.has_credential:
        problems.append(
            f"graph credential is missing: set {env}GRAPH__CLIENT_SECRET, "
            f"{env}GRAPH__CERTIFICATE_PATH or {env}GRAPH__MANAGED_IDENTITY=true"
        )
    files = (bot.certificate_path, graph.certificate_path, graph.ca_bundle)
    for path in (*files, settings.provisioning.instructions_template):
        if path is not None and not path.is_file():
            problems.append(f"file {path} does not exist or is not a file")
    for name, secret in iter_secrets(settings):
        if (
            secret is not None
            and name != "database.url"
            and is_placeholder(secret.get_secret_value())
        ):
            problems.append(f"{name} holds a placeholder value; put the real secret there")
    return problems


# Where each Microsoft cloud signs in, serves Graph and serves Exchange Online: what an unset
# address means (connectors.clouds holds the same hosts; core may not import it).
_CLOUD_DEFAULTS: dict[Cloud, tuple[str, str, str]] = {
    Cloud.GLOBAL: (
        "https://login.microsoftonline.com",
        "https://graph.microsoft.com/v1.0",
        "https://outlook.office365.com",
    ),
    Cloud.US_GOVERNMENT: (
        "https://login.microsoftonline.us",
        "https://graph.microsoft.us/v1.0",
        "https://outlook.office365.us",
    ),
    Cloud.CHINA: (
        "https://login.chinacloudapi.cn",
        "https://microsoftgraph.chinacloudapi.cn/v1.0",
        "https://partner.outlook.cn",
    ),
}


def is_sandbox_address(url: str) -> bool:
    """True for an address on this machine, the only place the sandbox tenant listens.

    The sandbox's certificate names only ``127.0.0.1`` and ``localhost``, so any other host is
    somebody else's service: a real tenant, or a proxy to one.
    """
    try:
        host = urlsplit(url.strip()).hostname
    except ValueError:
        return False
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def sandbox_target_problem(settings: Settings) -> str | None:
    """Why sandbox mode would reach something other than the sandbox tenant, or None.

    Every Microsoft 365 address Syncwarden would use must be the sandbox's. An address left unset
    means the real Microsoft cloud, so it counts as soon as something would use it: the login
    address once a Graph app or a signed-in bot is configured, the Graph and Exchange addresses
    once a Graph app is. ``syncwarden serve --sandbox`` sets them all to the sandbox it starts.
    """
    graph, exchange, bot = settings.graph, settings.exchange, settings.bot
    login_default, graph_default, exchange_default = _CLOUD_DEFAULTS[graph.cloud]
    uses_graph = bool(graph.client_id)
    signs_in = uses_graph or (bool(bot.app_id) and not settings.anonymous_bot_auth)
    env = "SYNCWARDEN_"
    addresses = (
        ("graph.login_url", f"{env}GRAPH__LOGIN_URL", graph.login_url, login_default, signs_in),
        ("graph.base_url", f"{env}GRAPH__BASE_URL", graph.base_url, graph_default, uses_graph),
        (
            "exchange.base_url",
            f"{env}EXCHANGE__BASE_URL",
            exchange.base_url,
            exchange_default,
            uses_graph,
        ),
    )
    outside: list[str] = []
    for name, variable, value, default, used in addresses:
        if value is not None and not is_sandbox_address(value):
            outside.append(f"{name} ({variable}={value})")
        elif value is None and used:
            outside.append(f"{name} (unset, so {default})")
    if not outside:
        return None
    return (
        "sandbox mode accepts anonymous Teams traffic and so talks only to the sandbox tenant on "
        f"this machine, but {', '.join(outside)} "
        f"{'points' if len(outside) == 1 else 'point'} elsewhere: set {env}MODE=production for a "
        "real tenant, or point them at the sandbox tenant (`syncwarden serve --sandbox` starts one "
        "and needs no Graph, Exchange or bot settings)"
    )


def masked_view(settings: Settings) -> dict[str, Any]:
    """The effective settings as plain data with every secret shown as ``**********``."""
    data = settings.model_dump(mode="json")
    for name, secret in iter_secrets(settings):
        *parents, leaf = name.split(".")
        node = data
        for part in parents:
            node = node[part]
        node[leaf] = _mask_database_url(secret) if name == "database.url" else _mask(secret)
    return data


def _database_password(url: str) -> str | None:
    try:
        return make_url(url).password
    except ArgumentError:
        return url


def _mask(secret: SecretStr | None) -> str | None:
    return None if secret is None else "**********"


def _mask_database_url(secret: SecretStr | None) -> str | None:
    """Database URLs are useful to see; only the password inside them is a secret."""
    if secret is None:
        return None
    try:
        return make_url(secret.get_secret_value()).render_as_string(hide_password=True)
    except ArgumentError:
        return "**********"


def subject_template_problem(template: str) -> str | None:
    """Only ``{subject}`` and ``{location}`` may appear; anything else would fail every push."""
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as error:
        return f"the sync subject template is malformed ({error})"
    unknown = sorted(names - {"subject", "location"})
    if unknown:
        return f"the sync subject template may use only {{subject}} and {{location}}, not {unknown}"
    return None


def _sync_source_problems(sync: SyncSettings) -> list[str]:
    """The chosen appointment source must have what it needs to be read."""
    env = "SYNCWARDEN_SYNC__"
    if sync.source is SyncSource.ICS:
        template = sync.ics_url_template.get_secret_value() if sync.ics_url_template else ""
        if "{profile_id}" not in template:
            return [
                f"the ics source needs {env}ICS_URL_TEMPLATE with {{profile_id}} in it, e.g. "
                "https://scheduling.example.edu/feeds/{profile_id}.ics"
            ]
    if sync.source is SyncSource.SQL:
        problems = []
        if not sync.sql_url:
            problems.append(f"the sql source needs {env}SQL_URL (a SQLAlchemy async URL)")
        else:
            try:
                make_url(sync.sql_url.get_secret_value())
            except ArgumentError:
                problems.append(
                    f"{env}SQL_URL is not a SQLAlchemy URL, e.g. "
                    "mssql+aioodbc://user:password@host/db?driver=ODBC+Driver+18+for+SQL+Server"
                )
        if not sync.sql_query or ":profile_id" not in sync.sql_query:
            problems.append(
                f"the sql source needs {env}SQL_QUERY selecting one profile's appointments, with "
                ":profile_id (and :window_start, :window_end) as bound parameters"
            )
        return problems
    return []


def _limit_problems(limits: LimitSettings) -> list[str]:
    """The conversation limit must not be tighter than the person limit (when both are on): in a
    1:1 chat the conversation is the person, so a tighter one would cut people off first."""
    env = "SYNCWARDEN_LIMITS__"
    if not (limits.person_turns_per_minute and limits.conversation_turns_per_minute):
        return []
    problems = []
    if limits.conversation_turns_per_minute < limits.person_turns_per_minute:
        problems.append(
            f"{env}CONVERSATION_TURNS_PER_MINUTE ({limits.conversation_turns_per_minute:g}) is "
            f"below {env}PERSON_TURNS_PER_MINUTE ({limits.person_turns_per_minute:g}), so a 1:1 "
            "chat would be limited before its person; raise it or set it to 0 (off)"
        )
    if limits.conversation_burst < limits.person_burst:
        problems.append(
            f"{env}CONVERSATION_BURST ({limits.conversation_burst}) is below "
            f"{env}PERSON_BURST ({limits.person_burst}), so a 1:1 chat would be limited before "
            "its person; raise it"
        )
    return problems
