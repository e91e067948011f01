"""``make run`` gives a working demo: the README's Playground walkthrough, word for word.

The main test runs the commands of the Makefile's ``run`` target (read from the Makefile, so it
follows any change there) as real child processes in an empty directory: ``syncwarden migrate``,
then ``syncwarden serve --sandbox`` with the variables the recipe sets. Two settings are added
that change nothing the walkthrough depends on: a free port instead of 3978 (tests run beside
other processes) and JSON log lines (so the test can read them). Nothing is imported by hand:
the scheduling profiles and appointments are the demo data ``serve --sandbox`` loads itself.

Then it talks to the service as the Microsoft 365 Agents Playground does, with the people of
``docs/playground/.m365agentsplayground.yml`` and activities shaped like the ones the Playground
sends (captured from ``@microsoft/m365agentsplayground``); their ``serviceUrl`` is a local
recorder that stands in for the Playground's connector and collects what the bot sends back.
Every wait is on an event (a log line, a delivery to the recorder), never a sleep.

The other tests check the demo data and its loader in-process: it names the sandbox's people,
places appointments in the coming two weeks, loads once into empty tables, and never loads in
production, beside imported data, or for another adapter or source.
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import ssl
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from syncwarden.connectors.scheduling.builtin import BuiltinScheduling, ProfileRecord
from syncwarden.connectors.scheduling.builtin_appointments import AppointmentRecord
from syncwarden.connectors.scheduling.ports import Profile
from syncwarden.core.db import create_engine, session_factory
from syncwarden.core.settings import Settings
from syncwarden.demo_data import DemoScheduling, demo_scheduling, load_demo_scheduling
from syncwarden.m365 import build_microsoft365
from syncwarden.sandbox.seed import DEFAULT_SEED
from syncwarden.sandbox.server import SandboxTenant
from syncwarden.workflow_wiring import build_workflows
from syncwarden.workflows.model import TicketStatus
from syncwarden.workflows.ports import Person
from syncwarden.workflows.records import Ticket
from tests.support.m365 import sandbox_settings
from tests.support.process import ServiceProcess, cli_environment, free_port
from tests.support.recorder import ConnectorRecorder, RecordedRequest

ROOT = Path(__file__).resolve().parents[2]
MAKEFILE = ROOT / "Makefile"
README = ROOT / "README.md"
PLAYGROUND_CONFIG = ROOT / "docs" / "playground" / ".m365agentsplayground.yml"
WAIT_SECONDS = 90.0
SYNCWARDEN_APP = "Syncwarden"


# -- make run, as the Makefile says ----------------------------------------------------------


@dataclass(frozen=True)
class Command:
    """One line of a recipe that runs ``syncwarden``: the variables it sets and its arguments."""

    variables: dict[str, str]
    arguments: list[str]


def make_run_commands() -> list[Command]:
    """The ``syncwarden`` commands of the Makefile's ``run`` target, in order.

    Echo lines (``@echo``) are skipped; every other line must run ``$(BIN)/syncwarden``,
    optionally after ``NAME=value`` assignments, which is what ``make run`` does today.
    """
    lines = MAKEFILE.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(r"^run\s*:", line))
    commands = []
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        text = line.strip()
        if text.startswith("@"):
            continue
        words = shlex.split(text)
        variables = {}
        while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):
            name, _, value = words.pop(0).partition("=")
            variables[name] = value
        assert words and words[0] == "$(BIN)/syncwarden", f"make run runs {text!r}"
        commands.append(Command(variables, words[1:]))
    return commands


async def run_to_end(env: dict[str, str], cwd: Path, *arguments: str) -> str:
    """Run ``python -m syncwarden ARGUMENTS`` to its end; its output, after checking it ended 0."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "syncwarden",
        *arguments,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), WAIT_SECONDS)
    assert process.returncode == 0, output.decode(errors="replace")
    return output.decode(errors="replace")


