"""The pieces of the service crash test (``tests/integration/test_service_crash.py``).

The test runs ``syncwarden serve`` as a real child process, talks to it as Teams does and kills
it (SIGKILL) over and over while people ask for calendar sync and approvers approve. Here are:

- :class:`Cast`: the people (invented requesters on ``example.edu`` added to the sandbox tenant,
  with a scheduling profile each; the seed's two approvers) and the chats they use;
- :class:`TeamsConnector`: a local Bot Framework connector service that the bot's replies and
  proactive messages reach (the sandbox tenant serves Bot Framework *tokens*, not the connector);
  it records every call with the service generation that made it, and can hold a send unanswered
  so that the service dies between a message reaching Teams and its record;
- :class:`Supervisor`: starts, kills and restarts the service; a *generation* is one process;
- :class:`Driver`: sends the activities, and sends the same activity again whenever the service
  did not answer it (a dropped connection, a 5xx, a 429), as a person in Teams would try again;
- :func:`run_chaos`: the killer, at random points and during calls to the sandbox or to Teams;
- :class:`Ledger`: which outbox row each message that reached Teams delivered, which messages
  every ticket should have produced (by their outbox keys), and which repeats the crash window
  explains.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from random import Random
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from syncwarden.bot.conversations import (
    ChannelRole,
    ConversationKind,
    ConversationRef,
    ConversationStore,
)
from syncwarden.connectors.scheduling.builtin import BuiltinScheduling
from syncwarden.connectors.scheduling.ports import Profile
from syncwarden.core.db import session_factory
from syncwarden.sandbox.server import SandboxTenant
from syncwarden.workflows.model import TicketStatus
from syncwarden.workflows.outbox import OutboxMessage
from syncwarden.workflows.ports import NotificationKind
from syncwarden.workflows.records import Ticket
from tests.support.m365 import SYNCWARDEN_APP
from tests.support.process import ServiceProcess, cli_environment

ROOT = Path(__file__).resolve().parents[2]
DOMAIN = "example.edu"
BOT = {"id": "28:syncwarden-bot", "name": "Syncwarden"}
APPROVERS = ("casey.lindqvist@example.edu", "emerson.tal@example.edu")  # the seed's approvers
IT_CHANNEL = "19:crash-it@thread.tacv2"
APPROVALS_CHANNEL = "19:crash-approvals@thread.tacv2"
TICKET_REF = re.compile(r"\bSW-\d+\b")
# What bot/teams_endpoint.py answers when a turn failed; the person is asked to try again.
TURN_FAILED = "Sorry, something went wrong on our side"
APPROVAL_KINDS = frozenset(
    {
        NotificationKind.APPROVAL_REQUESTED.value,
        NotificationKind.APPROVAL_REMINDER.value,
        NotificationKind.APPROVAL_ESCALATED.value,
    }
)
# Cards drawn from a digest in the row's detail, not from its text (bot/cards.py drift_card): the
# row's text lists the same people ("- Name: meaning"), which is how a copy is told apart.
DIGEST_CARD_KINDS = frozenset({NotificationKind.DRIFT_REPORT.value})
_LISTED_NAME = re.compile(r"^- (.+?): ", re.MULTILINE)
# How a finished ticket's approval card reads (bot/cards.py approval_card).
FINAL_CARD_STATUS = f"Status: **{TicketStatus.COMPLETED.label}**"
_FIRST = ("Ada", "Bram", "Cleo", "Dario", "Esme", "Femi", "Greta", "Hugo", "Ines", "Joss")
_LAST = ("Abernethy", "Brightwater", "Castellanos", "Drummond", "Eskildsen")


# --------------------------------------------------------------------------------------- people


@dataclass(frozen=True)
class Member:
    """Someone who talks to the bot: their Entra object id and their 1:1 chat with it."""

    key: str
    user_id: str
    upn: str
    name: str
    chat: str
    profile_id: str = ""

    @property
    def teams(self) -> dict[str, str]:
        """The ``from`` of their activities: Teams id, name and Entra object id."""
        return {"id": f"29:{self.key}", "name": self.name, "aadObjectId": self.user_id}


@dataclass(frozen=True)
class Cast:
    """Who asks (the requesters, each for themselves) and who approves."""

    requesters: tuple[Member, ...]
    approvers: tuple[Member, ...]

    def by_chat(self) -> dict[str, Member]:
        return {m.chat: m for m in (*self.requesters, *self.approvers)}

    def approver_for(self, index: int) -> Member:
        """Requests are shared out between the approvers in turn."""
        return self.approvers[index % len(self.approvers)]


def invented_people(count: int) -> list[tuple[str, str]]:
    """``count`` (display name, UPN) pairs on example.edu that the seed does not have."""
    names = [f"{first} {last}" for last in _LAST for first in _FIRST]
    if count > len(names):
        raise ValueError(f"at most {len(names)} invented people")
    return [(name, f"{name.lower().replace(' ', '.')}@{DOMAIN}") for name in names[:count]]


async def cast_people(tenant: SandboxTenant, engine: AsyncEngine, count: int) -> Cast:
    """Add ``count`` requesters with mailboxes to the tenant, each with a scheduling profile
    under their address (how the product finds a person's profile), and name the seed's
    approvers."""
    scheduling = BuiltinScheduling(session_factory(engine))
    requesters = []
    for number, (name, upn) in enumerate(invented_people(count), start=1):
        given, surname = name.split(" ", 1)
        user = tenant.add_user(
            userPrincipalName=upn, displayName=name, givenName=given, surname=surname
        )
        profile = Profile(f"prof-crash-{number:02d}", name, upn)
        await scheduling.upsert_profile(profile)
        key = upn.split("@")[0]
        requesters.append(Member(key, user.id, upn, name, f"a:chat-{key}", profile.id))

    def seeded(upn: str) -> Member:
        key = upn.split("@")[0]
        name = key.replace(".", " ").title()
        return Member(key, tenant.seed.user_ids[upn], upn, name, f"a:chat-{key}")

    return Cast(tuple(requesters), tuple(seeded(a) for a in APPROVERS))


async def name_channels(engine: AsyncEngine, connector: TeamsConnector, tenant_id: str) -> None:
    """The IT and approvals channels, as IT named them when the app was installed.

    Stored before the service first starts: the jobs that run at start-up (the credential scan,
    a weekly digest it missed) write to the IT channel, and a message for a channel nobody has
    named yet is given up at once.
    """
    store = ConversationStore(session_factory(engine))
    for conversation, role in (
        (IT_CHANNEL, ChannelRole.IT),
        (APPROVALS_CHANNEL, ChannelRole.APPROVALS),
    ):
        await store.remember(
            ConversationRef(
                conversation, ConversationKind.CHANNEL, connector.url, tenant_id, BOT["id"]
            )
        )
        await store.assign_role(conversation, role)


def service_environment(
    tenant: SandboxTenant, database_url: str, port: int, **extra: str
) -> dict[str, str]:
    """``serve`` in sandbox mode, aimed at the in-test tenant and database, on ``port``."""
    groups = tenant.seed.group_ids
    return cli_environment(
        SYNCWARDEN_MODE="sandbox",  # anonymous Bot Framework traffic, as the serve tests use
        SYNCWARDEN_HTTP__PORT=str(port),
        SYNCWARDEN_DATABASE__URL=database_url,
        SYNCWARDEN_LOG__FORMAT="json",
        SYNCWARDEN_GRAPH__TENANT_ID=tenant.tenant_id,
        SYNCWARDEN_GRAPH__CLIENT_ID=tenant.seed.app_ids[SYNCWARDEN_APP],
        SYNCWARDEN_GRAPH__CLIENT_SECRET=tenant.seed.secret_for(SYNCWARDEN_APP),
        SYNCWARDEN_GRAPH__LOGIN_URL=tenant.base_url,
        SYNCWARDEN_GRAPH__BASE_URL=f"{tenant.base_url}/v1.0",
        SYNCWARDEN_GRAPH__CA_BUNDLE=str(tenant.ca_path),
        SYNCWARDEN_GRAPH__SYNC_GROUP_ID=groups["Calendar Sync"],
        SYNCWARDEN_EXCHANGE__BASE_URL=tenant.base_url,
        SYNCWARDEN_APPROVALS__APPROVERS_GROUP_ID=groups["Calendar Sync Approvers"],
        SYNCWARDEN_APPROVALS__IT_ADMINS_GROUP_ID=groups["IT Admins"],
        # A step claimed by a killed process is taken over once its lease runs out.
        SYNCWARDEN_PROVISIONING__LEASE_SECONDS="10",
        # Two approvers click Approve 25 times each within seconds; the per-person and
        # per-conversation turn limits (core/settings.py LimitSettings) are not under test here.
        SYNCWARDEN_LIMITS__PERSON_TURNS_PER_MINUTE="0",
        SYNCWARDEN_LIMITS__CONVERSATION_TURNS_PER_MINUTE="0",
        # The child imports this tree, whatever its working directory.
        PYTHONPATH=str(ROOT),
        **extra,
    )


# ------------------------------------------------------------------------------ Teams connector


@dataclass
class Delivery:
    """One call the bot made to the connector, and which service process made it."""

    seq: int
    method: str
    conversation: str
    # "send" (a proactive message), "reply" (an answer within a turn), "update" (a card edit).
    kind: str
    activity_id: str  # the id we gave a send or reply; the activity an update replaces
    body: dict[str, Any]
    generation: int
    at: float


@dataclass
class TeamsConnector:
    """The Bot Framework connector service (``/v3/conversations/...``), recording every call.

    :meth:`hold_next_send` keeps the next proactive message unanswered until :meth:`release`:
    the message has reached Teams, but the service does not know yet, which is the window in
    which a kill makes the outbox send it again.
    """

    generation: Callable[[], int]
    deliveries: list[Delivery] = field(default_factory=list)
    server: TestServer | None = None
    _held: asyncio.Future[Delivery] | None = None
    _release: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("/"))

    async def start(self) -> TeamsConnector:
        self._release.set()
        app = web.Application()
        app.router.add_route("*", "/v3/conversations/{conversation}/activities", self._handle)
        app.router.add_route(
            "*", "/v3/conversations/{conversation}/activities/{activity}", self._handle
        )
        self.server = TestServer(app, host="127.0.0.1")
        await self.server.start_server()
        return self

    async def close(self) -> None:
        self.release()
        if self.server is not None:
            await self.server.close()

    def hold_next_send(self) -> asyncio.Future[Delivery]:
        """The next proactive message is recorded and then left unanswered until released."""
        self._release.clear()
        self._held = asyncio.get_running_loop().create_future()
        return self._held

    def release(self) -> None:
        if self._held is not None and not self._held.done():
            self._held.cancel()
        self._held = None
        self._release.set()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.text()
        body = json.loads(raw) if raw else {}
        replaced = request.match_info.get("activity")
        if request.method == "PUT" and replaced:
            kind, activity_id = "update", replaced
        elif request.method == "POST":
            kind = "reply" if replaced else "send"
            activity_id = f"activity-{len(self.deliveries) + 1}"
        else:
            return web.json_response({"error": {"code": "BadSyntax"}}, status=400)
        delivery = Delivery(
            seq=len(self.deliveries) + 1,
            method=request.method,
            conversation=request.match_info["conversation"],
            kind=kind,
            activity_id=activity_id,
            body=body if isinstance(body, dict) else {},
            generation=self.generation(),
            at=time.monotonic(),
        )
        self.deliveries.append(delivery)
        if kind == "send" and self._held is not None and not self._held.done():
            self._held.set_result(delivery)
            await self._release.wait()
        return web.json_response({"id": activity_id})


# ----------------------------------------------------------------------------------- activities


def activity(
    connector: TeamsConnector,
    tenant_id: str,
    sender: Member,
    activity_id: str,
    *,
    text: str | None = None,
    verb: str | None = None,
    data: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A Teams activity in ``sender``'s 1:1 chat with the bot, as the channel delivers it: a
    message, or (with ``verb``) the Action.Execute invoke of a card button with ``data``."""
    body: dict[str, Any] = {
        "type": "message",
        "id": activity_id,
        "text": text,
        "channelId": "msteams",
        "serviceUrl": connector.url,
        "timestamp": "2026-11-23T09:00:00.000Z",
        "from": sender.teams,
        "recipient": BOT,
        "conversation": {
            "id": sender.chat,
            "conversationType": "personal",
            "tenantId": tenant_id,
        },
        "channelData": {"tenant": {"id": tenant_id}},
        "locale": "en-GB",
    }
    if verb is not None:
        body.update(
            type="invoke",
            name="adaptiveCard/action",
            text=None,
            replyToId=f"card-{activity_id}",
            value={
                "action": {"type": "Action.Execute", "verb": verb, "data": data or {}},
                "trigger": "manual",
            },
        )
    return body


# ----------------------------------------------------------------------------------- supervisor


@dataclass(frozen=True)
class Kill:
    """One SIGKILL: of which generation, how it was aimed, and when."""

    generation: int
    kind: str  # "random", "sandbox call" or "teams send"
    at: float


@dataclass
class Supervisor:
    """The service child: started, SIGKILLed and started again; one process per generation."""

    env: dict[str, str]
    cwd: Path
    generation: int = 0
    service: ServiceProcess | None = None
    kills: list[Kill] = field(default_factory=list)
    logs: dict[int, ServiceProcess] = field(default_factory=dict)
    startup_seconds: list[float] = field(default_factory=list)
    serving: asyncio.Event = field(default_factory=asyncio.Event)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> None:
        started = time.monotonic()
        self.generation += 1
        self._changed.set()
        self._changed = asyncio.Event()
        self.service = await ServiceProcess.start(self.env, cwd=self.cwd)
        self.logs[self.generation] = self.service
        await self.service.wait_for_event("syncwarden.started", limit_seconds=90)
        self.service.follow()
        self.startup_seconds.append(time.monotonic() - started)
        self.serving.set()

    async def kill(self, kind: str) -> None:
        service = self._running()
        self.serving.clear()
        service.process.send_signal(signal.SIGKILL)
        await service.process.wait()
        if service.follower is not None:
            await service.follower
        self.kills.append(Kill(self.generation, kind, time.monotonic()))

    async def stop(self) -> None:
        """End the last generation (a clean SIGTERM; a kill if it does not stop in time)."""
        self.serving.clear()
        service = self.service
        if service is None or service.process.returncode is not None:
            return
        service.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(service.process.wait(), 30)
        except TimeoutError:
            await service.stop()
        if service.follower is not None:
            await service.follower

    async def changed_since(self, generation: int, *, at_most: float) -> None:
        """Return when a newer generation has started, or after ``at_most`` seconds."""
        if self.generation != generation:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), at_most)

    def _running(self) -> ServiceProcess:
        service = self.service
        assert service is not None
        if service.process.returncode is not None:
            raise AssertionError(
                f"generation {self.generation} ended on its own ({service.process.returncode}):\n"
                + "".join(service.raw[-60:])
            )
        return service

    def check_alive(self) -> None:
        self._running()

    def errors(self) -> Counter[str]:
        """ERROR log lines of every generation, by event: what the service itself found wrong
        (``core.failures.report_unexpected`` logs every unexpected failure at ERROR)."""
        return Counter(
            str(line.get("event"))
            for service in self.logs.values()
            for line in service.lines
            if str(line.get("level", "")).lower() in ("error", "critical")
        )


