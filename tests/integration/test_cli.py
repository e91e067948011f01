"""The ``syncwarden`` command line, run as a real process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from syncwarden.migrate import head_revision
from tests.support.process import cli_environment

PRODUCTION_COMPLETE = {
    "SYNCWARDEN_MODE": "production",
    "SYNCWARDEN_BOT__APP_ID": "11111111-2222-3333-4444-555555555555",
    "SYNCWARDEN_BOT__TENANT_ID": "99999999-8888-7777-6666-555555555555",
    "SYNCWARDEN_BOT__CLIENT_SECRET": "Qm9.bot-real-looking~value_123",
    "SYNCWARDEN_GRAPH__TENANT_ID": "99999999-8888-7777-6666-555555555555",
    "SYNCWARDEN_GRAPH__CLIENT_ID": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
    "SYNCWARDEN_GRAPH__CLIENT_SECRET": "Zx8.graph-real-looking~value_456",
    "SYNCWARDEN_APPROVALS__APPROVERS_GROUP_ID": "c0ffee00-0000-4000-8000-000000000001",
}


def run(*args: str, cwd: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own CLI with fixed arguments
        [sys.executable, "-m", "syncwarden", *args],
        cwd=cwd,
        env=cli_environment(**settings),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_version(tmp_path: Path) -> None:
    result = run("--version", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.startswith("syncwarden 0.")


@pytest.mark.parametrize("command", [[], ["serve"], ["migrate"], ["config"], ["config", "check"]])
def test_every_command_explains_itself(tmp_path: Path, command: list[str]) -> None:
    result = run(*command, "--help", cwd=tmp_path)
    assert result.returncode == 0
    assert "Usage:" in result.stdout
    assert len(result.stdout.strip().splitlines()) > 4


@pytest.mark.parametrize("mode", [{"SYNCWARDEN_MODE": "production"}, {}], ids=["set", "default"])
def test_production_serve_without_credentials_exits_2_listing_each_problem(
    tmp_path: Path, mode: dict[str, str]
) -> None:
    """Production is the default: `serve` with nothing set refuses, listing what is missing."""
    result = run("serve", cwd=tmp_path, **mode)
    assert result.returncode == 2
    problems = [line for line in result.stderr.splitlines() if line.startswith("- ")]
    assert [p.split(" ")[1] for p in problems] == [
        "bot.app_id",
        "bot.tenant_id",
        "bot",
        "graph.tenant_id",
        "graph.client_id",
        "nobody",
        "graph",
    ]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "var").exists(), (
        "nothing may be created before the configuration is accepted"
    )


def test_serve_sandbox_needs_sandbox_mode_asked_for(tmp_path: Path) -> None:
    result = run("serve", "--sandbox", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines()[1:] == [
        "- --sandbox starts the sandbox tenant, which only sandbox mode uses: set "
        "SYNCWARDEN_MODE=sandbox (make run does), or drop --sandbox in production"
    ]
    assert not (tmp_path / "var").exists(), "neither the sandbox nor the database was started"


@pytest.mark.parametrize("sandbox", [[], ["--sandbox"]], ids=["serve", "serve --sandbox"])
def test_sandbox_mode_refuses_to_start_against_a_real_tenant(
    tmp_path: Path, sandbox: list[str]
) -> None:
    """Anonymous traffic must never reach a real tenant: one sentence, and nothing started."""
    real_tenant = {
        key: value
        for key, value in PRODUCTION_COMPLETE.items()
        if key.startswith("SYNCWARDEN_GRAPH__")
    }
    result = run("serve", *sandbox, cwd=tmp_path, SYNCWARDEN_MODE="sandbox", **real_tenant)
    assert result.returncode == 2
    [problem] = [line for line in result.stderr.splitlines() if line.startswith("- ")]
    assert problem.startswith("- sandbox mode accepts anonymous Teams traffic")
    assert "graph.login_url (unset, so https://login.microsoftonline.com)" in problem
    assert "SYNCWARDEN_MODE=production" in problem
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "var").exists(), "neither the sandbox nor the database was started"
    checked = run("config", "check", cwd=tmp_path, SYNCWARDEN_MODE="sandbox", **real_tenant)
    assert checked.returncode == 2
    assert problem in checked.stderr


def test_production_serve_refuses_a_placeholder_secret(tmp_path: Path) -> None:
    result = run(
        "serve",
        cwd=tmp_path,
        **{**PRODUCTION_COMPLETE, "SYNCWARDEN_BOT__CLIENT_SECRET": "changeme"},
    )
    assert result.returncode == 2
    assert (
        "- bot.client_secret holds a placeholder value; put the real secret there" in result.stderr
    )


def test_invalid_setting_value_is_explained_not_a_traceback(tmp_path: Path) -> None:
    result = run("config", "check", cwd=tmp_path, SYNCWARDEN_HTTP__PORT="eighty")
    assert result.returncode == 2
    assert "- http.port:" in result.stderr
    assert "Traceback" not in result.stderr


def test_config_check_masks_secrets_and_reports_problems(tmp_path: Path) -> None:
    secret = "Zx8.graph-real-looking~value_456"
    settings = {**PRODUCTION_COMPLETE, "SYNCWARDEN_BOT__APP_ID": ""}
    result = run("config", "check", cwd=tmp_path, **settings)
    assert result.returncode == 2
    assert "graph.client_secret = **********" in result.stdout
    assert secret not in result.stdout + result.stderr
    assert "- bot.app_id is missing" in result.stderr


def test_config_check_passes_a_complete_production_configuration(tmp_path: Path) -> None:
    result = run("config", "check", "--json", cwd=tmp_path, **PRODUCTION_COMPLETE)
    assert result.returncode == 0, result.stderr
    assert '"mode": "production"' in result.stdout
    assert "OK: the configuration can start in production mode." in result.stdout


def test_config_check_reads_dotenv(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("SYNCWARDEN_GRAPH__CLIENT_ID=from-dotenv-file\n")
    result = run("config", "check", cwd=tmp_path)
    assert "graph.client_id = from-dotenv-file" in result.stdout


def test_migrate_creates_the_embedded_database(tmp_path: Path) -> None:
    result = run("migrate", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"database schema is at revision {head_revision()}" in result.stdout
    assert (tmp_path / "var" / "syncwarden.db").is_file()


def test_migrate_refuses_an_unusable_database_url(tmp_path: Path) -> None:
    result = run("migrate", cwd=tmp_path, SYNCWARDEN_DATABASE__URL="mysql://root@localhost/x")
    assert result.returncode == 2
    assert "driver 'mysql'" in result.stderr


def test_unreachable_database_is_explained_without_the_password(tmp_path: Path) -> None:
    url = "postgresql+asyncpg://sync:Pg-pass-9x@127.0.0.1:1/syncwarden"
    for command in ("migrate", "serve"):
        result = run(command, cwd=tmp_path, SYNCWARDEN_MODE="sandbox", SYNCWARDEN_DATABASE__URL=url)
        assert result.returncode == 1, (command, result.stderr)
        assert (
            "Syncwarden cannot use the database at postgresql+asyncpg://sync:***@127.0.0.1:1/syncwarden"
            in result.stderr
        )
        assert "Pg-pass-9x" not in result.stderr
        assert "Traceback" not in result.stderr