class LogWatch:
    """Every log line of the service, read as it arrives; waits are woken by new lines.

    Reading all the time matters: a child whose stderr nobody reads blocks on its next log line
    once the pipe is full, which would stall the turn the test is waiting for.
    """

    def __init__(self, stream: asyncio.StreamReader) -> None:
        self.lines: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self._changed = asyncio.Condition()
        self._ended = False
        self._reader = asyncio.create_task(self._read(stream), name="make-run-log")

    async def _read(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            text = line.decode(errors="replace")
            try:
                parsed = json.loads(text)
            except json.JSONDecodeError:
                parsed = None
            async with self._changed:
                self.raw.append(text)
                if isinstance(parsed, dict):
                    self.lines.append(parsed)
                self._changed.notify_all()
        async with self._changed:
            self._ended = True
            self._changed.notify_all()

    async def wait_for(
        self, event: str, accept: Callable[[dict[str, Any]], bool] = lambda _: True
    ) -> dict[str, Any]:
        """The first line with ``event`` that ``accept`` takes, waiting for it if need be."""

        def found() -> dict[str, Any] | None:
            return next((x for x in self.lines if x.get("event") == event and accept(x)), None)

        try:
            async with asyncio.timeout(WAIT_SECONDS), self._changed:
                while (line := found()) is None:
                    if self._ended:
                        raise AssertionError(self._story(f"the service ended before {event}"))
                    await self._changed.wait()
                return line
        except TimeoutError:
            raise AssertionError(self._story(f"no {event} within {WAIT_SECONDS} s")) from None

    def _story(self, headline: str) -> str:
        return headline + ":\n" + "".join(self.raw[-60:])

    async def close(self) -> None:
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)


async def delivered(
    recorder: ConnectorRecorder, conversation: str, containing: str = "", *, since: int = 0
) -> tuple[str, RecordedRequest]:
    """The bot's first post to ``conversation`` (from the ``since``-th request to the connector
    on) whose body holds ``containing``, and the id the connector gave it (the recorder answers
    the n-th request with ``reply-n``)."""
    path = f"/v3/conversations/{conversation}/activities"
    try:
        async with asyncio.timeout(WAIT_SECONDS):
            while True:
                recorder.received.clear()  # before looking: a post after the look wakes the wait
                for index, request in enumerate(recorder.requests[since:], start=since):
                    if (
                        request.method == "POST"
                        # a reply in a turn goes to .../activities/{the activity it answers}
                        and (request.path == path or request.path.startswith(f"{path}/"))
                        and containing in json.dumps(request.body, ensure_ascii=False)
                    ):
                        return f"reply-{index + 1}", request
                await recorder.received.wait()
    except TimeoutError:
        posts = [f"{r.method} {r.path}: {r.body}" for r in recorder.requests]
        raise AssertionError(
            f"nothing with {containing!r} reached {conversation} within {WAIT_SECONDS} s; "
            "the bot sent:\n" + "\n".join(posts)
        ) from None


# -- the Playground's people and activities --------------------------------------------------


@dataclass
class PlaygroundPerson:
    id: str
    name: str = ""
    aad_object_id: str = ""


@dataclass
class Playground:
    """What ``docs/playground/.m365agentsplayground.yml`` sets up for ``make run``."""

    tenant_id: str = ""
    bot_id: str = ""
    bot_name: str = ""
    personal_chat: str = ""
    team: str = ""
    # Channel ids by name; the Playground names the team's own channel "General".
    channels: dict[str, str] = field(default_factory=dict)
    people: dict[str, PlaygroundPerson] = field(default_factory=dict)  # by first name

    def person(self, first_name: str) -> PlaygroundPerson:
        return self.people[first_name]


