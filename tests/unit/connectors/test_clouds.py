"""Per-cloud addresses, and overrides that move requests without changing what tokens are for."""

from __future__ import annotations

import pytest

from syncwarden.connectors.clouds import resolve_endpoints
from syncwarden.core.settings import Cloud, ExchangeSettings, GraphSettings


@pytest.mark.parametrize(
    ("cloud", "login", "graph", "exchange"),
    [
        (
            Cloud.GLOBAL,
            "https://login.microsoftonline.com",
            "https://graph.microsoft.com",
            "https://outlook.office365.com",
        ),
        (
            Cloud.US_GOVERNMENT,
            "https://login.microsoftonline.us",
            "https://graph.microsoft.us",
            "https://outlook.office365.us",
        ),
        (
            Cloud.CHINA,
            "https://login.chinacloudapi.cn",
            "https://microsoftgraph.chinacloudapi.cn",
            "https://partner.outlook.cn",
        ),
    ],
)
def test_each_cloud_has_its_own_hosts(cloud: Cloud, login: str, graph: str, exchange: str) -> None:
    endpoints = resolve_endpoints(GraphSettings(cloud=cloud, tenant_id="t-1"), ExchangeSettings())
    assert endpoints.authority == f"{login}/t-1"
    assert endpoints.is_microsoft_login
    assert endpoints.graph_base_url == f"{graph}/v1.0"
    assert endpoints.graph_scope == f"{graph}/.default"
    assert endpoints.exchange_base_url == exchange
    assert endpoints.exchange_scope == f"{exchange}/.default"


def test_overrides_move_requests_but_keep_the_token_resource() -> None:
    endpoints = resolve_endpoints(
        GraphSettings(
            tenant_id="t-1",
            login_url="https://127.0.0.1:8443/",
            base_url="https://127.0.0.1:8443/v1.0/",
        ),
        ExchangeSettings(base_url="https://127.0.0.1:8443"),
    )
    assert endpoints.authority == "https://127.0.0.1:8443/t-1"
    assert not endpoints.is_microsoft_login, (
        "msal must not validate a test authority against Microsoft"
    )
    assert endpoints.graph_base_url == "https://127.0.0.1:8443/v1.0"
    assert endpoints.graph_scope == "https://graph.microsoft.com/.default"
    assert endpoints.exchange_scope == "https://outlook.office365.com/.default"
