"""Settings: loading from the environment and .env, what production refuses, and what sandbox
mode refuses (anything but the sandbox tenant)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from syncwarden.connectors.clouds import resolve_endpoints
from syncwarden.core.settings import (
    POOL_HEADROOM,
    Cloud,
    ExchangeSettings,
    GraphSettings,
    Mode,
    Settings,
    SyncSettings,
    database_url_problem,
    find_problems,
    is_placeholder,
    is_sandbox_address,
    load_settings,
    masked_view,
    sandbox_target_problem,
)

COMPLETE_PRODUCTION = {
    "SYNCWARDEN_MODE": "production",
    "SYNCWARDEN_BOT__APP_ID": "11111111-2222-3333-4444-555555555555",
    "SYNCWARDEN_BOT__TENANT_ID": "99999999-8888-7777-6666-555555555555",
    "SYNCWARDEN_BOT__CLIENT_SECRET": "Qm9.bot-real-looking~value_123",
    "SYNCWARDEN_GRAPH__TENANT_ID": "99999999-8888-7777-6666-555555555555",
    "SYNCWARDEN_GRAPH__CLIENT_ID": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
    "SYNCWARDEN_GRAPH__CLIENT_SECRET": "Zx8.graph-real-looking~value_456",
    "SYNCWARDEN_APPROVALS__APPROVERS_GROUP_ID": "c0ffee00-0000-4000-8000-000000000001",
}


def production(monkeypatch: pytest.MonkeyPatch, **changes: str | None) -> Settings:
    env = {**COMPLETE_PRODUCTION, **changes}
    for name, value in env.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    return load_settings()


def test_defaults_are_production_on_embedded_sqlite() -> None:
    """Secure by default: nothing set means production, which refuses to start unconfigured."""
    settings = load_settings()
    assert settings.mode is Mode.PRODUCTION
    assert settings.database.url.get_secret_value() == "sqlite+aiosqlite:///var/syncwarden.db"
    assert not settings.anonymous_bot_auth
    assert not load_settings(bot={"allow_anonymous": True}).anonymous_bot_auth
    assert any(problem.startswith("bot.app_id is missing") for problem in find_problems(settings))


def test_sandbox_mode_must_be_asked_for_and_then_needs_nothing_else(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SYNCWARDEN_MODE", "sandbox")
    settings = load_settings()
    assert settings.mode is Mode.SANDBOX
    assert settings.anonymous_bot_auth
    assert find_problems(settings) == []


def test_nested_groups_read_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNCWARDEN_GRAPH__CLIENT_ID", "from-env")
    monkeypatch.setenv("SYNCWARDEN_HTTP__PORT", "4000")
    monkeypatch.setenv("SYNCWARDEN_ALERTS__CREDENTIAL_THRESHOLDS_DAYS", "[30, 7]")
    settings = load_settings()
    assert settings.graph.client_id == "from-env"
    assert settings.http.port == 4000
    assert settings.alerts.credential_thresholds_days == [30, 7]


def test_dotenv_file_is_read_and_environment_wins(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text(
        "SYNCWARDEN_GRAPH__CLIENT_ID=from-dotenv\nSYNCWARDEN_HTTP__PORT=4100\n"
    )
    monkeypatch.setenv("SYNCWARDEN_HTTP__PORT", "4200")
    settings = load_settings()
    assert settings.graph.client_id == "from-dotenv"
    assert settings.http.port == 4200


def test_complete_production_configuration_has_no_problems(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = production(monkeypatch)
    assert find_problems(settings) == []
    assert not settings.anonymous_bot_auth


def test_production_without_credentials_lists_each_missing_item(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = load_settings(mode=Mode.PRODUCTION)
    problems = find_problems(settings)
    for expected in (
        "bot.app_id",
        "bot.tenant_id",
        "bot credential",
        "graph.tenant_id",
        "graph.client_id",
        "graph credential",
        "nobody can approve",
    ):
        assert any(problem.startswith(expected) for problem in problems), (expected, problems)
    assert len(problems) == 7


@pytest.mark.parametrize(
    ("variable", "expected"),
    [
        ("SYNCWARDEN_BOT__APP_ID", "bot.app_id is missing"),
        ("SYNCWARDEN_BOT__CLIENT_SECRET", "bot credential is missing"),
        ("SYNCWARDEN_GRAPH__CLIENT_SECRET", "graph credential is missing"),
        ("SYNCWARDEN_GRAPH__CLIENT_ID", "graph.client_id is missing"),
    ],
)
def test_production_names_the_one_missing_item(
    monkeypatch: pytest.MonkeyPatch, variable: str, expected: str
) -> None:
    problems = find_problems(production(monkeypatch, **{variable: None}))
    assert len(problems) == 1
    assert problems[0].startswith(expected)


def test_anonymous_bot_auth_is_refused_in_production(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = production(monkeypatch, SYNCWARDEN_BOT__ALLOW_ANONYMOUS="true")
    assert not settings.anonymous_bot_auth
    assert any("allow_anonymous" in problem for problem in find_problems(settings))


def test_sandbox_allows_anonymous_bot_auth_only_when_asked_or_without_app_id() -> None:
    sandbox = Mode.SANDBOX
    assert load_settings(
        mode=sandbox, bot={"app_id": "x", "allow_anonymous": True}
    ).anonymous_bot_auth
    assert not load_settings(mode=sandbox, bot={"app_id": "x"}).anonymous_bot_auth


SANDBOX_TENANT = "https://127.0.0.1:8443"
AIMED_AT_SANDBOX = {
    "graph": {
        "client_id": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
        "login_url": SANDBOX_TENANT,
        "base_url": f"{SANDBOX_TENANT}/v1.0",
    },
    "exchange": {"base_url": SANDBOX_TENANT},
}


def sandbox_mode(**overrides: object) -> Settings:
    return Settings.model_validate({"mode": Mode.SANDBOX, **overrides})


def test_sandbox_mode_against_the_sandbox_tenant_has_no_problems() -> None:
    assert find_problems(sandbox_mode(**AIMED_AT_SANDBOX)) == []
    with_bot = sandbox_mode(**AIMED_AT_SANDBOX, bot={"app_id": "b-1", "client_secret": "s"})
    assert find_problems(with_bot) == []


def test_sandbox_mode_refuses_a_real_tenant_in_one_sentence() -> None:
    """Graph set up without addresses means Microsoft's own hosts: sandbox mode refuses them."""
    settings = sandbox_mode(graph={"tenant_id": "contoso.onmicrosoft.com", "client_id": "g-1"})
    [problem] = find_problems(settings)
    assert problem.startswith("sandbox mode accepts anonymous Teams traffic")
    for host in ("login.microsoftonline.com", "graph.microsoft.com", "outlook.office365.com"):
        assert host in problem
    assert "SYNCWARDEN_MODE=production" in problem
    assert problem.count(". ") == 0, "one sentence"


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"graph": {"login_url": "https://login.microsoftonline.com"}}, "graph.login_url"),
        ({"graph": {"base_url": "https://graph.microsoft.com/v1.0"}}, "graph.base_url"),
        ({"exchange": {"base_url": "https://outlook.office365.com"}}, "exchange.base_url"),
        ({"graph": {"base_url": "https://graph-proxy.example.edu/v1.0"}}, "graph.base_url"),
        # The bot signs in at the login address; anonymous sandbox traffic does not sign in.
        ({"bot": {"app_id": "b-1", "client_secret": "s"}}, "graph.login_url"),
        (
            {**AIMED_AT_SANDBOX, "graph": {**AIMED_AT_SANDBOX["graph"], "base_url": None}},
            "graph.base_url",
        ),
    ],
)
def test_sandbox_mode_refuses_each_address_outside_the_sandbox(
    overrides: dict[str, object], named: str
) -> None:
    [problem] = find_problems(sandbox_mode(**overrides))
    assert f"but {named} (" in problem