def playground_config() -> Playground:
    """The fields the walkthrough needs, read from the Playground's YAML (no YAML library: the
    file is plain ``key: value`` lines under a few sections)."""
    config = Playground()
    section = ""
    person: PlaygroundPerson | None = None
    channel = ""
    for line in PLAYGROUND_CONFIG.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, _, value = line.strip().removeprefix("- ").partition(":")
        value = value.strip().strip('"')
        if not line.startswith(" "):
            section = key
            if key == "tenantId":
                config.tenant_id = value
            continue
        if section in ("currentUser", "users"):
            if key == "id":
                person = PlaygroundPerson(value)
            elif person is not None and key == "name":
                person.name = value
                config.people[value.split()[0].lower()] = person
            elif person is not None and key == "aadObjectId":
                person.aad_object_id = value
        elif section == "bot" and key in ("id", "name"):
            setattr(config, f"bot_{key}", value)
        elif section == "personalChat" and key == "id":
            config.personal_chat = value
        elif section == "team" and key == "id":
            if not config.team:  # the team's own id comes first, its channels' ids after
                config.team = config.channels["General"] = value
            else:
                channel = value
        elif section == "team" and key == "name" and channel:
            config.channels[value] = channel
    return config


def readme_walkthrough() -> str:
    """The README's Playground section, which the test follows."""
    readme = README.read_text()
    start = readme.index("## Try it in the Microsoft 365 Agents Playground")
    return readme[start : readme.index("\n## ", start + 1)]


def readme_activity(section: str) -> dict[str, Any]:
    """The custom activity the README gives to send (Casey's approval)."""
    found = re.search(r"```json\n(.*?)```", section, re.DOTALL)
    assert found, "the README's walkthrough gives Casey's approval as a JSON activity"
    activity: dict[str, Any] = json.loads(found.group(1))
    return activity


def _stamp() -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "channelId": "msteams",
    }


def _typed_by_a_person() -> dict[str, Any]:
    """What the Playground's own UI adds to what you type or click."""
    now = datetime.now(UTC)
    return {
        "localTimestamp": now.isoformat(timespec="milliseconds"),
        "localTimezone": "UTC",
        "locale": "en-US",
        "entities": [
            {
                "type": "clientInfo",
                "locale": "en-US",
                "country": "US",
                "platform": "Web",
                "timezone": "UTC",
            }
        ],
    }