# --------------------------------------------------------------------------------------- driver


@dataclass
class DriverStats:
    sent: int = 0
    retried_down: int = 0  # no answer: connection refused or dropped, or timed out
    retried_5xx: int = 0
    retried_429: int = 0
    apologies: int = 0  # a turn that failed and said so; the person tries again
    approved: dict[str, str] = field(default_factory=dict)  # requester key -> ticket ref


class RefusedActivityError(AssertionError):
    """The service answered an activity in a way no retry can change (a 4xx)."""


@dataclass
class Driver:
    """Talks to the service as Teams does, repeating an activity until the service answers it."""

    http: aiohttp.ClientSession
    base_url: str
    supervisor: Supervisor
    connector: TeamsConnector
    tenant_id: str
    stats: DriverStats = field(default_factory=DriverStats)
    request_timeout: float = 30.0

    async def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` to /api/messages until answered; the answer's JSON ({} when none)."""
        while True:
            await self.supervisor.serving.wait()
            generation = self.supervisor.generation
            self.stats.sent += 1
            try:
                async with self.http.post(
                    f"{self.base_url}/api/messages",
                    json=body,
                    timeout=aiohttp.ClientTimeout(total=self.request_timeout),
                ) as response:
                    text = await response.text()
                    if response.status == 429:
                        self.stats.retried_429 += 1
                    elif response.status >= 500:
                        self.stats.retried_5xx += 1
                    elif response.status >= 400:
                        raise RefusedActivityError(f"{response.status} for {body['id']}: {text}")
                    else:
                        answer = json.loads(text) if text else {}
                        return answer if isinstance(answer, dict) else {}
            except (aiohttp.ClientError, TimeoutError):
                self.stats.retried_down += 1
            # Down: try again once the next generation listens. Up but failing: shortly.
            await self.supervisor.changed_since(generation, at_most=0.25)

    async def invoke(self, body: dict[str, Any]) -> Any:
        """A card click until it gets an answer that is not the apology for a failed turn."""
        while True:
            answer = await self.post(body)
            value = answer.get("value")
            if isinstance(value, str) and value.startswith(TURN_FAILED):
                self.stats.apologies += 1
                continue
            return value

    async def setup(self, cast: Cast) -> None:
        """Approvers have written to the bot, so it can write to them."""
        for person in cast.approvers:
            await self.post(self._message(person, f"hello-{person.key}", "hello"))

    async def request_and_approve(self, index: int, person: Member, cast: Cast) -> None:
        """One person's whole request, as Teams would send it: ask, submit the card, approve."""
        await self.post(self._message(person, f"{person.key}-ask", "add me to calendar sync"))
        submitted = await self.invoke(
            activity(
                self.connector,
                self.tenant_id,
                person,
                f"{person.key}-submit",
                verb="submit_request",
                data={
                    "verb": "submit_request",
                    "mailbox": person.upn,
                    "profile": person.profile_id,
                    "justification": "drop-in hours",
                },
            )
        )
        # The answer names the new (or already open) ticket, in a sentence or on a card.
        said = submitted if isinstance(submitted, str) else "\n".join(_strings(submitted))
        found = TICKET_REF.search(said)
        if found is None:
            raise AssertionError(f"{person.upn}'s request got no ticket: {submitted!r}")
        ref = found.group(0)
        approver = cast.approver_for(index)
        decided = await self.invoke(
            activity(
                self.connector,
                self.tenant_id,
                approver,
                f"{person.key}-approve",
                verb="approve",
                data={"ticket": ref, "version": 1, "comment": ""},
            )
        )
        if not isinstance(decided, dict):  # the decided card; a sentence means it was refused
            raise AssertionError(f"{approver.upn} could not approve {ref}: {decided!r}")
        self.stats.approved[person.key] = ref

    async def run(self, cast: Cast, concurrency: int) -> None:
        gate = asyncio.Semaphore(concurrency)

        async def one(index: int, person: Member) -> None:
            async with gate:
                await self.request_and_approve(index, person, cast)

        async with asyncio.TaskGroup() as group:
            for index, person in enumerate(cast.requesters):
                group.create_task(one(index, person))

    def _message(self, person: Member, activity_id: str, text: str) -> dict[str, Any]:
        return activity(self.connector, self.tenant_id, person, activity_id, text=text)


# ---------------------------------------------------------------------------------------- chaos


def kill_plan(rng: Random, total: int, sandbox_calls: int, teams_sends: int) -> list[str]:
    """The kinds of ``total`` kills, shuffled: most at random moments, some during a call."""
    plan = ["sandbox call"] * sandbox_calls + ["teams send"] * teams_sends
    plan += ["random"] * (total - len(plan))
    rng.shuffle(plan)
    return plan


async def run_chaos(
    supervisor: Supervisor,
    tenant: SandboxTenant,
    connector: TeamsConnector,
    rng: Random,
    plan: Iterable[str],
    *,
    between: tuple[float, float] = (0.2, 1.5),
    target_wait_seconds: float = 10.0,
) -> Counter[str]:
    """Kill the service once per entry of ``plan`` and start it again each time.

    "random": a uniform draw from ``between`` seconds after it started listening. "sandbox
    call": while the sandbox tenant is still answering one of its calls (each slowed by 300 ms
    meanwhile). "teams send": while a proactive message it sent is still unanswered. A targeted
    kill that finds nothing in flight within ``target_wait_seconds`` happens anyway (kind
    "random, nothing in flight"). Returns the kinds of kill that happened.
    """
    happened: Counter[str] = Counter()
    for planned in plan:
        supervisor.check_alive()
        kind = planned
        if planned == "random":
            await asyncio.sleep(rng.uniform(*between))  # the random moment is the point
        elif planned == "sandbox call":
            kind = await _during_sandbox_call(tenant, rng, target_wait_seconds)
        else:
            kind = await _during_teams_send(connector, target_wait_seconds)
        try:
            await supervisor.kill(kind)
        finally:
            tenant.set_knobs(latency_ms=0)
            connector.release()
        happened[kind] += 1
        await supervisor.start()
    return happened


async def _during_sandbox_call(tenant: SandboxTenant, rng: Random, limit: float) -> str:
    await asyncio.sleep(rng.uniform(0.0, 0.8))
    tenant.set_knobs(latency_ms=300)
    since = time.time()
    try:
        await asyncio.wait_for(
            tenant.wait_for_request(lambda r: r.ended is None and r.started >= since), limit
        )
    except TimeoutError:
        return "random, nothing in flight"
    return "sandbox call"


async def _during_teams_send(connector: TeamsConnector, limit: float) -> str:
    held = connector.hold_next_send()
    try:
        await asyncio.wait_for(asyncio.shield(held), limit)
    except TimeoutError:
        return "random, nothing in flight"
    return "teams send"


async def poll_until(
    check: Callable[[], Awaitable[str | None]], limit_seconds: float, interval: float = 0.5
) -> None:
    """Ask ``check`` until it returns None (done); it returns what is still missing, which the
    failure names when ``limit_seconds`` pass first (a failure bound, not a timing)."""
    deadline = time.monotonic() + limit_seconds
    missing = await check()
    while missing is not None:
        if time.monotonic() > deadline:
            raise AssertionError(f"not done after {limit_seconds:.0f} s: {missing}")
        await asyncio.sleep(interval)
        missing = await check()


async def completed_tickets(engine: AsyncEngine) -> int:
    async with session_factory(engine)() as session:
        count = await session.scalar(
            select(func.count())
            .select_from(Ticket)
            .where(Ticket.status == TicketStatus.COMPLETED.value)
        )
        return count or 0


async def work_left(engine: AsyncEngine, expected_tickets: int) -> str | None:
    """What still stands between now and the end: tickets not completed, messages not sent."""
    completed = await completed_tickets(engine)
    async with session_factory(engine)() as session:
        waiting = (
            await session.execute(
                select(OutboxMessage.state, func.count())
                .where(OutboxMessage.state.in_(("pending", "sending")))
                .group_by(OutboxMessage.state)
            )
        ).all()
    if completed == expected_tickets and not waiting:
        return None
    queue = ", ".join(f"{count} {state}" for state, count in waiting) or "none waiting"
    return f"{completed}/{expected_tickets} tickets completed; outbox: {queue}"


# --------------------------------------------------------------------------------------- ledger


@dataclass(frozen=True)
class TicketFacts:
    ref: str
    subject: Member


VERSION = "<version>"


def expected_messages(ticket: TicketFacts, cast: Cast) -> list[str]:
    """The outbox keys every self-service enrollment approved by one approver must produce, and
    so the messages that must reach Teams: the "created" status line, the approval card to each
    approver and to the approvals channel, "approved" to the person and as a status line, the
    set-up instructions, "completed" to the person and as a status line.

    Keys (see workflows/announcements.py and the step's idempotency key) name the ticket, what
    happened and to whom, and change far less often than the words; a status line's key ends
    with the ticket's version, which is not fixed here (:data:`VERSION` stands for it).
    """
    ref, subject = ticket.ref, ticket.subject.user_id
    return [
        f"{ref}:status:created",
        *(f"{ref}:approval_requested:{a.user_id}" for a in cast.approvers),
        f"{ref}:approval_requested:channel",
        f"{ref}:approved:{subject}",
        f"{ref}:status:approve:{VERSION}",
        f"{ref}:3:send_instructions",
        f"{ref}:completed:{subject}",
        f"{ref}:status:{VERSION}",
    ]


def key_pattern(expected: str) -> re.Pattern[str]:
    """The outbox keys an expected message stands for (any version where it says so)."""
    return re.compile(re.escape(expected).replace(re.escape(VERSION), r"\d+"))


@dataclass(frozen=True)
class Queued:
    """One outbox row: a message the service decided to send, under its idempotency key."""

    key: str
    target: str  # "user", "channel" or "card"
    recipient: str
    state: str
    attempts: int
    kind: str
    text: str
    ref: str | None


async def outbox(engine: AsyncEngine) -> list[Queued]:
    """Every outbox row, oldest first."""
    async with session_factory(engine)() as session:
        rows = (await session.scalars(select(OutboxMessage).order_by(OutboxMessage.id))).all()
    queued = []
    for row in rows:
        payload = row.payload or {}
        ticket = payload.get("ticket") or {}
        queued.append(
            Queued(
                key=row.key,
                target=row.target,
                recipient=row.recipient,
                state=row.state,
                attempts=row.attempts,
                kind=str(payload.get("kind") or ""),
                text=str(payload.get("text") or ""),
                ref=row.recipient if row.target == "card" else ticket.get("ref"),
            )
        )
    return queued


def _strings(node: Any) -> Iterable[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            if key in ("text", "title", "value") or isinstance(value, dict | list):
                yield from _strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)


def card_of(body: dict[str, Any]) -> dict[str, Any] | None:
    for attachment in body.get("attachments") or []:
        content = attachment.get("content") if isinstance(attachment, dict) else None
        if isinstance(content, dict):
            return content
    return None


def _card_state(body: dict[str, Any]) -> str:
    """What a card says about its ticket's state, in a few words, for failure messages."""
    card = card_of(body) or {}
    verbs = [a.get("verb") for a in card.get("actions") or [] if isinstance(a, dict)]
    status = [line for line in words_of(body).split("\n") if line.startswith("Status")]
    return ", ".join([*status[:1], *(f"{v} button" for v in verbs if v)]) or "no status"


def words_of(body: dict[str, Any]) -> str:
    """What a message says: its text, or the texts and facts of its card, in order."""
    card = card_of(body)
    if card is None:
        return str(body.get("text") or "")
    return "\n".join(_strings(card.get("body", [])))


@dataclass
class Ledger:
    """The connector's record read as messages: each proactive send is matched to the outbox row
    it delivered (so it is named by that row's key), then what is missing and what repeated.

    A send is matched by where it went (the row's person or channel), the ticket it names, and
    what it says: a text message is the row's text; a status card shows the row's text; an
    approval card in a chat or the approvals channel is the ticket's approval request there.
    """

    cast: Cast
    deliveries: list[Delivery]
    killed: set[int]
    queued: list[Queued]
    # Messages one service process may have in flight at once (the outbox's delivery slots).
    in_flight: int = 1
    copies: dict[str, list[Delivery]] = field(default_factory=lambda: defaultdict(list))
    sends_of: dict[int, list[int]] = field(default_factory=lambda: defaultdict(list))

    def __post_init__(self) -> None:
        chats = {m.user_id.lower(): m.chat for m in (*self.cast.requesters, *self.cast.approvers)}
        channels = {"it": IT_CHANNEL, "approvals": APPROVALS_CHANNEL}
        self._rows: dict[tuple[str, str | None], list[Queued]] = defaultdict(list)
        for row in self.queued:
            where = (
                chats.get(row.recipient.lower())
                if row.target == "user"
                else channels.get(row.recipient)
            )
            if where is not None:
                self._rows[(where, row.ref)].append(row)
        for delivery in self.deliveries:
            if delivery.kind == "send":
                self.copies[self.identify(delivery)].append(delivery)
                self.sends_of[delivery.generation].append(delivery.seq)

    def identify(self, delivery: Delivery) -> str:
        """The key of the outbox row ``delivery`` delivered, or ``unmatched:...``."""
        said = words_of(delivery.body)
        found = TICKET_REF.search(said)
        conversation = delivery.conversation
        # A message about no ticket may still name one ("gave up delivering ... of SW-1042").
        candidates = self._rows.get((conversation, found.group(0) if found else None), [])
        candidates = candidates or self._rows.get((conversation, None), [])
        if card_of(delivery.body) is None:
            matches = [r for r in candidates if r.text == delivery.body.get("text")]
        else:
            matches = (
                [r for r in candidates if r.text and r.text in said]
                or [r for r in candidates if r.kind in APPROVAL_KINDS]
                or [
                    r
                    for r in candidates
                    if r.kind in DIGEST_CARD_KINDS
                    and all(name in said for name in _LISTED_NAME.findall(r.text))
                ]
            )
        keys = sorted({r.key for r in matches})
        if len(keys) == 1:
            return keys[0]
        return f"unmatched:{conversation}:{keys}:{said[:120]}"

    @property
    def sends(self) -> int:
        return sum(1 for d in self.deliveries if d.kind == "send")

    def missing(self, tickets: Iterable[TicketFacts]) -> dict[str, list[str]]:
        """Per ticket, the messages (by key) it should have produced that never reached Teams."""
        gaps: dict[str, list[str]] = {}
        for ticket in tickets:
            lost = [
                expected
                for expected in expected_messages(ticket, self.cast)
                if not any(key_pattern(expected).fullmatch(key) for key in self.copies)
            ]
            if lost:
                gaps[ticket.ref] = lost
        return gaps

    def never_queued(self, gaps: dict[str, list[str]]) -> dict[str, list[str]]:
        """Of the missing messages, those without an outbox row: lost before they were queued."""
        keys = [row.key for row in self.queued]
        found: dict[str, list[str]] = {}
        for ref, lost in gaps.items():
            unqueued = [m for m in lost if not any(key_pattern(m).fullmatch(k) for k in keys)]
            if unqueued:
                found[ref] = unqueued
        return found

    def repeats(self) -> dict[str, list[Delivery]]:
        return {key: sent for key, sent in self.copies.items() if len(sent) > 1}

    def unexplained_repeats(self) -> dict[str, list[Delivery]]:
        """Repeats outside the crash window. Only a kill between a send reaching Teams and the
        outbox recording it repeats a message, and a process has at most ``in_flight`` messages
        under way at once, so every copy but the last must be one of the last ``in_flight``
        sends of a killed process."""
        odd: dict[str, list[Delivery]] = {}
        for key, sent in self.repeats().items():
            for copy in sent[:-1]:
                if copy.seq not in self.in_flight_at_kill(copy.generation):
                    odd[key] = sent
                    break
        return odd

    def in_flight_at_kill(self, generation: int) -> set[int]:
        """The sends a kill of ``generation`` may have caught unrecorded (none if not killed)."""
        if generation not in self.killed:
            return set()
        return set(self.sends_of[generation][-self.in_flight :])

    def repeats_per_kill(self) -> int:
        """The most repeated copies any one kill explains (each is at most ``in_flight``)."""
        caught: Counter[int] = Counter()
        for sent in self.repeats().values():
            for copy in sent[:-1]:
                caught[copy.generation] += 1
        return max(caught.values(), default=0)

    def unmatched(self) -> list[str]:
        return sorted(key for key in self.copies if key.startswith("unmatched:"))

    def _final_cards(self) -> dict[str, dict[str, Any]]:
        """What each posted card shows in the end: its last update, or the post itself."""
        final: dict[str, dict[str, Any]] = {}
        for delivery in self.deliveries:
            posted = delivery.kind == "send" and card_of(delivery.body) is not None
            if posted or (delivery.kind == "update" and delivery.activity_id in final):
                final[delivery.activity_id] = delivery.body
        return final

    def stale_cards(self) -> dict[str, str]:
        """Approval requests whose card (the last copy posted, the one the service updates)
        does not end up showing the ticket completed, with what it shows instead."""
        final = self._final_cards()
        stale: dict[str, str] = {}
        for key, sent in self.copies.items():
            shown = final.get(sent[-1].activity_id, {})
            if ":approval_requested:" in key and FINAL_CARD_STATUS not in words_of(shown):
                stale[key] = _card_state(shown)
        return stale

    def stale_orphans(self) -> int:
        """Earlier copies of approval cards that stayed as posted: a kill between the post and
        its record left the service not knowing them, so nothing updates them (the window)."""
        final = self._final_cards()
        return sum(
            1
            for key, sent in self.copies.items()
            if ":approval_requested:" in key
            for copy in sent[:-1]
            if FINAL_CARD_STATUS not in words_of(final[copy.activity_id])
        )

    def failed(self) -> list[str]:
        """Rows the outbox gave up on."""
        return [row.key for row in self.queued if row.state == "failed"]

    def others(self) -> int:
        """Messages about no ticket (credential and sync alerts, for instance)."""
        return sum(len(sent) for key, sent in self.copies.items() if not TICKET_REF.match(key))

    def replies(self) -> int:
        return sum(1 for d in self.deliveries if d.kind == "reply")

    def updates(self) -> int:
        return sum(1 for d in self.deliveries if d.kind == "update")


async def tickets_by_subject(engine: AsyncEngine) -> dict[str, list[tuple[str, str]]]:
    """Each subject's tickets as (ref, status), by subject object id."""
    found: dict[str, list[tuple[str, str]]] = defaultdict(list)
    async with session_factory(engine)() as session:
        for ticket in (await session.scalars(select(Ticket).order_by(Ticket.id))).all():
            found[ticket.subject_id.lower()].append((ticket.ref, ticket.status))
    return found