def test_sandbox_mode_without_microsoft365_settings_reaches_nothing() -> None:
    """What `make run` loads before `serve --sandbox` aims it at the sandbox it starts."""
    assert sandbox_target_problem(sandbox_mode()) is None
    anonymous = sandbox_mode(bot={"app_id": "b-1", "allow_anonymous": True})
    assert sandbox_target_problem(anonymous) is None


def test_production_mode_may_use_microsoft_hosts() -> None:
    settings = Settings.model_validate({"mode": Mode.PRODUCTION, "graph": {"client_id": "g-1"}})
    assert not any("sandbox" in problem for problem in find_problems(settings))


@pytest.mark.parametrize("cloud", list(Cloud))
def test_unset_addresses_are_named_as_the_cloud_the_connectors_would_use(cloud: Cloud) -> None:
    graph = GraphSettings(cloud=cloud, client_id="g-1")
    endpoints = resolve_endpoints(graph, ExchangeSettings())
    problem = sandbox_target_problem(sandbox_mode(graph=graph.model_dump()))
    assert problem is not None
    for address in (
        endpoints.authority.rsplit("/", 1)[0],
        endpoints.graph_base_url,
        endpoints.exchange_base_url,
    ):
        assert f"unset, so {address})" in problem


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1:8443",
        "https://localhost:9000/v1.0",
        "https://[::1]:443",
        "http://127.0.0.5",
    ],
)
def test_loopback_addresses_are_the_sandbox(url: str) -> None:
    assert is_sandbox_address(url)


