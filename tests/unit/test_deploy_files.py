"""The files a deployment starts from: the image, the compose file and the systemd unit.

These machines cannot pull base images, so the image is never built here; what can be checked
without building is checked: the compose file parses and sets only settings that exist, the
Dockerfile installs the wheel with the very command the wheel smoke test proves, runs as a user
that is not root and probes ``/healthz``, and every command these files run is one the CLI has.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import yaml

from tests.packaging.test_wheel import install_command
from tests.unit.test_documentation import cli_commands, setting_names

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
UNIT = (ROOT / "deploy" / "syncwarden.service").read_text()
SETTING = re.compile(r"\bSYNCWARDEN_[A-Z0-9_]+\b")


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return loaded


def test_compose_runs_postgresql_the_service_and_a_worker_with_real_settings() -> None:
    services = compose()["services"]
    assert set(services) == {"postgres", "web", "worker"}
    known = set(setting_names())
    for name in ("web", "worker"):
        service = services[name]
        assert service["env_file"] == "syncwarden.env"
        assert service["command"][0] in cli_commands()
        assert "SYNCWARDEN_SCHEDULER__ENABLED" not in service["environment"]
        unknown = set(service.get("environment", {})) - known
        assert not unknown, f"{name} sets settings that do not exist: {unknown}"
        database = service["environment"]["SYNCWARDEN_DATABASE__URL"]
        assert database.startswith("postgresql+asyncpg://") and "@postgres:5432/" in database
    assert services["web"]["command"] == ["serve", "--no-background"]
    assert services["worker"]["command"] == ["worker"]
    assert "ports" not in services["worker"], "the worker is not published"
    assert services["web"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_the_dockerfile_is_multi_stage_non_root_probed_and_installs_as_ci_does() -> None:
    stages = re.findall(r"^FROM (\S+)", DOCKERFILE, re.M)
    assert len(stages) >= 2, "a build stage and a runtime stage"
    users = re.findall(r"^USER (\S+)", DOCKERFILE, re.M)
    assert users and users[-1] not in ("root", "0")
    assert "HEALTHCHECK" in DOCKERFILE and "/healthz" in DOCKERFILE
    assert re.search(r'^ENTRYPOINT \["syncwarden"\]', DOCKERFILE, re.M)
    tested = install_command(Path("python"), Path("WHEEL"))
    expected = [str(part) for part in tested[1:]]  # after the interpreter
    expected[expected.index(str(ROOT / "requirements.lock"))] = "/tmp/requirements.lock"
    expected[-1] = "/tmp/dist/syncwarden-*.whl"
    commands = [
        shlex.split(part.strip())
        for line in _runs(DOCKERFILE)
        for part in line.split("&&")
        if "pip install" in part
    ]
    assert [command[1:] for command in commands if command[-1].endswith(".whl")] == [expected]
    unknown = set(SETTING.findall(DOCKERFILE)) - set(setting_names())
    assert not unknown, unknown


def test_the_systemd_unit_runs_serve_as_its_own_user_from_an_environment_file() -> None:
    fields = dict(
        line.split("=", 1) for line in UNIT.splitlines() if re.match(r"^[A-Za-z]+=", line)
    )
    assert fields["User"] == "syncwarden" and fields["Group"] == "syncwarden"
    assert fields["EnvironmentFile"].startswith("/etc/syncwarden/")
    assert fields["ExecStart"] == "/opt/syncwarden/bin/syncwarden serve"
    assert fields["NoNewPrivileges"] == "yes" and fields["ProtectSystem"] == "strict"
    for key in ("ExecStartPre", "ExecStart"):
        command = " ".join(fields[key].split()[1:])
        assert command in cli_commands(), f"{key} runs {command!r}, which is not a command"
    unknown = set(SETTING.findall(UNIT)) - set(setting_names())
    assert not unknown, unknown


def _runs(dockerfile: str) -> list[str]:
    """Each RUN instruction, with its continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", dockerfile)
    return [line[4:] for line in joined.splitlines() if line.startswith("RUN ")]