@dataclass
class Walkthrough:
    """Sends the service what the Playground sends for each step (shapes captured from
    ``@microsoft/m365agentsplayground``), with the recorder as the connector to answer."""

    http: aiohttp.ClientSession
    endpoint: str
    service_url: str
    playground: Playground

    def _bot(self) -> dict[str, Any]:
        return {"id": self.playground.bot_id, "name": self.playground.bot_name}

    def _personal(self) -> dict[str, Any]:
        return {
            "conversationType": "personal",
            "tenantId": self.playground.tenant_id,
            "id": self.playground.personal_chat,
        }

    async def _post(self, activity: dict[str, Any]) -> dict[str, Any] | None:
        async with self.http.post(self.endpoint, json=activity) as response:
            assert response.status in (200, 201, 202), await response.text()
            if activity["type"] != "invoke":
                return None
            answer: dict[str, Any] = await response.json()
            assert answer.get("statusCode") == 200, answer
            return answer

    async def say(self, person: PlaygroundPerson, text: str) -> None:
        """The current user types ``text`` in the personal chat."""
        await self._post(
            {
                **_stamp(),
                **_typed_by_a_person(),
                "type": "message",
                "text": text,
                "textFormat": "plain",
                "from": {"id": person.id, "name": person.name, "aadObjectId": person.aad_object_id},
                "serviceUrl": self.service_url,
                "conversation": self._personal(),
                "recipient": self._bot(),
                "channelData": {"tenant": {"id": self.playground.tenant_id}},
            }
        )

    async def click(
        self, person: PlaygroundPerson, message_id: str, verb: str, data: dict[str, Any]
    ) -> dict[str, Any] | None:
        """The current user presses an Action.Execute button of card ``message_id``."""
        return await self._post(
            {
                **_stamp(),
                **_typed_by_a_person(),
                "type": "invoke",
                "name": "adaptiveCard/action",
                "from": {"id": person.id, "name": person.name, "aadObjectId": person.aad_object_id},
                "serviceUrl": self.service_url,
                "conversation": self._personal(),
                "recipient": self._bot(),
                "channelData": {
                    "source": {"name": "message"},
                    "tenant": {"id": self.playground.tenant_id},
                },
                "replyToId": message_id,
                "value": {
                    "action": {"type": "Action.Execute", "verb": verb, "data": data},
                    "trigger": "manual",
                },
            }
        )

    async def custom_activity(
        self, channel: str, person: PlaygroundPerson, fields: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Mock an Activity → Trigger Custom Activity in ``channel``: the Playground's template
        for it with ``from`` set to ``person`` and ``fields`` filled in, as the README says."""
        template = {
            **_stamp(),
            "serviceUrl": self.service_url,
            "recipient": self._bot(),
            "conversation": {
                "id": self.playground.channels[channel],
                "isGroup": True,
                "conversationType": "channel",
                "tenantId": self.playground.tenant_id,
            },
            "type": "<custom-activity-type>",
        }
        sender = {"id": person.id, "name": person.name, "aadObjectId": person.aad_object_id}
        return await self._post({**template, "from": sender, **fields})


def card_of(request: RecordedRequest) -> dict[str, Any]:
    attachments = request.body.get("attachments") or []
    assert attachments, f"no card in {request.body}"
    card: dict[str, Any] = attachments[0]["content"]
    return card


def submitted_data(card: dict[str, Any], verb: str) -> dict[str, Any]:
    """What Teams sends for a click on ``verb`` with the card's inputs left as shown: the
    action's own data, the verb, and every input's current value under its id."""
    action = next(a for a in card.get("actions", []) if a.get("verb") == verb)
    data: dict[str, Any] = {**action.get("data", {}), "verb": verb}
    for element in card["body"]:
        if str(element.get("type", "")).startswith("Input.") and "id" in element:
            data[element["id"]] = element.get("value", "")
    return data


# -- the walkthrough -------------------------------------------------------------------------

ASK = "add me to calendar sync"
FOR_APPROVALS = "@Syncwarden use this channel for approvals"
FOR_ALERTS = "@Syncwarden use this channel for alerts"
STATUS = "status"
COMPLETED = "SW-1001 · Sasha Verhoeven · completed"


async def test_the_readme_playground_walkthrough_works_on_a_fresh_make_run(
    tmp_path: Path,
) -> None:
    section = readme_walkthrough()
    for words in (ASK, FOR_APPROVALS, FOR_ALERTS, STATUS, COMPLETED):
        assert f"`{words}`" in section, f"the README's walkthrough no longer says `{words}`"
    for channel in ("Approvals", "General"):
        assert f"**{channel}** channel" in section, channel
    approval = readme_activity(section)

    commands = make_run_commands()
    assert [c.arguments[0] for c in commands] == ["migrate", "serve"], commands
    migrate, serve = commands
    port = free_port()
    test_only = {"SYNCWARDEN_HTTP__PORT": str(port), "SYNCWARDEN_LOG__FORMAT": "json"}
    assert not set(test_only) & set(serve.variables), "the test would change what make run sets"
    # An empty directory is a fresh clone's state for `make run`: no var/, no .env.
    output = await run_to_end(cli_environment(**migrate.variables), tmp_path, *migrate.arguments)
    assert "database schema is at revision" in output

    env = cli_environment(**serve.variables, **test_only)
    service = await ServiceProcess.start(env, *serve.arguments[1:], cwd=tmp_path)
    assert service.process.stderr is not None
    log = LogWatch(service.process.stderr)
    recorder = await ConnectorRecorder().start()
    pg = playground_config()
    sasha, dana, casey = pg.person("sasha"), pg.person("dana"), pg.person("casey")
    approvals, general = pg.channels["Approvals"], pg.channels["General"]
    try:
        await log.wait_for("syncwarden.started")
        async with aiohttp.ClientSession() as http:
            walk = Walkthrough(
                http, f"http://127.0.0.1:{port}/api/messages", recorder.url.rstrip("/"), pg
            )
            # 1. Dana gives the Approvals channel the approval cards and General IT's news.
            said = {"type": "message", "text": FOR_APPROVALS}
            await walk.custom_activity("Approvals", dana, said)
            await delivered(recorder, approvals, "Approval cards now go to this channel")
            await walk.custom_activity("General", dana, {"type": "message", "text": FOR_ALERTS})
            await delivered(recorder, general, "status lines, failures and alerts")

            # 2. Sasha asks; the card has her mailbox and her (demo) profile. She sends it.
            asked = len(recorder.requests)
            await walk.say(sasha, ASK)
            form_id, form_post = await delivered(recorder, pg.personal_chat, since=asked)
            assert "no scheduling profile matches" not in json.dumps(form_post.body), (
                "make run gave Sasha no scheduling profile: " + str(form_post.body.get("text"))
            )
            form = card_of(form_post)
            inputs = {e["id"]: e for e in form["body"] if "id" in e}
            assert inputs["mailbox"]["value"] == "sasha.verhoeven@example.edu"
            assert inputs["profile"]["value"] == "demo-sasha-verhoeven", inputs["profile"]
            sent = await walk.click(
                sasha, form_id, "submit_request", submitted_data(form, "submit_request")
            )
            assert "SW-1001" in json.dumps(sent), sent

            # 3. The approval card reaches the Approvals channel; Casey approves with the
            # README's custom activity.
            _, card = await delivered(recorder, approvals, "Calendar sync request · SW-1001")
            assert "Sasha Verhoeven" in json.dumps(card_of(card))
            decided = await walk.custom_activity("Approvals", casey, approval)
            assert "Approved** by Casey Lindqvist" in json.dumps(decided), decided

            # 4. The service's own background work provisions: Sasha gets her set-up
            # instructions, General the status line, and her mailbox the demo appointments.
            _, instructions = await delivered(
                recorder, pg.personal_chat, "Your calendar sync is ready"
            )
            assert "sasha.verhoeven@example.edu" in instructions.body["text"]
            await delivered(recorder, general, COMPLETED)
            synced = await log.wait_for("sync.run", lambda line: bool(line.get("created")))
            assert synced["ok"] is True, synced
            sandbox_url = (await log.wait_for("sandbox.started"))["base_url"]
            outlook = await outlook_starts(
                http, sandbox_url, tmp_path, "sasha.verhoeven@example.edu"
            )

            asked = len(recorder.requests)
            await walk.say(sasha, STATUS)
            await delivered(
                recorder,
                pg.personal_chat,
                "Your calendar syncs into **sasha.verhoeven@example.edu**",
                since=asked,
            )

        loaded = await log.wait_for("demo_data.loaded")
        database = tmp_path / "var" / "syncwarden.db"
        status, booked = await read_database(database, "demo-sasha-verhoeven")
        assert status == TicketStatus.COMPLETED
        assert synced["created"] == len(booked) > 0
        assert outlook == sorted(booked), "every demo appointment is in Outlook, at its time"
        assert loaded["profiles"] == len(demo_scheduling(datetime.now(UTC)).profiles)
    finally:
        await service.stop()
        await log.close()
        await recorder.close()


async def outlook_starts(
    http: aiohttp.ClientSession, sandbox_url: str, workdir: Path, mailbox: str
) -> list[datetime]:
    """When the events in ``mailbox`` over the coming weeks start, read through Graph from the
    sandbox that ``serve --sandbox`` started (its CA is in ``var/sandbox`` of the workdir)."""
    seed = json.loads(DEFAULT_SEED.read_text())
    app_id = next(a["appId"] for a in seed["applications"] if a["displayName"] == SYNCWARDEN_APP)
    tls = ssl.create_default_context(cafile=str(workdir / "var" / "sandbox" / "sandbox-ca.pem"))
    async with http.post(
        f"{sandbox_url}/_sandbox/tokens", json={"appId": app_id}, ssl=tls
    ) as answer:
        assert answer.status == 200, await answer.text()
        token = (await answer.json())["access_token"]
    now = datetime.now(UTC)
    window = {
        "startDateTime": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "endDateTime": (now + timedelta(days=21)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "$top": "100",
    }
    async with http.get(
        f"{sandbox_url}/v1.0/users/{mailbox}/calendarView",
        params=window,
        headers={"Authorization": f"Bearer {token}"},
        ssl=tls,
    ) as answer:
        assert answer.status == 200, await answer.text()
        events = (await answer.json())["value"]
    return sorted(_utc(event["start"]) for event in events)


def _utc(moment: dict[str, str]) -> datetime:
    assert moment["timeZone"] == "UTC", moment
    return datetime.fromisoformat(moment["dateTime"][:19]).replace(tzinfo=UTC)


async def read_database(path: Path, profile_id: str) -> tuple[str | None, list[datetime]]:
    """SW-1001's status and when the profile's appointments start, from the service's file."""
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    try:
        async with session_factory(engine)() as session:
            status = await session.scalar(select(Ticket.status).order_by(Ticket.id).limit(1))
            starts = await session.scalars(
                select(AppointmentRecord.start_at).where(AppointmentRecord.profile_id == profile_id)
            )
            return status, sorted(starts.all())
    finally:
        await engine.dispose()


# -- the demo data and its loader ------------------------------------------------------------


def _seed_people() -> dict[str, dict[str, Any]]:
    """The sandbox's people by user principal name."""
    seed = json.loads(DEFAULT_SEED.read_text())
    return {user["userPrincipalName"]: user for user in seed["users"]}


def _addresses(user: dict[str, Any]) -> set[str]:
    proxies = {p.split(":", 1)[1] for p in user.get("proxyAddresses", [])}
    return {a.lower() for a in {user.get("mail"), *user.get("otherMails", []), *proxies} if a}


def test_every_sandbox_person_has_a_profile_and_those_who_can_enroll_appointments() -> None:
    now = datetime(2026, 11, 20, 18, 0, tzinfo=UTC)  # a Friday evening: the next workday is Monday
    demo = demo_scheduling(now)
    people = _seed_people()
    by_person: dict[str, Profile] = {}
    for profile in demo.profiles:
        owner = [upn for upn, user in people.items() if (profile.email or "") in _addresses(user)]
        assert len(owner) == 1, f"{profile.email} is an address of exactly one sandbox person"
        by_person[owner[0]] = profile
    assert set(by_person) == set(people), "every sandbox person has a profile"
    assert len({p.id for p in demo.profiles}) == len(demo.profiles)

    for upn, profile in by_person.items():
        user = people[upn]
        booked = [a for pid, a in demo.appointments if pid == profile.id]
        can_enroll = user.get("accountEnabled", True) and user.get("hasMailbox", True)
        assert (len(booked) >= 3) if can_enroll else not booked, upn
        assert len({a.id for a in booked}) == len(booked)
        for appointment in booked:
            assert now < appointment.start < appointment.end <= now + timedelta(days=15)
            assert appointment.start.weekday() < 5, "working days only"
            assert appointment.start.tzinfo is UTC


def test_appointments_move_with_the_day_of_the_load() -> None:
    monday = datetime(2026, 11, 23, 7, 0, tzinfo=UTC)
    tuesday = monday + timedelta(days=1)
    first, second = demo_scheduling(monday), demo_scheduling(tuesday)
    assert [a.start for _, a in second.appointments] != [a.start for _, a in first.appointments]
    sasha = next(a for pid, a in first.appointments if pid == "demo-sasha-verhoeven")
    assert sasha.start == datetime(2026, 11, 24, 10, 0, tzinfo=UTC)  # workday 1 after Monday


def _sandbox_settings(**overrides: Any) -> Settings:
    """Settings as ``serve --sandbox`` aims them: every Microsoft 365 address on this machine."""
    sandbox = "https://127.0.0.1:4443"
    data: dict[str, Any] = {
        "mode": "sandbox",
        "graph": {"client_id": "sandbox-app", "login_url": sandbox, "base_url": f"{sandbox}/v1.0"},
        "exchange": {"base_url": sandbox},
    }
    for name, value in overrides.items():
        data[name] = {**data.get(name, {}), **value} if isinstance(value, dict) else value
    return Settings.model_validate(data)


async def _counts(engine: AsyncEngine) -> tuple[int, int]:
    async with session_factory(engine)() as session:
        profiles = await session.scalar(select(func.count()).select_from(ProfileRecord))
        booked = await session.scalar(select(func.count()).select_from(AppointmentRecord))
        return profiles or 0, booked or 0


@pytest.mark.postgres
async def test_the_demo_loads_once_into_empty_tables(migrated_engine: AsyncEngine) -> None:
    sessions = session_factory(migrated_engine)
    now = datetime.now(UTC)
    demo: DemoScheduling = demo_scheduling(now)
    loaded = await load_demo_scheduling(_sandbox_settings(), sessions, now=now)
    assert loaded is not None
    assert (loaded.profiles, loaded.appointments) == (len(demo.profiles), len(demo.appointments))
    assert await _counts(migrated_engine) == (loaded.profiles, loaded.appointments)
    found = await BuiltinScheduling(sessions).find_profiles(email="sasha.verhoeven@example.edu")
    assert [p.id for p in found] == ["demo-sasha-verhoeven"]

    assert await load_demo_scheduling(_sandbox_settings(), sessions) is None, "loads only once"
    assert await _counts(migrated_engine) == (loaded.profiles, loaded.appointments)


@pytest.mark.postgres
async def test_the_demo_never_joins_imported_profiles(migrated_engine: AsyncEngine) -> None:
    sessions = session_factory(migrated_engine)
    imported = Profile("P-7", "Sasha Verhoeven", "sasha.verhoeven@example.edu")
    await BuiltinScheduling(sessions).upsert_profile(imported)
    assert await load_demo_scheduling(_sandbox_settings(), sessions) is None
    assert await _counts(migrated_engine) == (1, 0)


@pytest.mark.postgres
@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"mode": "production"}, id="production"),
        pytest.param({"graph": {"base_url": "https://graph.microsoft.com/v1.0"}}, id="real-graph"),
        pytest.param({"provisioning": {"scheduling_adapter": "manual"}}, id="manual-adapter"),
        pytest.param(
            {"sync": {"source": "ics", "ics_url_template": "https://127.0.0.1/{profile_id}"}},
            id="ics-source",
        ),
    ],
)
async def test_the_demo_stays_out_of_other_configurations(
    migrated_engine: AsyncEngine, overrides: dict[str, Any]
) -> None:
    settings = _sandbox_settings(**overrides)
    assert await load_demo_scheduling(settings, session_factory(migrated_engine)) is None
    assert await _counts(migrated_engine) == (0, 0)