@pytest.mark.parametrize(
    "url",
    [
        "https://login.microsoftonline.com",
        "https://127.0.0.1.attacker.example",
        "https://localhost.attacker.example",
        "https://user@127.0.0.1@attacker.example",
        "https://[::ffff:10.0.0.1]/",
        "127.0.0.1",
        "",
        "https://[broken",
    ],
)
def test_anything_else_is_not_the_sandbox(url: str) -> None:
    assert not is_sandbox_address(url)


@given(
    st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z][a-z0-9-]{0,20}){1,3}", fullmatch=True).filter(
        lambda host: host != "localhost"
    )
)
def test_no_named_host_but_localhost_is_the_sandbox(host: str) -> None:
    assert not is_sandbox_address(f"https://{host}/v1.0")
    [problem] = find_problems(sandbox_mode(graph={"base_url": f"https://{host}/v1.0"}))
    assert host in problem


@pytest.mark.parametrize(
    "value",
    ["changeme", "CHANGEME", " change-me ", "<client-secret>", "your-secret-here", "xxxx", "****"],
)
def test_placeholder_secret_is_a_production_problem(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    problems = find_problems(production(monkeypatch, SYNCWARDEN_GRAPH__CLIENT_SECRET=value))
    assert problems == ["graph.client_secret holds a placeholder value; put the real secret there"]


def test_missing_certificate_file_is_a_problem(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings = production(
        monkeypatch,
        SYNCWARDEN_GRAPH__CLIENT_SECRET=None,
        SYNCWARDEN_GRAPH__CERTIFICATE_PATH=str(tmp_path / "missing.pem"),
    )
    assert find_problems(settings) == [
        f"file {tmp_path / 'missing.pem'} does not exist or is not a file"
    ]


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("not a url", "not a valid SQLAlchemy URL"),
        ("mysql+pymysql://root@localhost/db", "driver 'mysql+pymysql'"),
        ("sqlite:///var/x.db", "driver 'sqlite'"),
        ("sqlite+aiosqlite://", "no SQLite file"),
        ("postgresql+asyncpg://user@localhost", "no PostgreSQL database"),
    ],
)
def test_unusable_database_url_is_a_problem_in_every_mode(url: str, fragment: str) -> None:
    problems = find_problems(load_settings(mode=Mode.SANDBOX, database={"url": url}))
    assert len(problems) == 1
    assert fragment in problems[0]
    production = find_problems(load_settings(mode=Mode.PRODUCTION, database={"url": url}))
    assert fragment in production[0]


def test_usable_database_urls() -> None:
    assert (
        database_url_problem("postgresql+asyncpg://sync:pw@db.example.edu:5432/syncwarden") is None
    )
    assert database_url_problem("sqlite+aiosqlite:////srv/syncwarden/data.db") is None


