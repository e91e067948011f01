"""The ``syncwarden`` command line.

Every command loads settings the same way the service does, so ``config check`` shows exactly what
``serve`` would use. Configuration problems exit with status 2 and one line per problem, on stderr.
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, NoReturn

import asyncpg
import typer
from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from core.db import create_engine
from core.errors import ConfigurationError
from core.logging import SecretScrubber, configure_logging
from core.settings import Settings, database_url_problem, find_problems, load_settings, masked_view
from syncwarden import __version__
from syncwarden.migrate import upgrade_to_head
from syncwarden.sandbox_process import SandboxStartError

EXIT_UNAVAILABLE = 1
EXIT_CONFIGURATION = 2
# What a database that is down, unreachable or refusing us raises through SQLAlchemy and asyncpg.
DATABASE_FAILURES = (OSError, SQLAlchemyError, asyncpg.PostgresError)

app = typer.Typer(
    help="Syncwarden: calendar-sync access requests, approvals and sync health, run from Teams.",
    no_args_is_help=True,
    add_completion=False,
)
config_app = typer.Typer(help="Inspect the configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"syncwarden {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Print the version and exit.",
            callback=_version_callback,
            is_eager=True,
        ),
    ] = False,
) -> None:
    """Syncwarden: calendar-sync access requests, approvals and sync health, run from Teams."""


def _load() -> Settings:
    try:
        return load_settings()
    except ValidationError as error:
        problems = [
            f"{'.'.join(str(part) for part in item['loc']) or 'settings'}: {item['msg']}"
            for item in error.errors()
        ]
        _fail(problems)


def _fail(problems: list[str]) -> NoReturn:
    typer.echo("Syncwarden cannot start with this configuration:", err=True)
    for problem in problems:
        typer.echo(f"- {problem}", err=True)
    raise typer.Exit(EXIT_CONFIGURATION)


def _database_unreachable(settings: Settings, error: BaseException) -> NoReturn:
    detail = SecretScrubber(settings.secret_values()).scrub(
        str(error).splitlines()[0] if str(error) else ""
    )
    typer.echo(
        f"Syncwarden cannot use the database at {masked_view(settings)['database']['url']}: "
        f"{type(error).__name__}: {detail}",
        err=True,
    )
    typer.echo("Check that the server is running and SYNCWARDEN_DATABASE__URL is right.", err=True)
    raise typer.Exit(EXIT_UNAVAILABLE)


@app.command()
def serve(
    sandbox: Annotated[
        bool,
        typer.Option(
            "--sandbox",
            help="Also start the sandbox tenant (a local Microsoft 365 stand-in) and use it.",
        ),
    ] = False,
) -> None:
    """Run the service: migrate, then serve the bot endpoint, /healthz, /readyz and /metrics.

    In production mode it refuses to start (exit 2) while any configuration problem remains;
    `syncwarden config check` lists them.
    """
    from syncwarden.server import serve as run_server

    settings = _load()
    configure_logging(settings)
    try:
        asyncio.run(run_server(settings, with_sandbox=sandbox))
    except ConfigurationError as error:
        _fail(error.problems)
    except SandboxStartError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(EXIT_UNAVAILABLE) from None
    except DATABASE_FAILURES as error:
        _database_unreachable(settings, error)


@app.command()
def migrate() -> None:
    """Apply every pending database migration and print the schema revision."""
    settings = _load()
    configure_logging(settings)
    url = settings.database.url.get_secret_value()
    problem = database_url_problem(url)
    if problem:
        _fail([problem])

    async def run() -> str | None:
        engine = create_engine(url)
        try:
            return (await upgrade_to_head(engine)).current
        finally:
            await engine.dispose()

    try:
        revision = asyncio.run(run())
    except DATABASE_FAILURES as error:
        _database_unreachable(settings, error)
    typer.echo(f"database schema is at revision {revision}")


@config_app.command("check")
def config_check(
    as_json: Annotated[bool, typer.Option("--json", help="Print the settings as JSON.")] = False,
) -> None:
    """Print the effective settings (secrets masked) and every problem, without starting anything.

    Exits 0 when the configuration can start in its mode, 2 otherwise.
    """
    settings = _load()
    view = masked_view(settings)
    if as_json:
        typer.echo(json.dumps(view, indent=2))
    else:
        for line in _flatten(view):
            typer.echo(line)
    problems = find_problems(settings)
    if problems:
        _fail(problems)
    typer.echo(f"OK: the configuration can start in {settings.mode.value} mode.")


def _flatten(data: dict[str, object], prefix: str = "") -> list[str]:
    lines: list[str] = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            lines.extend(_flatten(value, prefix=f"{name}."))
        else:
            lines.append(f"{name} = {value if value is not None else '(unset)'}")
    return lines


def main() -> None:
    app()
