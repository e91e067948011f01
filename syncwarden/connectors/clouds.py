"""Where each Microsoft cloud lives: the login authority, Graph and Exchange Online hosts.

The *resource* (what a token is for, e.g. ``https://graph.microsoft.com``) and the *base URL* (where
requests are sent) are kept apart: they are the same in every real cloud, but a test tenant or an
inspecting proxy may serve the protocol at another address while tokens still name the resource.
"""

from __future__ import annotations

from dataclasses import dataclass

from syncwarden.core.settings import Cloud, ExchangeSettings, GraphSettings


@dataclass(frozen=True)
class CloudEndpoints:
    login_url: str
    graph_resource: str
    exchange_resource: str


CLOUDS: dict[Cloud, CloudEndpoints] = {
    Cloud.GLOBAL: CloudEndpoints(
        login_url="https://login.microsoftonline.com",
        graph_resource="https://graph.microsoft.com",
        exchange_resource="https://outlook.office365.com",
    ),
    Cloud.US_GOVERNMENT: CloudEndpoints(
        login_url="https://login.microsoftonline.us",
        graph_resource="https://graph.microsoft.us",
        exchange_resource="https://outlook.office365.us",
    ),
    Cloud.CHINA: CloudEndpoints(
        login_url="https://login.chinacloudapi.cn",
        graph_resource="https://microsoftgraph.chinacloudapi.cn",
        exchange_resource="https://partner.outlook.cn",
    ),
}


@dataclass(frozen=True)
class ResolvedEndpoints:
    """Everything the connectors need to know about addresses, after settings overrides."""

    authority: str
    is_microsoft_login: bool
    graph_base_url: str
    graph_scope: str
    exchange_base_url: str
    exchange_scope: str


def resolve_endpoints(graph: GraphSettings, exchange: ExchangeSettings) -> ResolvedEndpoints:
    cloud = CLOUDS[graph.cloud]
    login = (graph.login_url or cloud.login_url).rstrip("/")
    graph_base = (graph.base_url or f"{cloud.graph_resource}/v1.0").rstrip("/")
    exchange_base = (exchange.base_url or cloud.exchange_resource).rstrip("/")
    return ResolvedEndpoints(
        authority=f"{login}/{graph.tenant_id or 'organizations'}",
        is_microsoft_login=any(login == c.login_url for c in CLOUDS.values()),
        graph_base_url=graph_base,
        graph_scope=f"{cloud.graph_resource}/.default",
        exchange_base_url=exchange_base,
        exchange_scope=f"{cloud.exchange_resource}/.default",
    )
