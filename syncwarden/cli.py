"""The ``syncwarden`` command line.

Every command loads settings the same way the service does, so ``config check`` shows exactly what
``serve`` would use. Configuration problems exit with status 2 and one line per problem, on stderr.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, NoReturn

import asyncpg
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import Progress
from sqlalchemy.exc import SQLAlchemyError

from syncwarden import __version__
from syncwarden.connectors.errors import ConnectorError
from syncwarden.connectors.scheduling.builtin import BuiltinScheduling
from syncwarden.connectors.scheduling.profile_import import parse_profiles_csv
from syncwarden.core.db import create_engine, session_factory
from syncwarden.core.errors import ConfigurationError
from syncwarden.core.logging import SecretScrubber, configure_logging
from syncwarden.core.settings import (
    Settings,
    database_url_problem,
    find_problems,
    load_settings,
    masked_view,
)
from syncwarden.migrate import upgrade_to_head
from syncwarden.sandbox_process import SandboxStartError
from syncwarden.scim_cli import build_scim_app

if TYPE_CHECKING:  # the server module loads the Agents SDK: only commands that serve import it
    from syncwarden.server import Role
    from syncwarden.workflows.review_lifecycle import AccessReviews
from syncwarden.sync.engine import SyncReport
from syncwarden.sync.reconcile import ReconcileReport
from syncwarden.workflows.audit import export_audit
from syncwarden.workflows.ports import Person
from syncwarden.workflows.repairs import Fix
from syncwarden.workflows.system_actors import SYSTEM_PREFIX
from syncwarden.workflows.unit_of_work import UnitsOfWork

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
audit_app = typer.Typer(help="The audit trail of every change.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")
import_app = typer.Typer(help="Load data from files.", no_args_is_help=True)
app.add_typer(import_app, name="import")
manifest_app = typer.Typer(help="The Teams app package.", no_args_is_help=True)
app.add_typer(manifest_app, name="manifest")
secrets_app = typer.Typer(
    help="App secrets and certificates that are about to expire.", no_args_is_help=True
)
app.add_typer(secrets_app, name="secrets")
review_app = typer.Typer(
    help="Access reviews: does each enrolled person still need calendar sync?",
    no_args_is_help=True,
)
app.add_typer(review_app, name="review")


class ExportFormat(StrEnum):
    CSV = "csv"
    JSONL = "jsonl"


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


def _fail(
    problems: list[str], headline: str = "Syncwarden cannot start with this configuration:"
) -> NoReturn:
    typer.echo(headline, err=True)
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


app.add_typer(build_scim_app(_load, _database_unreachable), name="scim")


@app.command()
def serve(
    sandbox: Annotated[
        bool,
        typer.Option(
            "--sandbox",
            help="Also start the sandbox tenant (a local Microsoft 365 stand-in) and use it.",
        ),
    ] = False,
    background: Annotated[
        bool,
        typer.Option(
            "--background/--no-background",
            help="Also run the background work (the default); leave it to 'syncwarden worker' "
            "processes with --no-background.",
        ),
    ] = True,
) -> None:
    """Run the service: migrate, then serve the bot endpoint, /healthz, /readyz and /metrics.

    It refuses to start (exit 2) while any configuration problem remains; `syncwarden config
    check` lists them. Production is the default mode; `--sandbox` needs SYNCWARDEN_MODE=sandbox
    (`make run` sets it).
    """
    from syncwarden.server import Role

    settings = _load()
    if sandbox and settings.is_production:
        _fail(
            [
                "--sandbox starts the sandbox tenant, which only sandbox mode uses: set "
                "SYNCWARDEN_MODE=sandbox (make run does), or drop --sandbox in production"
            ]
        )
    _run(settings, Role.ALL if background else Role.WEB, with_sandbox=sandbox)


@app.command()
def worker() -> None:
    """Run only the background work: provisioning steps, message delivery, calendar sync and
    the scheduled jobs, with /healthz, /readyz and /metrics (no Teams endpoint).

    Run it beside 'syncwarden serve --no-background' processes; any number of each share one
    PostgreSQL database.
    """
    from syncwarden.server import Role

    _run(_load(), Role.WORKER)


def _run(settings: Settings, role: Role, *, with_sandbox: bool = False) -> None:
    from syncwarden.server import serve as run_server

    configure_logging(settings)
    try:
        asyncio.run(run_server(settings, with_sandbox=with_sandbox, role=role))
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


@audit_app.command("export")
def audit_export(
    since: Annotated[
        str | None,
        typer.Option(
            help="Only events on or after this date or time (ISO 8601, UTC if no offset)."
        ),
    ] = None,
    fmt: Annotated[ExportFormat, typer.Option("--format", help="csv or jsonl.")] = ExportFormat.CSV,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file instead of stdout.")
    ] = None,
) -> None:
    """Write the audit trail (every request, decision and step) as CSV or JSON lines."""
    settings = _load()
    configure_logging(settings)
    start = _parse_since(since) if since else None

    async def run(out: IO[str]) -> int:
        engine = create_engine(settings.database.url.get_secret_value())
        try:
            return await export_audit(session_factory(engine), out, fmt=fmt.value, since=start)
        finally:
            await engine.dispose()

    try:
        if output is None:
            count = asyncio.run(run(sys.stdout))
        else:
            with output.open("w", newline="", encoding="utf-8") as handle:
                count = asyncio.run(run(handle))
    except DATABASE_FAILURES as error:
        _database_unreachable(settings, error)
    typer.echo(f"exported {count} audit events", err=True)


def _parse_since(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(
            f"'{value}' is not a date like 2026-11-01 or 2026-11-01T08:00:00+01:00",
            param_hint="--since",
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@import_app.command("profiles")
def import_profiles(
    file: Annotated[Path, typer.Argument(help="CSV file with a header: id,name,email.")],
) -> None:
    """Load scheduling profiles for the built-in adapter; bad rows are reported, the rest load.

    Exits 1 when any row was rejected, so scripts notice.
    """
    settings = _load()
    configure_logging(settings)
    try:
        text = file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise typer.BadParameter(f"cannot read {file}: {error}", param_hint="FILE") from None
    parsed = parse_profiles_csv(text)

    async def run() -> tuple[int, int]:
        engine = create_engine(settings.database.url.get_secret_value())
        try:
            await upgrade_to_head(engine)
            adapter = BuiltinScheduling(session_factory(engine))
            created = updated = 0
            with Progress(transient=True, console=Console(stderr=True)) as progress:
                task = progress.add_task("importing profiles", total=len(parsed.profiles))
                for profile in parsed.profiles:
                    if await adapter.upsert_profile(profile):
                        created += 1
                    else:
                        updated += 1
                    progress.advance(task)
            return created, updated
        finally:
            await engine.dispose()

    try:
        created, updated = asyncio.run(run())
    except DATABASE_FAILURES as error:
        _database_unreachable(settings, error)
    _import_summary("profiles", created, updated, parsed.errors)


def _import_summary(what: str, created: int, updated: int, errors: Sequence[object]) -> None:
    """Rejected rows on stderr, the counts on stdout; exit 1 when anything was rejected."""
    for rejected in errors:
        typer.echo(f"rejected {rejected}", err=True)
    typer.echo(
        f"imported {created + updated} {what} ({created} new, {updated} updated), "
        f"rejected {len(errors)} rows"
    )
    if errors:
        raise typer.Exit(EXIT_UNAVAILABLE)


@import_app.command("appointments")
def import_appointments(
    file: Annotated[Path, typer.Argument(help="A CSV file (with a header) or an .ics file.")],
    profile: Annotated[
        str | None,
        typer.Option(help="The scheduling profile an .ics file belongs to (CSV rows name theirs)."),
    ] = None,
    time_zone: Annotated[
        str, typer.Option(help="Zone for floating .ics times and all-day dates (IANA name).")
    ] = "UTC",
) -> None:
    """Load appointments into the built-in source; bad rows are listed, the rest load.

    Re-importing replaces appointments with the same id, so an export can be loaded again after
    changes. Exits 1 when any row was rejected.
    """
    from syncwarden.connectors.scheduling.appointment_import import (
        group_by_profile,
        parse_appointments_csv,
        parse_appointments_ics,
    )
    from syncwarden.connectors.scheduling.builtin_appointments import BuiltinAppointments
    from syncwarden.connectors.scheduling.ports import Window

    settings = _load()
    configure_logging(settings)
    full_export: tuple[str, Window] | None = None
    try:
        data = file.read_bytes()
    except OSError as error:
        raise typer.BadParameter(f"cannot read {file}: {error}", param_hint="FILE") from None
    if file.suffix.lower() in (".ics", ".ical", ".ifb"):
        if not profile:
            raise typer.BadParameter("an .ics file needs --profile", param_hint="--profile")
        now = datetime.now(UTC)
        window = Window(
            now - timedelta(days=settings.sync.days_back),
            now + timedelta(days=settings.sync.days_ahead),
        )
        parsed = parse_appointments_ics(data, profile, window, default_zone=time_zone)
        full_export = (profile, window)
    else:
        try:
            parsed = parse_appointments_csv(data.decode("utf-8-sig"))
        except UnicodeDecodeError:
            raise typer.BadParameter(f"{file} is not UTF-8 text", param_hint="FILE") from None

    async def run() -> tuple[int, int]:
        engine = create_engine(settings.database.url.get_secret_value())
        try:
            await upgrade_to_head(engine)
            source = BuiltinAppointments(session_factory(engine))
            created = updated = 0
            grouped = group_by_profile(parsed.appointments)
            with Progress(transient=True, console=Console(stderr=True)) as progress:
                task = progress.add_task("importing appointments", total=len(parsed.appointments))
                for profile_id, items in grouped.items():
                    new, changed = await source.upsert(profile_id, items)
                    created, updated = created + new, updated + changed
                    progress.advance(task, len(items))
            if full_export is not None and not parsed.errors:
                # An .ics file is the whole calendar: what it no longer has was cancelled.
                keep = {a.id for _, a in parsed.appointments}
                await source.cancel_missing(full_export[0], full_export[1], keep)
            return created, updated
        finally:
            await engine.dispose()

    try:
        created, updated = asyncio.run(run())
    except DATABASE_FAILURES as error:
        _database_unreachable(settings, error)
    _import_summary("appointments", created, updated, parsed.errors)


@app.command("sync")
def sync_now(
    person: Annotated[
        str | None, typer.Option(help="Sync one person: their UPN, mailbox address or object id.")
    ] = None,
    everyone: Annotated[bool, typer.Option("--all", help="Sync every active enrollment.")] = False,
    allow_deletions: Annotated[
        bool,
        typer.Option(
            help="Carry out deletions a safety valve stopped (after checking the source)."
        ),
    ] = False,
    full: Annotated[bool, typer.Option(help="Ignore stored delta links: a full resync.")] = False,
) -> None:
    """Sync calendars now, for one person or everyone, and print what each run did.

    Runs here, in this process, sharing the work safely with a running service (leases). Exits
    1 when any person's sync failed.
    """
    from syncwarden.m365 import build_microsoft365
    from syncwarden.sync.engine import SyncOptions
    from syncwarden.workflow_wiring import build_calendar_sync

    if bool(person) == everyone:
        raise typer.BadParameter("give either --person or --all", param_hint="--person/--all")
    settings = _load()
    configure_logging(settings)

    async def run() -> tuple[int, list[SyncReport]]:
        engine = create_engine(settings.database.url.get_secret_value())
        m365 = build_microsoft365(settings)
        try:
            await upgrade_to_head(engine)
            sessions = session_factory(engine)
            sync = build_calendar_sync(settings, UnitsOfWork(sessions), m365)
            worker = sync.worker
            asked = await (worker.request_person(person) if person else worker.request())
            if not asked:
                return 0, []
            with Progress(transient=True, console=Console(stderr=True)) as progress:
                task = progress.add_task("syncing calendars", total=asked)
                worker.add_progress(lambda: progress.advance(task))
                reports = await worker.run_requested(
                    SyncOptions(allow_deletions=allow_deletions, full=full)
                )
            return asked, reports
        finally:
            await m365.aclose()
            await engine.dispose()

    try:
        asked, reports = asyncio.run(run())
    except DATABASE_FAILURES as error:
        _database_unreachable(settings, error)
    if not asked:
        typer.echo(f"nobody active matches {person!r}" if person else "nobody is enrolled")
        raise typer.Exit(EXIT_UNAVAILABLE)
    for report in reports:
        typer.echo(_sync_line(report))
    failed = sum(1 for report in reports if not report.ok)
    typer.echo(f"synced {len(reports)} of {asked} requested, {failed} failed")
    if len(reports) < asked:
        typer.echo(
            f"{asked - len(reports)} were taken by another Syncwarden process (a running "
            "service syncs requests within seconds); see `users` in Teams for their result"
        )
    if failed or len(reports) < asked:
        raise typer.Exit(EXIT_UNAVAILABLE)


def _sync_line(report: SyncReport) -> str:
    if report.skipped:
        return f"{report.person}: skipped ({report.skipped})"
    if not report.ok:
        kind = report.error_kind.value if report.error_kind else "other"
        return f"{report.person}: FAILED ({kind}) {report.error}"
    return (
        f"{report.person}: {report.created} created, {report.updated} updated, "
        f"{report.deleted} deleted, {report.recreated} re-created, {report.busy_blocks} busy "
        f"blocks, {report.requests} Graph requests{' (full resync)' if report.full_resync else ''}"
    )


@manifest_app.command("build")
def manifest_build(
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the zip.")] = Path(
        "appPackage.zip"
    ),
) -> None:
    """Build the Teams app package (manifest + icons) from the settings and check it.

    The manifest is validated against Microsoft's v1.24 schema and the icons against Teams'
    rules; any problem is listed and nothing is written (exit 2).
    """
    try:
        from syncwarden.manifest_build import ManifestError, build_package
    except ImportError as error:  # jsonschema or Pillow: the "manifest" extra
        _fail(
            [
                f"it needs {error.name or 'a package'} from the 'manifest' extra: "
                "pip install 'syncwarden[manifest]'"
            ],
            "The Teams app package cannot be built here:",
        )

    settings = _load()
    try:
        built = build_package(settings, output)
    except ManifestError as error:
        _fail(error.problems, "The Teams app package was not built:")
    typer.echo(
        f"wrote {built.path} (app id {built.manifest['id']}, version {built.manifest['version']})"
    )


@app.command()
def doctor() -> None:
    """Check the configuration against the real tenant and print each item as pass or fail.

    Covers the Graph and Exchange tokens and their permissions, the sync group and its write
    path, a test mailbox and its access policy, approvers and IT admins, the Teams channels, the
    database and the bot's credential. Exits 0 only when nothing failed, 1 otherwise.
    """
    from syncwarden.doctor import Doctor, DoctorReport
    from syncwarden.m365 import build_microsoft365
    from syncwarden.workflow_wiring import BotTokens

    settings = _load()
    configure_logging(settings)

    async def run() -> DoctorReport:
        engine = create_engine(settings.database.url.get_secret_value())
        m365 = build_microsoft365(settings) if settings.graph.client_id else None
        try:
            checkup = Doctor(settings, engine, session_factory(engine), m365, BotTokens(settings))
            return await checkup.run()
        finally:
            if m365 is not None:
                await m365.aclose()
            await engine.dispose()

    report = asyncio.run(run())
    for check in report.checks:
        typer.echo(check.line())
    if report.ok:
        typer.echo(f"All {len(report.checks)} checks passed.")
        return
    typer.echo(f"{report.failures} of {len(report.checks)} checks failed.")
    raise typer.Exit(EXIT_UNAVAILABLE)


@secrets_app.command("scan")
def secrets_scan() -> None:
    """Check the watched app registrations' secrets and certificates now.

    New alerts go to the IT channel (through the outbox) exactly as the daily scan sends them; a
    credential already alerted at its threshold is not alerted again.
    """
    from syncwarden.m365 import build_microsoft365
    from syncwarden.workflow_wiring import build_credential_watch

    settings = _load()
    configure_logging(settings)

    async def run() -> str:
        engine = create_engine(settings.database.url.get_secret_value())
        m365 = build_microsoft365(settings)
        try:
            await upgrade_to_head(engine)
            sessions = session_factory(engine)
            watch = build_credential_watch(settings, UnitsOfWork(sessions), m365)
            report = await watch.scan()
            return (
                f"checked {report.apps} app registrations: {report.findings} credentials need "
                f"attention, {report.alerted} new alerts, {report.resolved} resolved"
            )
        finally:
            await m365.aclose()
            await engine.dispose()

    try:
        typer.echo(asyncio.run(run()))
    except ConnectorError as error:
        typer.echo(f"Microsoft 365 refused or failed the scan: {error}", err=True)
        raise typer.Exit(EXIT_UNAVAILABLE) from None
    except DATABASE_FAILURES as error:
        _database_unreachable(settings, error)


@app.command()
def reconcile(
    full: Annotated[
        bool,
        typer.Option(help="Ignore stored delta links: read the group and the directory in full."),
    ] = False,
    fix: Annotated[
        list[str] | None,
        typer.Option(
            help="Carry out a fix as a ticket: FINDING=FIX for one finding (its key, as listed) "
            "or KIND=FIX for every finding of a kind, e.g. unenrolled_member=adopt. Repeatable.",
        ),
    ] = None,
    ignore: Annotated[
        list[str] | None,
        typer.Option(help="Keep a finding (its key) off IT's cards until it changes. Repeatable."),
    ] = None,
    allow_mass_removal: Annotated[
        bool,
        typer.Option(
            help="Go ahead with leavers' removals even when there are more than "
            "SYNCWARDEN_RECONCILE__MAX_REMOVAL_SHARE of the enrollments at once.",
        ),
    ] = False,
) -> None:
    """Compare the sync group, enrollments, scheduling mappings and directory now, print every
    difference, and carry out the fixes asked for.

    New differences are told to the IT channel (through the outbox) and leavers past their grace
    period and movers get their tickets, as in the daily run. The tickets are carried out by the
    running service. Exits 0 when nothing differs, 1 when something does.
    """
    from syncwarden.m365 import build_microsoft365
    from syncwarden.workflow_wiring import build_workflows

    settings = _load()
    configure_logging(settings)
    if not settings.graph.sync_group_id:
        typer.echo(
            "Set SYNCWARDEN_GRAPH__SYNC_GROUP_ID: reconciliation compares that group.", err=True
        )
        raise typer.Exit(EXIT_CONFIGURATION)
    chosen = _fixes_asked(fix or [])
    actor = Person(f"{SYSTEM_PREFIX}cli:{getpass.getuser()}", f"{getpass.getuser()} (command line)")

    async def run() -> tuple[ReconcileReport, list[str]]:
        engine = create_engine(settings.database.url.get_secret_value())
        m365 = build_microsoft365(settings)
        try:
            await upgrade_to_head(engine)
            workflows = build_workflows(settings, session_factory(engine), m365)
            assert workflows is not None  # the sync group is set (checked above)
            try:
                report = await workflows.reconciler.run(
                    full=full, allow_mass_removal=allow_mass_removal
                )
            finally:
                for close in workflows.sync.closers:
                    await close()
            desk = workflows.drift
            done: list[str] = []
            for finding in report.findings:
                how = chosen.get(finding.key) or chosen.get(finding.kind.value)
                if how:
                    done.append(await desk.fix(finding.key, how, actor))
            # A finding named by its key but not among this run's (resolved meanwhile, or its
            # person's ticket is under way) still gets an answer: the desk says which.
            listed = {finding.key for finding in report.findings}
            for key, how in chosen.items():
                if ":" in key and key not in listed:
                    done.append(await desk.fix(key, how, actor))
            for key in ignore or []:
                done.append(await desk.ignore(key, "", actor))
            return report, done
        finally:
            await m365.aclose()
            await engine.dispose()

    try:
        report, done = asyncio.run(run())
    except ConnectorError as error:
        typer.echo(f"Microsoft 365 refused or failed the reconciliation: {error}", err=True)
        raise typer.Exit(EXIT_UNAVAILABLE) from None
    except DATABASE_FAILURES as error:
        _database_unreachable(settings, error)
    news = {finding.key for finding in report.news}
    for finding in report.findings:
        facts = ", ".join(f"{name} {value}" for name, value in finding.facts)
        marks = " (new)" if finding.key in news else ""
        marks += " (ignored)" if finding.key in report.ignored else ""
        fixes = " or ".join(fix.value for fix in finding.fixes)
        who = finding.name or finding.subject_id
        typer.echo(f"{finding.key}: {who}{marks}: {facts}; fix: {fixes}")
    for line in done:
        typer.echo(line)
    if report.opened:
        typer.echo("Opened by reconciliation: " + ", ".join(report.opened))
    if report.held:
        typer.echo(
            f"The valve held {len(report.held)} leavers' removals (more than "
            f"{settings.reconcile.max_removal_share:.0%} of the enrollments at once): check the "
            "directory, then run again with --allow-mass-removal if they really left."
        )
    typer.echo(str(report))
    if report.findings:
        raise typer.Exit(1)


def _on_reviews(what: Callable[[AccessReviews], Awaitable[str]]) -> str:
    """Run ``what`` on the access reviews wired as the service wires them (messages go to the
    outbox, which the running service delivers)."""
    from syncwarden.m365 import build_microsoft365
    from syncwarden.workflow_wiring import build_workflows

    settings = _load()
    configure_logging(settings)
    if not settings.graph.sync_group_id:
        typer.echo(
            "Set SYNCWARDEN_GRAPH__SYNC_GROUP_ID: reviews are of that group's access.", err=True
        )
        raise typer.Exit(EXIT_CONFIGURATION)

    async def run() -> str:
        engine = create_engine(settings.database.url.get_secret_value())
        m365 = build_microsoft365(settings)
        try:
            await upgrade_to_head(engine)
            workflows = build_workflows(settings, session_factory(engine), m365)
            assert workflows is not None  # the sync group is set
            return await what(workflows.service.reviews)
        finally:
            await m365.aclose()
            await engine.dispose()

    try:
        return asyncio.run(run())
    except ConnectorError as error:
        typer.echo(f"Microsoft 365 refused or failed the review: {error}", err=True)
        raise typer.Exit(EXIT_UNAVAILABLE) from None
    except DATABASE_FAILURES as error:
        _database_unreachable(settings, error)


# The actor the audit trail names for reviews started or closed from the command line.
CLI_ACTOR_ID = "syncwarden:cli"


@review_app.command("start")
def review_start() -> None:
    """Start an access review of everyone enrolled now (whatever REVIEWS__EVERY_MONTHS says).

    The reviewers get their cards in Teams; exits 1 when a review is already open."""
    from syncwarden.workflows.ports import Person

    started: list[bool] = []

    async def start(reviews: AccessReviews) -> str:
        result = await reviews.start(Person(CLI_ACTOR_ID, "IT (command line)", CLI_ACTOR_ID))
        started.append(not isinstance(result, str))
        return str(result)

    typer.echo(_on_reviews(start))
    if not started[0]:
        raise typer.Exit(1)


@review_app.command("status")
def review_status() -> None:
    """Every access review, newest first: people, kept, removed, undecided."""

    async def status(reviews: AccessReviews) -> str:
        found = await reviews.summaries()
        return "\n".join(str(summary) for summary in found) or "No access review yet."

    typer.echo(_on_reviews(status))


@review_app.command("close")
def review_close(
    review: Annotated[str, typer.Argument(help="The review, e.g. AR-3.")],
) -> None:
    """Close a review now: undecided people follow REVIEWS__DEFAULT_DECISION."""
    from syncwarden.workflows.review_records import review_id_from_ref

    review_id = review_id_from_ref(review)
    if review_id is None:
        typer.echo(f"{review!r} is not a review name; they look like AR-3.", err=True)
        raise typer.Exit(EXIT_CONFIGURATION)

    async def close(reviews: AccessReviews) -> str:
        return str(await reviews.close(review_id))

    typer.echo(_on_reviews(close))


def _fixes_asked(asked: Sequence[str]) -> dict[str, str]:
    """``--fix`` values as {finding key or kind: fix}; a malformed one stops with a message."""
    chosen: dict[str, str] = {}
    for entry in asked:
        target, _, how = entry.rpartition("=")
        if not target.strip() or how.strip() not in {fix.value for fix in Fix}:
            typer.echo(
                f"--fix {entry!r}: expected FINDING=FIX or KIND=FIX, FIX one of "
                + ", ".join(fix.value for fix in Fix),
                err=True,
            )
            raise typer.Exit(EXIT_CONFIGURATION)
        chosen[target.strip()] = how.strip()
    return chosen


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
