"""The wheel users install, tested where users install it: a fresh virtualenv outside the
repository, with nothing of the source tree importable.

Every other test imports Syncwarden from the editable install, so a package missing from the
wheel (a subpackage, the sandbox's seed file, the migrations' template) would pass them all.
This test builds the sdist and the wheel as a release would, installs the wheel with the locked
dependencies (``requirements.lock``, the same command as the Dockerfile's) next to stand-ins for
the PyPI distributions that install top-level ``workflows``, ``sync``, ``connectors`` and
``manifest`` packages, and runs the commands a deployment starts with.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.process import ServiceProcess, free_port

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements.lock"
# Top-level package names that other distributions on PyPI install (issue 14).
TAKEN_NAMES = ("workflows", "sync", "connectors", "manifest")


@dataclass(frozen=True)
class Installed:
    venv: Path
    work: Path
    build_output: str
    wheel: Path

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def syncwarden(self) -> Path:
        return self.venv / "bin" / "syncwarden"


def outside_environment(**settings: str) -> dict[str, str]:
    """The environment without our settings and without anything that would import the source
    tree (``PYTHONPATH``), plus ``settings``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SYNCWARDEN_") and k not in ("PYTHONPATH", "VIRTUAL_ENV")
    }
    return {**env, **settings}


def run(
    command: Sequence[str | Path], cwd: Path, **settings: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own commands
        [str(part) for part in command],
        cwd=cwd,
        env=outside_environment(**settings),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def succeeded(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"{result.args} exited {result.returncode}:\n{result.stderr}"
    return result.stdout + result.stderr


def install_command(python: Path, *targets: Path) -> list[str | Path]:
    """How the wheel is installed, here and in the Dockerfile: the locked versions only."""
    return [python, "-m", "pip", "install", "--quiet", "--constraint", LOCK, *targets]


def stand_in(work: Path, name: str) -> Path:
    """A tiny distribution that installs a top-level package ``name`` (as PyPI's does)."""
    source = work / "stand-ins" / name
    (source / name).mkdir(parents=True)
    (source / name / "__init__.py").write_text(f'STAND_IN = "{name}"\n')
    (source / "pyproject.toml").write_text(
        "[build-system]\n"
        'requires = ["setuptools>=77"]\n'
        'build-backend = "setuptools.build_meta"\n'
        "[project]\n"
        f'name = "{name}"\n'
        'version = "1.0"\n'
    )
    return source


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    work = tmp_path_factory.mktemp("wheel")
    dist = work / "dist"
    built = run(
        [sys.executable, "-m", "build", "--outdir", dist, ROOT],
        cwd=work,
        PYTHONDONTWRITEBYTECODE="",
    )
    build_output = succeeded(built)
    venv = work / "venv"
    succeeded(run([sys.executable, "-m", "venv", venv], cwd=work))
    python = venv / "bin" / "python"
    stand_ins = [stand_in(work, name) for name in TAKEN_NAMES]
    succeeded(run([python, "-m", "pip", "install", "--quiet", *stand_ins], cwd=work))
    [wheel] = dist.glob("syncwarden-*.whl")
    assert list(dist.glob("syncwarden-*.tar.gz")), "no sdist was built"
    succeeded(run(install_command(python, wheel), cwd=work))
    return Installed(venv, work, build_output, wheel)


def test_the_wheel_holds_every_module_and_data_file_of_the_source_tree(
    installed: Installed,
) -> None:
    """Every file under ``syncwarden/`` that git tracks is in the wheel, whatever its kind (a
    subpackage the package list missed, a seed file, a template), except the Teams manifest's
    developer notes."""
    tracked = subprocess.run(
        ["git", "ls-files", "syncwarden"],  # noqa: S607 - git from PATH, as a developer runs it
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert len(tracked) > 100
    with zipfile.ZipFile(installed.wheel) as wheel:
        shipped = set(wheel.namelist())
    missing = [path for path in tracked if path not in shipped and not path.endswith(".md")]
    assert not missing, f"not in the wheel: {missing}"


def test_the_build_gives_no_setuptools_warnings(installed: Installed) -> None:
    warnings = [line for line in installed.build_output.splitlines() if "warning" in line.lower()]
    assert not warnings, "\n".join(warnings)


def test_the_installed_wheel_answers_its_version_and_checks_its_configuration(
    installed: Installed,
) -> None:
    version = succeeded(run([installed.syncwarden, "--version"], cwd=installed.work))
    assert version.strip().startswith("syncwarden ")
    checked = succeeded(
        run(
            [installed.syncwarden, "config", "check"], cwd=installed.work, SYNCWARDEN_MODE="sandbox"
        )
    )
    assert "OK: the configuration can start in sandbox mode." in checked


def test_the_installed_wheel_migrates_a_new_database(installed: Installed) -> None:
    database = installed.work / "migrated.db"
    url = f"sqlite+aiosqlite:///{database}"
    migrated = succeeded(
        run([installed.syncwarden, "migrate"], cwd=installed.work, SYNCWARDEN_DATABASE__URL=url)
    )
    assert database.is_file(), migrated


async def test_the_installed_wheel_serves_with_its_sandbox_and_is_ready(
    installed: Installed,
) -> None:
    """``serve --sandbox`` starts the sandbox tenant from the wheel (its seed file is package
    data) and the service answers ``/readyz``."""
    port = free_port()
    env = outside_environment(
        SYNCWARDEN_MODE="sandbox",
        SYNCWARDEN_HTTP__PORT=str(port),
        SYNCWARDEN_LOG__FORMAT="json",
        SYNCWARDEN_DATABASE__URL=f"sqlite+aiosqlite:///{installed.work / 'served.db'}",
    )
    service = await ServiceProcess.start(
        env, "--sandbox", cwd=installed.work, python=installed.python
    )
    try:
        await service.wait_for_event("syncwarden.started")
        async with httpx.AsyncClient() as client:
            ready = await client.get(f"http://127.0.0.1:{port}/readyz")
        assert ready.status_code == 200, ready.text
    finally:
        await service.stop()


def test_syncwarden_and_packages_named_like_its_parts_both_import(installed: Installed) -> None:
    """Installed next to distributions that install ``workflows``, ``sync``, ``connectors``
    and ``manifest``, each still imports as itself, and so does every part of Syncwarden."""
    names = ", ".join(TAKEN_NAMES)
    check = (
        f"import {names}\n"
        f"assert [m.STAND_IN for m in ({names},)] == {list(TAKEN_NAMES)!r}\n"
        "import syncwarden.workflows.outbox, syncwarden.sync.worker\n"
        "import syncwarden.connectors.graph.client, syncwarden.manifest, syncwarden.sandbox.seed\n"
    )
    succeeded(run([installed.python, "-c", check], cwd=installed.work))


def test_manifest_build_without_its_extra_says_what_to_install(installed: Installed) -> None:
    """The service does not need Pillow or jsonschema; the one command that does says how to
    get them rather than failing with an import error."""
    result = run([installed.syncwarden, "manifest", "build"], cwd=installed.work)
    assert result.returncode == 2, result.stderr
    assert "pip install 'syncwarden[manifest]'" in result.stderr
    assert "Traceback" not in result.stderr