@pytest.mark.postgres
async def test_with_the_demo_loaded_refusals_name_the_real_reason(
    migrated_engine: AsyncEngine, tenant: SandboxTenant
) -> None:
    """The disabled account and the one without a mailbox have profiles too, so what Dana hears
    when she asks for them is the directory's reason alone; Rowan's profile holds an alias of
    his mailbox and is still found."""
    groups = tenant.seed.group_ids
    settings = sandbox_settings(
        tenant,
        graph={"sync_group_id": groups["Calendar Sync"]},
        approvals={
            "approvers_group_id": groups["Calendar Sync Approvers"],
            "it_admins_group_id": groups["IT Admins"],
        },
    )
    sessions = session_factory(migrated_engine)
    assert await load_demo_scheduling(settings, sessions) is not None
    m365 = build_microsoft365(settings)
    try:
        workflows = build_workflows(settings, sessions, m365)
        assert workflows is not None
        users = tenant.seed.user_ids
        dana = Person(users["dana.whitfield@example.edu"], "Dana Whitfield")
        for upn, reason in (
            ("finley.marsh@example.edu", "disabled"),
            ("harper.osei@example.edu", "mailbox"),
        ):
            refused = await workflows.service.request_enrollment(dana, subject=users[upn])
            said = "; ".join(problem.message for problem in refused.problems)
            assert refused.ticket is None and reason in said, (upn, said)
            assert "scheduling profile" not in said, (upn, said)
        rowan = Person(users["rowan.ibarra@example.edu"], "Rowan Ibarra")
        asked = await workflows.service.request_enrollment(rowan)
        assert asked.ticket is not None, asked.problems
        assert asked.ticket.profile_id == "demo-rowan-ibarra"
    finally:
        await m365.aclose()
