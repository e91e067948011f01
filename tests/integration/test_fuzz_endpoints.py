"""Bad input never breaks a request: generated bodies against the real endpoints.

Hypothesis generates Bot Framework activities (valid-ish shapes with wrong types, huge strings,
odd Unicode, lone surrogates through JSON escapes, missing fields, nested junk), Action.Execute
card clicks with generated verbs and data, and Graph change-notification posts, and sends them to
the production web application (sandbox mode: anonymous Bot Framework traffic; production's token
checks are test_bot_auth.py's) over HTTP. For every one:

- the answer is never a 5xx, and no answer, and nothing posted to Teams, carries an exception's
  text, a traceback or SQL;
- nothing raised anywhere unexpectedly (the process-wide count of unexpected exceptions that
  every catch-all reports to stays where it was);
- a refused input (a 4xx, or a refusal in the card's answer) changes no state: the ticket,
  decision, step, enrollment, outbox and (for a 4xx) conversation-reference rows are as before.

One application and one client serve all the examples of a test (pytest-asyncio runs each
Hypothesis example of an async test on the test's event loop, with its fixtures). PostgreSQL runs
fewer examples than SQLite; both run.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from structlog.testing import capture_logs

from syncwarden.bot.conversations import ConversationRecord, ConversationStore
from syncwarden.bot.dialogue import DialogueLogic
from syncwarden.bot.intents import valid_ticket_ref
from syncwarden.core.db import write_transaction
from syncwarden.core.failures import unexpected_counts
from syncwarden.core.settings import Mode, Settings, SyncSettings
from syncwarden.m365 import Microsoft365
from syncwarden.sandbox.server import SandboxTenant
from syncwarden.sync.records import SyncState
from syncwarden.sync.subscriptions import SubscriptionRecord
from syncwarden.web import create_app
from syncwarden.workflow_wiring import GRAPH_NOTIFICATIONS_PATH, build_calendar_sync
from syncwarden.workflows.access import CANNOT_SEE
from syncwarden.workflows.audit import AuditEvent
from syncwarden.workflows.outbox import OutboxMessage
from syncwarden.workflows.records import Decision, Enrollment, Step, Ticket
from tests.support.enrollments import enroll
from tests.support.m365 import sandbox_settings
from tests.support.notifier import RecordingNotifier, recording_units
from tests.support.recorder import ConnectorRecorder, message_activity
from tests.support.workflow import PEOPLE, Harness, workflow_harness

WebClient = TestClient[web.Request, web.Application]

SANDBOX = Settings.model_validate({"mode": Mode.SANDBOX})
MESSAGES = "/api/messages"
STRANGER = "rowan"  # no role, no ticket, not enrolled
ADMIN = "dana"  # IT admin and fallback approver: reads every ticket
ENROLLED = "avery.quinlan@example.edu"  # has a mailbox subscription
CLIENT_STATE = "fuzz-client-state-0123456789"
UNKNOWN_TICKET = "SW-9999"
# What must never reach a person or a caller: an exception's text, a traceback, SQL.
LEAKS = (
    "Traceback",
    "Exception",
    "Error:",
    "[SQL:",
    "sqlalchemy",
    "asyncpg",
    "sqlite3",
    "psycopg",
    "INSERT INTO",
    "SELECT ",
    "UPDATE ",
)
# Examples per test and backend: a few thousand in all on SQLite, fewer on PostgreSQL.
EXAMPLES = {"activities": 1000, "cards": 800, "notifications": 700}
POSTGRES_SHARE = 5  # PostgreSQL runs a fifth of them


# ---------------------------------------------------------------------------- generated data

_ODD_STRINGS = (
    "",
    " ",
    "\x00",
    "\ud800",  # lone surrogates: json.dumps sends them as \\ud800 escapes
    "\udfff",
    "a\udc80b",
    "\ufeff",
    "\u202eevil",
    "\U0001f600",
    "SW-1001²",
    "SW-99999999999999999999",
    "SW-\u0661\u0660\u0664\u0662",
    "SW-9999",
    "sw 1001",
    "<at>Syncwarden</at>",
    "<at>",
    "</at><at>",
    "&nbsp;&#xD800;&#0;",
    "29:",
    "a:",
    "19:x@thread.tacv2",
    "personal",
    "channel",
    "groupChat",
    "msteams",
    "%00%ff%",
    "../../etc/passwd",
    "'; drop table tickets; --",
    "9" * 5000,
    # Big strings, made once (bodies stay under the 256 KiB limit, or just over it).
    "x" * 70_000,
    "é" * 60_000,
    "\ud800" * 20_000,
    "<" * 9_000,
)
odd_text = st.one_of(
    st.sampled_from(_ODD_STRINGS),
    st.text(max_size=40),
    st.text(
        alphabet=st.characters(categories=["Cs", "Co", "Cn", "Cc", "Mn", "Zs", "No", "Nd", "So"]),
        max_size=20,
    ),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),  # NaN and Infinity too: Python's json takes them
    odd_text,
)
junk = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
ticket_like = st.one_of(
    st.sampled_from(["SW-9999", "SW-1001²", "SW-99999999999999999999", "sw 1001", "SW-0", ""]),
    st.builds(lambda n: f"SW-{n}", st.integers(min_value=-(10**30), max_value=10**30)),
    st.builds(lambda s: f"SW-{s}", odd_text),
    junk,
)

# Where in an activity a mutation may land, and what it does there.
_ACTIVITY_PATHS = (
    ("type",),
    ("id",),
    ("name",),
    ("text",),
    ("textFormat",),
    ("value",),
    ("channelId",),
    ("serviceUrl",),
    ("timestamp",),
    ("locale",),
    ("replyToId",),
    ("entities",),
    ("attachments",),
    ("membersAdded",),
    ("action",),
    ("from",),
    ("from", "id"),
    ("from", "name"),
    ("from", "aadObjectId"),
    ("recipient",),
    ("recipient", "id"),
    ("recipient", "name"),
    ("conversation",),
    ("conversation", "id"),
    ("conversation", "conversationType"),
    ("conversation", "tenantId"),
    ("channelData",),
    ("channelData", "tenant"),
    ("channelData", "tenant", "id"),
)
_TYPES = (
    "message",
    "invoke",
    "conversationUpdate",
    "installationUpdate",
    "messageReaction",
    "messageUpdate",
    "messageDelete",
    "event",
    "typing",
    "endOfConversation",
)
_COMMANDS = (
    "help",
    "status",
    "ticket {ref}",
    "retry {ref}",
    "add me to calendar sync",
    "remove me from calendar sync",
    "change my sync address to {text}",
    "tickets",
    "users",
    "users {text}",
    "tickets {text}",
    "<at>Syncwarden</at> ticket {ref}",
)


@dataclass(frozen=True)
class Mutation:
    path: tuple[str, ...]
    delete: bool
    value: Any


mutations = st.lists(
    st.builds(Mutation, st.sampled_from(_ACTIVITY_PATHS), st.booleans(), junk), max_size=4
)


def _apply(activity: dict[str, Any], mutation: Mutation) -> None:
    *parents, last = mutation.path
    here: Any = activity
    for key in parents:
        if not isinstance(here, dict):
            return
        here = here.setdefault(key, {}) if isinstance(here.get(key), dict) else None
        if here is None:
            return
    if not isinstance(here, dict):
        return
    if mutation.delete:
        here.pop(last, None)
    else:
        here[last] = mutation.value


def _encode(body: Any, how: str) -> bytes:
    if how == "ascii":
        return json.dumps(body, ensure_ascii=True).encode()
    if how == "utf8":  # lone surrogates as CESU-8 bytes, which are not UTF-8
        return json.dumps(body, ensure_ascii=False).encode("utf-8", "surrogatepass")
    raw = json.dumps(body).encode()
    return raw[: len(raw) // 2]  # cut short


encodings = st.sampled_from(["ascii"] * 8 + ["utf8", "cut"])


# ---------------------------------------------------------------------------------- the world


@dataclass
class World:
    h: Harness = field(repr=False)
    client: WebClient = field(repr=False)
    recorder: ConnectorRecorder = field(repr=False)
    postgres: bool
    ticket_ref: str  # Blake asked for Sasha; awaiting approval
    subscription_id: str
    mailbox_id: str
    kicks: list[str] = field(repr=False)
    ran: dict[str, int] = field(default_factory=dict, repr=False)
    unknown_answers: dict[str, Any] = field(default_factory=dict, repr=False)

    def __repr__(self) -> str:
        return f"World(ticket_ref={self.ticket_ref!r}, postgres={self.postgres})"

    @property
    def sessions(self) -> async_sessionmaker[AsyncSession]:
        return self.h.sessions

    def budget(self, test: str) -> bool:
        """Whether this example runs: all of them on SQLite, a share on PostgreSQL."""
        self.ran[test] = self.ran.get(test, 0) + 1
        limit = EXAMPLES[test] // POSTGRES_SHARE if self.postgres else EXAMPLES[test]
        return self.ran[test] <= limit


@pytest.fixture
async def world(
    migrated_engine: AsyncEngine, tenant: SandboxTenant, m365: Microsoft365
) -> AsyncIterator[World]:
    async with workflow_harness(
        migrated_engine, tenant, m365, approvals={"it_admins": [PEOPLE["blake"]]}
    ) as h:
        asked = await h.service.request_enrollment(
            h.person("blake"), subject=h.person("sasha").id, justification="Tuesday drop-ins"
        )
        assert asked.ticket is not None, asked
        await enroll(h.sessions, tenant, ENROLLED)
        mailbox_id = tenant.seed.user_ids[ENROLLED]
        subscription_id = str(uuid.uuid4())
        notification_url = "https://syncwarden.example.edu/api/graph/notifications"
        sync = build_calendar_sync(
            sandbox_settings(
                tenant, sync=SyncSettings(notification_url=notification_url).model_dump()
            ),
            recording_units(h.sessions, RecordingNotifier()),
            m365,
        )
        kicks: list[str] = []
        sync.subscriptions.on_requested = lambda: kicks.append("sync.requested")
        dialogue = DialogueLogic(ConversationStore(h.sessions), h.service, h.roster, clock=h.clock)
        recorder = await ConnectorRecorder().start()
        app = create_app(SANDBOX, migrated_engine, dialogue, notifications=sync.subscriptions)
        client: WebClient = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        try:
            yield World(
                h,
                client,
                recorder,
                migrated_engine.dialect.name == "postgresql",
                asked.ticket.ref,
                subscription_id,
                mailbox_id,
                kicks,
            )
        finally:
            await client.close()
            await recorder.close()


@dataclass(frozen=True)
class Snapshot:
    workflow: tuple[Any, ...]  # tickets, enrollments, steps, decisions, outbox, audit
    conversations: tuple[Any, ...]  # stored conversation references
    notifications: tuple[Any, ...]  # mailbox subscriptions and requested syncs


def _summary(table: Any, *columns: Any) -> list[Any]:
    """A row count and aggregates that move whenever a row of ``table`` is added or changed."""
    return [
        select(func.count()).select_from(table).scalar_subquery(),
        *(select(aggregate).select_from(table).scalar_subquery() for aggregate in columns),
    ]


_SNAPSHOT = select(
    *_summary(Ticket, func.max(Ticket.updated_at), func.sum(Ticket.version)),
    *_summary(Enrollment, func.max(Enrollment.updated_at)),
    *_summary(Step, func.max(Step.updated_at)),
    *_summary(Decision),
    *_summary(OutboxMessage),
    *_summary(AuditEvent),
    *_summary(ConversationRecord, func.max(ConversationRecord.updated_at)),
    *_summary(SubscriptionRecord, func.max(SubscriptionRecord.expires_at)),
    *_summary(SyncState, func.max(SyncState.requested_at)),
)


def request_sent(answer: str) -> bool:
    """Whether an invoke's answer is the request card turned into its sent state (a ticket was
    created; its confirmation went to the chat)."""
    try:
        value = json.loads(answer).get("value")
    except (ValueError, AttributeError):
        return False
    return isinstance(value, dict) and "Sent · " in json.dumps(value, ensure_ascii=False)


async def snapshot(sessions: async_sessionmaker[AsyncSession]) -> Snapshot:
    """The state a request may change, in one round trip (every example takes two)."""
    async with sessions() as session:
        row = tuple((await session.execute(_SNAPSHOT)).one())
    return Snapshot(row[:10], row[10:12], row[12:])


def assert_no_leak(text: str) -> None:
    for leak in LEAKS:
        assert leak not in text, f"{leak!r} in {text[:500]!r}"


@dataclass
class Answer:
    status: int
    text: str
    posted: list[Any]  # what was sent to the Bot Framework connector (Teams) meanwhile


async def post(world: World, path: str, body: bytes, **kwargs: Any) -> Answer:
    """Post ``body``; check no 5xx, no leak in the answer or in what went to Teams, and that
    nothing unexpected was raised and counted anywhere."""
    errors = dict(unexpected_counts())
    sent = len(world.recorder.requests)
    response = await world.client.post(
        path, data=body, headers={"Content-Type": "application/json"}, **kwargs
    )
    text = await response.text()
    posted = [request.body for request in world.recorder.requests[sent:]]
    assert response.status < 500, (response.status, text[:500])
    assert_no_leak(text)
    for message in posted:
        assert_no_leak(json.dumps(message))
    assert dict(unexpected_counts()) == errors, "an unexpected exception was caught and counted"
    return Answer(response.status, text, posted)


def activity_from(world: World, key: str | None, text: str) -> dict[str, Any]:
    activity = message_activity(world.recorder.url, text, activity_id=f"fz-{uuid.uuid4().hex}")
    if key is not None:
        person = world.h.person(key)
        activity["from"] = {"id": f"29:{key}", "name": person.name, "aadObjectId": person.id}
        activity["conversation"] = {
            "id": f"a:{key}",
            "conversationType": "personal",
            "tenantId": "sandbox-tenant",
        }
    return activity


def invoke_from(world: World, key: str | None, verb: Any, data: Any) -> dict[str, Any]:
    """An Action.Execute click on one of our cards, as Teams delivers it."""
    activity = activity_from(world, key, "")
    activity.update(
        type="invoke",
        name="adaptiveCard/action",
        text=None,
        value={
            "action": {"type": "Action.Execute", "verb": verb, "data": data},
            "trigger": "manual",
        },
    )
    return activity


def fuzz_settings(test: str) -> settings:
    # No shrinking: every example is a round trip through the whole service, and shrinking one
    # can take minutes; the failing example is printed as generated, with a blob to replay it.
    return settings(
        max_examples=EXAMPLES[test],
        deadline=None,
        phases=(Phase.explicit, Phase.reuse, Phase.generate),
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
        print_blob=True,
        # The same cases every run: CI must not turn red on a case no change introduced. New
        # cases come from changing the strategies or the count, deliberately, and from running
        # this module by hand with derandomize=False and a few --hypothesis-seed=N: do so after
        # changing an endpoint. (Seeds 1-6 on SQLite and 7-9 on PostgreSQL found nothing new
        # once a reply the connector refuses stopped failing the turn; see the tests below.)
        derandomize=True,
    )


# ---------------------------------------------------------------------------------- the tests


@fuzz_settings("activities")
@example(  # an activity id too long for the reply's request line: the turn answered 500
    sender=STRANGER,
    kind="message",
    odd_kind="",
    command="help",
    ref="",
    text="",
    changes=[Mutation(("id",), delete=False, value="x" * 70_000)],
    service_path="",
    path_junk="",
    encoding="ascii",
)
@given(
    sender=st.sampled_from([STRANGER, ADMIN, None]),
    kind=st.sampled_from(("message",) * 12 + _TYPES + ("junk",) * 2),
    odd_kind=odd_text,
    command=st.sampled_from(_COMMANDS),
    ref=ticket_like,
    text=odd_text,
    changes=mutations,
    service_path=st.sampled_from(["", "", "", "", "junk/", "junk"]),
    path_junk=odd_text,
    encoding=encodings,
)
async def test_generated_activities_never_break_a_request(
    world: World,
    sender: str | None,
    kind: str,
    odd_kind: str,
    command: str,
    ref: Any,
    text: str,
    changes: list[Mutation],
    service_path: str,
    path_junk: str,
    encoding: str,
) -> None:
    if not world.budget("activities"):
        return
    typed = command.format(ref=ref if isinstance(ref, str) else json.dumps(ref), text=text)
    activity = activity_from(world, sender, typed)
    activity["type"] = odd_kind if kind == "junk" else kind
    if kind == "invoke":
        activity["name"] = "adaptiveCard/action"
    for change in changes:
        if sender == ADMIN and change.path == ("value",):
            continue  # an IT admin's card click may legitimately change a ticket
        _apply(activity, change)
    if isinstance(activity.get("serviceUrl"), str) and "://" in activity["serviceUrl"]:
        # Any http(s) serviceUrl is the recorder's, plus junk: replies must reach someone. A long
        # junk path makes a reply the recorder refuses (it reads request lines of 8 KiB at most,
        # like any HTTP server): the turn is still acknowledged.
        junk_path = service_path.replace("junk", path_junk)
        activity["serviceUrl"] = world.recorder.url + junk_path
    before = await snapshot(world.sessions)

    answer = await post(world, MESSAGES, _encode(activity, encoding))

    after = await snapshot(world.sessions)
    assert after.workflow == before.workflow, (answer.status, answer.text[:300])
    if answer.status >= 400:
        assert after == before, "a refused activity changed state"


@fuzz_settings("cards")
@given(
    sender=st.sampled_from([STRANGER, STRANGER, STRANGER, None]),
    verb=st.one_of(
        st.sampled_from(
            [
                "approve",
                "reject",
                "refresh",
                "retry",
                "cancel",
                "manual_done",
                "submit_request",
                "credential_acknowledge",
                "credential_snooze",
                "users_page",
                "tickets_page",
            ]
        ),
        junk,
    ),
    ticket=st.one_of(st.just("existing"), ticket_like),
    data=st.dictionaries(
        st.sampled_from(
            [
                "version",
                "comment",
                "subject",
                "mailbox",
                "profile",
                "justification",
                "alert",
                "verb",
                "filters",
                "after",
                "first",
            ]
        ),
        junk,
        max_size=5,
    ),
    action_junk=st.one_of(st.none(), junk),
    name=st.sampled_from(["adaptiveCard/action"] * 7 + ["junk"]),
    odd_name=odd_text,
    encoding=encodings,
)
async def test_generated_card_clicks_never_break_a_request_nor_change_a_refused_ticket(
    world: World,
    sender: str | None,
    verb: Any,
    ticket: Any,
    data: dict[str, Any],
    action_junk: Any,
    name: str,
    odd_name: str,
    encoding: str,
) -> None:
    if not world.budget("cards"):
        return
    payload = dict(data, ticket=world.ticket_ref if ticket == "existing" else ticket)
    activity = invoke_from(world, sender, verb, payload)
    if sender is None:
        activity["from"] = {"id": "29:nobody", "aadObjectId": str(uuid.uuid4())}
    action = activity["value"]["action"]
    if action_junk is not None and isinstance(action_junk, dict):
        action.update(action_junk)
    elif action_junk is not None:
        activity["value"]["action"] = action_junk
    activity["name"] = odd_name if name == "junk" else name
    before = await snapshot(world.sessions)

    answer = await post(world, MESSAGES, _encode(activity, encoding))

    after = await snapshot(world.sessions)
    created = request_sent(answer.text)
    if answer.status >= 400:
        assert after == before, "a refused click changed state"
    elif not created:
        assert after.workflow == before.workflow, answer.text[:300]
    if (
        sender == STRANGER
        and action_junk is None
        and name == "adaptiveCard/action"
        and verb in TICKET_VERBS
        and answer.status == 200
        and valid_ticket_ref(payload["ticket"]) not in await own_tickets(world, STRANGER)
    ):
        # Someone else's ticket, one that does not exist and a number no ticket can have all
        # get the same answer: a stranger learns nothing, not even whether it exists.
        value = json.loads(answer.text)["value"]
        assert value == await unknown_ticket_answer(world, verb), (payload["ticket"], value)


TICKET_VERBS = ("approve", "reject", "cancel", "retry", "manual_done", "refresh")


async def own_tickets(world: World, key: str) -> set[str | None]:
    async with world.sessions() as session:
        ids = await session.scalars(
            select(Ticket.id).where(Ticket.subject_id == world.h.person(key).id)
        )
        return {f"SW-{1000 + ticket_id}" for ticket_id in ids}


async def unknown_ticket_answer(world: World, verb: str) -> Any:
    """What the stranger is told when clicking ``verb`` for a well-formed number no ticket has."""
    if verb not in world.unknown_answers:
        activity = invoke_from(world, STRANGER, verb, {"ticket": UNKNOWN_TICKET, "version": 1})
        response = await world.client.post(MESSAGES, json=activity)
        assert response.status == 200
        world.unknown_answers[verb] = (await response.json())["value"]
    return world.unknown_answers[verb]


_ITEM_KEYS = st.fixed_dictionaries(
    {},
    optional={
        "subscriptionId": st.one_of(st.just("known"), odd_text, junk),
        "clientState": st.one_of(st.just(CLIENT_STATE), odd_text, junk),
        "lifecycleEvent": st.one_of(
            st.sampled_from(["missed", "reauthorizationRequired", "subscriptionRemoved"]), junk
        ),
        "changeType": st.one_of(st.sampled_from(["created", "updated", "deleted"]), junk),
        "resource": junk,
        "resourceData": junk,
        "tenantId": junk,
        "subscriptionExpirationDateTime": junk,
    },
)
notification_bodies = st.one_of(
    st.fixed_dictionaries({"value": st.lists(st.one_of(_ITEM_KEYS, junk), max_size=5)}),
    st.fixed_dictionaries({"value": junk}),
    junk,
)


@fuzz_settings("notifications")
@given(body=notification_bodies, encoding=encodings)
async def test_generated_graph_notifications_never_break_a_request_nor_queue_a_forgery(
    world: World, body: Any, encoding: str
) -> None:
    if not world.budget("notifications"):
        return
    async with world.sessions() as session:
        missing = await session.get(SubscriptionRecord, world.mailbox_id) is None
    if missing:  # a genuine subscriptionRemoved (or a failed renewal) forgot it
        async with write_transaction(world.sessions) as session:
            session.add(
                SubscriptionRecord(
                    mailbox_id=world.mailbox_id,
                    subscription_id=world.subscription_id,
                    client_state_hash=hashlib.sha256(CLIENT_STATE.encode()).hexdigest(),
                    expires_at=datetime.now(UTC) + timedelta(days=2),
                )
            )
    genuine = False
    if isinstance(body, dict) and isinstance(body.get("value"), list):
        for item in body["value"]:
            if isinstance(item, dict) and item.get("subscriptionId") == "known":
                item["subscriptionId"] = world.subscription_id
                genuine = genuine or item.get("clientState") == CLIENT_STATE
    kicks = len(world.kicks)
    before = await snapshot(world.sessions)

    answer = await post(world, GRAPH_NOTIFICATIONS_PATH, _encode(body, encoding))

    after = await snapshot(world.sessions)
    assert answer.status in (202, 400, 413), (answer.status, answer.text[:300])
    if answer.status >= 400 or not genuine:
        assert after == before, "a forged or refused notification changed state"
        assert len(world.kicks) == kicks


# ------------------------------------------------------- what the fuzzer found, pinned down

MALFORMED = ("SW-99999999999999999999", "SW-1001²", "SW-\u0661\u0660\u0664\u0662", "SW-1000")


@pytest.mark.parametrize("number", MALFORMED)
async def test_a_number_no_ticket_can_have_gets_the_answer_any_unknown_number_gets(
    world: World, number: str
) -> None:
    """``ticket SW-99999999999999999999`` overflowed the database's integer and ``SW-1001²``
    made ``int()`` raise: exception text in the chat. Now the answer for an unknown ticket:
    a stranger is told what they are told for anyone's ticket, IT that there is none."""
    before = await snapshot(world.sessions)
    for key, expected in ((STRANGER, CANNOT_SEE), (ADMIN, f"There is no ticket {number}.")):
        said = await post(
            world, MESSAGES, json.dumps(activity_from(world, key, f"ticket {number}")).encode()
        )
        assert [message["text"] for message in said.posted] == [expected], key
        for verb in ("refresh", "approve", "cancel"):
            click = invoke_from(world, key, verb, {"ticket": number, "version": 1})
            answer = await post(world, MESSAGES, json.dumps(click).encode())
            assert json.loads(answer.text)["value"] == expected, (key, verb)
    for verb in ("retry", "manual_done"):  # IT's: refused to others before any number is read
        click = invoke_from(world, STRANGER, verb, {"ticket": number})
        answer = await post(world, MESSAGES, json.dumps(click).encode())
        assert json.loads(answer.text)["value"] == await unknown_ticket_answer(world, verb)
    assert (await snapshot(world.sessions)).workflow == before.workflow


