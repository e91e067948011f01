"""Settings: loading from the environment and .env, and what production refuses."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from core.settings import (
    Mode,
    Settings,
    database_url_problem,
    find_problems,
    is_placeholder,
    load_settings,
    masked_view,
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


def test_defaults_are_sandbox_on_embedded_sqlite() -> None:
    settings = load_settings()
    assert settings.mode is Mode.SANDBOX
    assert settings.database.url.get_secret_value() == "sqlite+aiosqlite:///var/syncwarden.db"
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
    assert load_settings(bot={"app_id": "x", "allow_anonymous": True}).anonymous_bot_auth
    assert not load_settings(bot={"app_id": "x"}).anonymous_bot_auth


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
    problems = find_problems(load_settings(database={"url": url}))
    assert len(problems) == 1
    assert fragment in problems[0]


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


def test_a_sync_source_without_what_it_needs_is_a_problem_in_every_mode() -> None:
    ics = Settings.model_validate({"sync": {"source": "ics"}})
    assert any("ICS_URL_TEMPLATE with {profile_id}" in p for p in find_problems(ics))
    sql = Settings.model_validate({"sync": {"source": "sql", "sql_url": "::not a url::"}})
    problems = find_problems(sql)
    assert any("SQL_URL is not a SQLAlchemy URL" in p for p in problems)
    assert any(":profile_id" in p for p in problems)
    template = Settings.model_validate({"sync": {"subject_template": "{client_name}"}})
    assert any("SUBJECT_TEMPLATE" in p for p in find_problems(template))
    fine = Settings.model_validate(
        {
            "sync": {
                "source": "ics",
                "ics_url_template": "https://feeds.example.edu/{profile_id}.ics",
            }
        }
    )
    assert find_problems(fine) == []
