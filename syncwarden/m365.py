"""Building the Microsoft 365 connectors from settings: one HTTP client, one token provider.

Everything that talks to Graph or Exchange shares the same ``httpx.AsyncClient`` (connection
reuse), the same token provider (one token per scope for the whole process) and the same
concurrency limiter (so the per-mailbox limit of 4 holds across the sync worker, the provisioning
runner and the bot at once).

``directory`` always asks Graph. ``cached_directory`` is the same directory with person and
mailbox reads kept for ``limits.directory_cache_seconds``: for the request form and the checks of
a request only (the workflow service); provisioning, the sync group, the roster (which caches
group membership itself) and the doctor use ``directory``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from syncwarden.connectors.cached_directory import CachedDirectory
from syncwarden.connectors.clouds import ResolvedEndpoints, resolve_endpoints
from syncwarden.connectors.exchange.client import ExchangeAdminClient
from syncwarden.connectors.graph.applications import GraphApplications
from syncwarden.connectors.graph.calendar import GraphCalendar
from syncwarden.connectors.graph.client import GraphClient
from syncwarden.connectors.graph.directory import GraphDirectory
from syncwarden.connectors.graph.directory_changes import GraphDirectoryChanges
from syncwarden.connectors.graph.subscriptions import GraphSubscriptions
from syncwarden.connectors.graph.teamwork import GraphTeamwork
from syncwarden.connectors.groups import SyncGroupMembership
from syncwarden.connectors.http import create_http_client
from syncwarden.connectors.limits import ConcurrencyLimiter
from syncwarden.connectors.retry import RetryPolicy
from syncwarden.connectors.tokens import MsalTokenProvider
from syncwarden.core.settings import Settings


@dataclass
class Microsoft365:
    endpoints: ResolvedEndpoints
    http: httpx.AsyncClient
    tokens: MsalTokenProvider
    graph: GraphClient
    directory: GraphDirectory
    applications: GraphApplications
    calendar: GraphCalendar
    subscriptions: GraphSubscriptions
    # Installs the Teams app for people the bot must reach (no 1:1 chat with it yet).
    teamwork: GraphTeamwork
    exchange: ExchangeAdminClient
    sync_group: SyncGroupMembership | None
    cached_directory: CachedDirectory
    # Delta reads of users and the sync group's members, for access reconciliation.
    directory_changes: GraphDirectoryChanges

    async def aclose(self) -> None:
        await self.http.aclose()


def build_microsoft365(
    settings: Settings, *, monotonic: Callable[[], float] = time.monotonic
) -> Microsoft365:
    """The connectors; ``monotonic`` is the clock the directory cache expires answers by."""
    graph_settings = settings.graph
    endpoints = resolve_endpoints(graph_settings, settings.exchange)
    http = create_http_client(
        extra_ca=graph_settings.ca_bundle,
        max_connections=graph_settings.max_concurrency,
    )
    tokens = MsalTokenProvider(graph_settings, endpoints)
    limiter = ConcurrencyLimiter(
        global_limit=graph_settings.max_concurrency,
        per_mailbox=graph_settings.mailbox_concurrency,
    )
    retry = RetryPolicy(max_attempts=graph_settings.max_attempts)
    graph = GraphClient(
        http,
        tokens,
        base_url=endpoints.graph_base_url,
        scope=endpoints.graph_scope,
        limiter=limiter,
        retry=retry,
        timeout_seconds=graph_settings.timeout_seconds,
    )
    directory = GraphDirectory(graph)
    exchange = ExchangeAdminClient(
        http,
        tokens,
        base_url=endpoints.exchange_base_url,
        scope=endpoints.exchange_scope,
        tenant_id=graph_settings.tenant_id or "",
        limiter=limiter,
        retry=retry,
        timeout_seconds=settings.exchange.timeout_seconds,
    )
    group_id = graph_settings.sync_group_id
    return Microsoft365(
        endpoints=endpoints,
        http=http,
        tokens=tokens,
        graph=graph,
        directory=directory,
        applications=GraphApplications(graph),
        calendar=GraphCalendar(graph),
        subscriptions=GraphSubscriptions(graph),
        teamwork=GraphTeamwork(graph),
        exchange=exchange,
        sync_group=SyncGroupMembership(directory, exchange, group_id) if group_id else None,
        cached_directory=CachedDirectory(
            directory,
            ttl_seconds=settings.limits.directory_cache_seconds,
            max_entries=settings.limits.directory_cache_entries,
            clock=monotonic,
        ),
        directory_changes=GraphDirectoryChanges(graph),
    )