@pytest.mark.parametrize("bad", ["a:\x00b", "a:" + "x" * 600], ids=["nul", "too-long"])
@pytest.mark.parametrize(
    "where", [("conversation", "id"), ("conversation", "tenantId"), ("from", "aadObjectId")]
)
async def test_ids_no_database_can_keep_are_not_stored_and_break_no_turn(
    world: World, where: tuple[str, str], bad: str
) -> None:
    """PostgreSQL refuses NUL and a value longer than its column: the conversation-reference
    upsert failed the turn. Such a reference is not kept; the person is still answered."""
    activity = activity_from(world, STRANGER, "help")
    activity[where[0]][where[1]] = bad
    answer = await post(world, MESSAGES, json.dumps(activity).encode())
    assert answer.status < 400 and answer.posted, answer.text
    async with world.sessions() as session:
        # (No query names the bad id: PostgreSQL refuses NUL in a parameter too.)
        stored = await session.scalar(select(func.count()).select_from(ConversationRecord))
    assert stored == 0


@pytest.mark.parametrize("bad", ["drop-ins\x00", "drop-ins\ud800"], ids=["nul", "surrogate"])
async def test_card_text_no_database_can_keep_breaks_no_request(world: World, bad: str) -> None:
    """A justification with NUL (PostgreSQL) or a lone surrogate (both databases, through a JSON
    escape) failed the insert of the ticket; it is kept without them."""
    click = invoke_from(world, STRANGER, "submit_request", {"justification": bad})
    answer = await post(world, MESSAGES, json.dumps(click).encode())
    assert request_sent(answer.text), answer.text
    async with world.sessions() as session:
        kept = await session.scalar(
            select(Ticket.justification).where(Ticket.subject_id == world.h.person(STRANGER).id)
        )
    assert kept == "drop-ins"