def test_masked_view_hides_secrets_but_keeps_database_location(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = production(
        monkeypatch,
        SYNCWARDEN_DATABASE__URL="postgresql+asyncpg://sync:Pg-pass-9x@db.example.edu/sw",
    )
    view = masked_view(settings)
    assert view["graph"]["client_secret"] == "**********"
    assert view["bot"]["client_secret"] == "**********"
    assert view["database"]["url"] == "postgresql+asyncpg://sync:***@db.example.edu/sw"
    rendered = repr(view) + repr(settings)
    for secret in settings.secret_values():
        assert secret not in rendered


def test_secret_values_include_database_password_only() -> None:
    settings = load_settings(database={"url": "postgresql+asyncpg://sync:Pg-pass-9x@db/sw"})
    assert settings.secret_values() == ["Pg-pass-9x"]


@given(
    st.sampled_from(
        ["changeme", "change_me", "placeholder", "replace-me", "todo", "secret", "password"]
    ),
    st.booleans(),
    st.text(alphabet=" \t", max_size=3),
)
def test_placeholders_are_detected_in_any_case_and_padding(
    word: str, upper: bool, pad: str
) -> None:
    value = pad + (word.upper() if upper else word) + pad
    assert is_placeholder(value)


@given(
    st.text(
        alphabet=st.characters(codec="ascii", categories=["L", "N"]), min_size=20, max_size=40
    ).filter(lambda s: len(set(s)) > 4 and "changeme" not in s.lower())
)
def test_real_looking_secrets_are_not_placeholders(value: str) -> None:
    assert not is_placeholder(value)


@given(st.text(min_size=4, max_size=60).filter(lambda s: s.strip() != ""))
def test_masked_view_never_contains_a_secret(secret: str) -> None:
    settings = Settings.model_validate(
        {"graph": {"client_secret": SecretStr(secret)}, "bot": {"client_secret": SecretStr(secret)}}
    )
    view = masked_view(settings)
    assert view["graph"]["client_secret"] == "**********"
    assert view["bot"]["client_secret"] == "**********"


@pytest.mark.parametrize("mode", list(Mode))
def test_a_sync_source_without_what_it_needs_is_a_problem_in_every_mode(mode: Mode) -> None:
    ics = Settings.model_validate({"mode": mode, "sync": {"source": "ics"}})
    assert any("ICS_URL_TEMPLATE with {profile_id}" in p for p in find_problems(ics))
    sql = Settings.model_validate(
        {"mode": mode, "sync": {"source": "sql", "sql_url": "::not a url::"}}
    )
    problems = find_problems(sql)
    assert any("SQL_URL is not a SQLAlchemy URL" in p for p in problems)
    assert any(":profile_id" in p for p in problems)
    template = Settings.model_validate(
        {"mode": mode, "sync": {"subject_template": "{client_name}"}}
    )
    assert any("SUBJECT_TEMPLATE" in p for p in find_problems(template))
    fine = Settings.model_validate(
        {
            "mode": Mode.SANDBOX,
            "sync": {
                "source": "ics",
                "ics_url_template": "https://feeds.example.edu/{profile_id}.ics",
            },
        }
    )
    assert find_problems(fine) == []


def test_the_pool_holds_every_sync_run_and_an_explicit_size_wins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Unset, the PostgreSQL pool is the sync concurrency plus headroom; a smaller pool would
    open and close overflow connections for the sync on every pass."""
    assert load_settings().database.pool_size == SyncSettings().concurrency + POOL_HEADROOM
    assert load_settings(sync={"concurrency": 30}).database.pool_size == 30 + POOL_HEADROOM
    monkeypatch.setenv("SYNCWARDEN_SYNC__CONCURRENCY", "12")
    assert load_settings().database.pool_size == 12 + POOL_HEADROOM
    monkeypatch.setenv("SYNCWARDEN_DATABASE__POOL_SIZE", "4")
    assert load_settings().database.pool_size == 4