@pytest.mark.parametrize(
    "activity_id", ["fz-" + "x" * 9_000, "é" * 3_000], ids=["ascii", "percent-encoded"]
)
async def test_a_reply_too_long_for_the_connector_acknowledges_the_turn(
    world: World, activity_id: str
) -> None:
    """The reply goes to ``{serviceUrl}/v3/conversations/{id}/activities/{activity id}``: an
    activity id (Microsoft publishes no maximum) that makes its request line longer than the
    connector reads (8 KiB here) had the connector answer 400, and the turn answered 500 after
    reporting an unexpected error. Now the turn is acknowledged and the lost reply a warning."""
    activity = activity_from(world, STRANGER, "help")
    activity["id"] = activity_id
    with capture_logs() as logs:
        answer = await post(world, MESSAGES, json.dumps(activity).encode())
    assert answer.status == 202, answer.text
    assert answer.posted == []  # refused before the recorder's handler saw it
    warnings = [line for line in logs if line["event"] == "bot.reply_refused"]
    assert warnings and warnings[0]["log_level"] == "warning" and warnings[0]["status"] == 400


@pytest.mark.parametrize("status", [400, 403, 404, 413, 429, 502])
async def test_a_reply_the_connector_refuses_acknowledges_the_turn(
    world: World, status: int
) -> None:
    """Whatever the connector answers a reply with, the turn's answer to the channel is not a
    5xx and nothing is reported as unexpected: the person cannot be told either way."""
    world.recorder.scripted.append((status, {"Content-Type": "application/json"}, "{}"))
    before = await snapshot(world.sessions)
    answer = await post(
        world, MESSAGES, json.dumps(activity_from(world, STRANGER, "help")).encode()
    )
    assert answer.status == 202, answer.text
    assert len(answer.posted) == 1  # tried once, not retried into a loop
    assert (await snapshot(world.sessions)).workflow == before.workflow
