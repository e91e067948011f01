"""The Teams surface over HTTP: messages and card clicks through /api/messages, end to end.

The app, the Agents SDK, the workflow and the Microsoft 365 connectors are the production ones;
the sandbox tenant plays Microsoft 365 and a local recorder plays the Bot Framework connector that
receives the bot's replies.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from microsoft_agents.hosting.core.authorization import AuthenticationConstants
from sqlalchemy.ext.asyncio import AsyncEngine

from syncwarden.bot.conversations import ConversationStore
from syncwarden.bot.dialogue import DialogueLogic
from syncwarden.bot.turn_clients import NO_USER_TOKENS, UserTokensUnusedError
from syncwarden.core.settings import ApprovalSettings, Mode, Settings
from syncwarden.m365 import Microsoft365
from syncwarden.sandbox.server import SandboxTenant
from syncwarden.web import create_app
from syncwarden.workflows.access import CANNOT_SEE
from syncwarden.workflows.model import TicketStatus
from syncwarden.workflows.ports import NotificationKind
from syncwarden.workflows.roster import Roster
from tests.support.notifier import recording_units
from tests.support.recorder import ConnectorRecorder, message_activity
from tests.support.workflow import PEOPLE, Harness, workflow_harness

WebClient = TestClient[web.Request, web.Application]


@pytest.fixture
async def recorder() -> AsyncIterator[ConnectorRecorder]:
    started = await ConnectorRecorder().start()
    yield started
    await started.close()


@asynccontextmanager
async def serving(engine: AsyncEngine, dialogue: DialogueLogic) -> AsyncIterator[WebClient]:
    """The production web app around ``dialogue``, on a local port, in sandbox mode (anonymous
    Bot Framework traffic; production's JWT checks are in test_bot_auth.py)."""
    settings = Settings.model_validate({"mode": Mode.SANDBOX})
    started: WebClient = TestClient(
        TestServer(create_app(settings, engine, dialogue), host="127.0.0.1")
    )
    await started.start_server()
    try:
        yield started
    finally:
        await started.close()


@pytest.fixture
async def client(h: Harness, migrated_engine: AsyncEngine) -> AsyncIterator[WebClient]:
    dialogue = DialogueLogic(ConversationStore(h.sessions), h.service, h.roster, clock=h.clock)
    async with serving(migrated_engine, dialogue) as started:
        yield started


def from_person(h: Harness, key: str, activity: dict[str, Any]) -> dict[str, Any]:
    person = h.person(key)
    activity["from"] = {"id": f"29:{key}", "name": person.name, "aadObjectId": person.id}
    activity["conversation"] = {"id": f"a:{key}", "conversationType": "personal", "tenantId": "t"}
    return activity


def invoke(
    h: Harness, key: str, service_url: str, verb: str, data: dict[str, Any]
) -> dict[str, Any]:
    activity = message_activity(service_url, activity_id=f"inv-{verb}")
    activity.update(
        type="invoke",
        name="adaptiveCard/action",
        text=None,
        replyToId="card-1",
        value={
            "action": {"type": "Action.Execute", "verb": verb, "data": data},
            "trigger": "manual",
        },
    )
    return from_person(h, key, activity)


async def say(
    client: WebClient, h: Harness, key: str, recorder: ConnectorRecorder, text: str
) -> dict[str, Any]:
    before = len(recorder.requests)
    response = await client.post(
        "/api/messages", json=from_person(h, key, message_activity(recorder.url, text))
    )
    assert response.status in (200, 201, 202), await response.text()
    assert len(recorder.requests) == before + 1
    body: dict[str, Any] = recorder.requests[-1].body
    return body


async def click(client: WebClient, activity: dict[str, Any]) -> dict[str, Any]:
    response = await client.post("/api/messages", json=activity)
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    assert body["statusCode"] == 200
    return body


async def test_request_approve_and_provision_through_teams(
    client: WebClient, h: Harness, recorder: ConnectorRecorder
) -> None:
    form = await say(
        client, h, "sasha", recorder, "<at>Syncwarden</at> pls add me to the calender sync"
    )
    card = form["attachments"][0]["content"]
    inputs = {element.get("id"): element for element in card["body"] if element.get("id")}
    assert inputs["mailbox"]["value"] == "sasha.verhoeven@example.edu"
    assert [c["value"] for c in inputs["profile"]["choices"]] == ["prof-sasha"]

    before = len(recorder.requests)
    submitted = await click(
        client,
        invoke(
            h,
            "sasha",
            recorder.url,
            "submit_request",
            {
                "verb": "submit_request",
                "mailbox": "sasha.verhoeven@example.edu",
                "profile": "prof-sasha",
                "justification": "Tuesday drop-ins",
            },
        ),
    )
    # The card turns into its sent state (no Send button left) and the chat gets the answer.
    assert submitted["type"] == "application/vnd.microsoft.card.adaptive"
    assert "actions" not in submitted["value"]
    assert "SW-1001" in str(submitted["value"]) and "Sent" in str(submitted["value"])
    [confirmation] = [r.body for r in recorder.requests[before:]]
    assert "SW-1001" in confirmation["text"] and "approver has been asked" in confirmation["text"]

    refused = await click(
        client, invoke(h, "blake", recorder.url, "approve", {"ticket": "SW-1001", "version": 1})
    )
    assert refused["value"] == CANNOT_SEE, "a stranger's click shows nothing of the ticket"
    not_yours = await click(
        client, invoke(h, "sasha", recorder.url, "approve", {"ticket": "SW-1001", "version": 1})
    )
    assert "cannot approve a request about yourself" in str(not_yours["value"])
    assert "actions" not in not_yours["value"], "a refused click keeps a card without buttons"
    still = await h.service.get_ticket("SW-1001")
    assert still is not None and still.status == TicketStatus.AWAITING_APPROVAL

    approved = await click(
        client,
        invoke(
            h,
            "casey",
            recorder.url,
            "approve",
            {"ticket": "SW-1001", "version": 1, "comment": "fine"},
        ),
    )
    assert approved["type"] == "application/vnd.microsoft.card.adaptive"
    assert "actions" not in approved["value"], "a decided card has no buttons"
    assert "Approved** by" in str(approved["value"])

    again = await click(
        client, invoke(h, "casey", recorder.url, "approve", {"ticket": "SW-1001", "version": 1})
    )
    assert "already" in str(again["value"]).lower()

    await h.runner.run_until_idle()
    assert h.in_sync_group("sasha")
    status = await say(client, h, "sasha", recorder, "status")
    assert "sasha.verhoeven@example.edu" in status["text"]


async def test_admin_commands_are_refused_politely_to_others(
    client: WebClient, h: Harness, recorder: ConnectorRecorder
) -> None:
    reply = await say(client, h, "sasha", recorder, "tickets")
    assert "only IT admins" in reply["text"]
    listing = await say(client, h, "dana", recorder, "tickets")
    assert listing["text"] == "No open tickets."


async def test_help_is_per_person_staff_see_theirs_it_admins_theirs_too(
    client: WebClient, h: Harness, recorder: ConnectorRecorder
) -> None:
    staff = await say(client, h, "sasha", recorder, "help")
    assert "change my sync address to" in staff["text"]
    assert "**tickets**" not in staff["text"] and "IT admin" not in staff["text"]
    it = await say(client, h, "dana", recorder, "help")
    assert "change my sync address to" in it["text"]
    assert "**tickets**" in it["text"] and "**pause someone@example.edu**" in it["text"]


async def test_unknown_text_gets_help(
    client: WebClient, h: Harness, recorder: ConnectorRecorder
) -> None:
    reply = await say(client, h, "sasha", recorder, "what's the weather")
    assert "add me to calendar sync" in reply["text"]


async def test_users_pause_and_resume(
    client: WebClient, h: Harness, recorder: ConnectorRecorder
) -> None:
    ticket = (await h.service.request_enrollment(h.person("sasha"))).ticket
    assert ticket is not None
    await h.service.decide(ticket.ref, h.person("casey"), approve=True)
    await h.runner.run_until_idle()
    table = await say(client, h, "dana", recorder, "users")
    card = table["attachments"][0]["content"]
    rows = card["body"][1]["rows"]
    cells = [cell["items"][0]["text"] for cell in rows[1]["cells"]]
    assert cells[:3] == [ticket.subject.name, "sasha.verhoeven@example.edu", "on"]
    paused = await say(client, h, "dana", recorder, "pause sasha.verhoeven@example.edu")
    assert "is paused" in paused["text"]
    table = await say(client, h, "dana", recorder, "users")
    assert (
        table["attachments"][0]["content"]["body"][1]["rows"][1]["cells"][2]["items"][0]["text"]
        == "off"
    )
    again = await say(client, h, "dana", recorder, "pause sasha.verhoeven@example.edu")
    assert "already paused" in again["text"]
    resumed = await say(client, h, "dana", recorder, "resume sasha.verhoeven@example.edu")
    assert "is resumed" in resumed["text"]
    refused = await say(client, h, "sasha", recorder, "pause sasha.verhoeven@example.edu")
    assert "only IT admins" in refused["text"]


async def test_installation_stores_the_chat_for_later_messages(
    client: WebClient, h: Harness, recorder: ConnectorRecorder
) -> None:
    activity = from_person(h, "blake", message_activity(recorder.url, activity_id="inst-1"))
    activity.update(type="installationUpdate", action="add", text=None)
    response = await client.post("/api/messages", json=activity)
    assert response.status in (200, 201, 202)
    stored = await ConversationStore(h.sessions).for_user(h.person("blake").id)
    assert stored is not None and stored.conversation_id == "a:blake"
    assert stored.user_mri == "29:blake"
    activity.update(action="remove", id="inst-2")
    await client.post("/api/messages", json=activity)
    assert await ConversationStore(h.sessions).for_user(h.person("blake").id) is None


async def test_refresh_shows_buttons_only_to_those_who_may_decide(
    client: WebClient, h: Harness, recorder: ConnectorRecorder
) -> None:
    ticket = (await h.service.request_enrollment(h.person("sasha"))).ticket
    assert ticket is not None
    data = {"ticket": ticket.ref, "version": ticket.version}
    approver = await click(client, invoke(h, "casey", recorder.url, "refresh", data))
    assert [a["verb"] for a in approver["value"]["actions"]] == ["approve", "reject"]
    subject = await click(client, invoke(h, "sasha", recorder.url, "refresh", data))
    assert subject["value"]["type"] == "AdaptiveCard"
    assert "actions" not in subject["value"], "the person it is about may not decide it"
    stranger = await click(client, invoke(h, "blake", recorder.url, "refresh", data))
    assert stranger["value"] == CANNOT_SEE


# The people of one ticket, for the read tests (workflows.access). Blake asked for Sasha while he
# was an IT admin and has left IT since, so now he is only its requester. Dana is IT (and here no
# fallback approver), Casey an approver, Avery a fallback approver. Rowan is none of these; he
# has a ticket of his own, which grants him nothing on Sasha's.
READERS = {
    "sasha": "subject",
    "blake": "requester",
    "casey": "approver",
    "avery": "fallback approver",
    "dana": "IT admin",
}
STRANGER = "rowan"
UNKNOWN = "SW-9999"
ADAPTIVE = "application/vnd.microsoft.card.adaptive"
WHY = "Tuesday drop-ins for first-years"


@dataclass
class Readers:
    h: Harness
    client: WebClient
    ref: str
    own_ref: str  # the stranger's own ticket


@pytest.fixture
async def readers(
    migrated_engine: AsyncEngine, tenant: SandboxTenant, m365: Microsoft365
) -> AsyncIterator[Readers]:
    async with workflow_harness(
        migrated_engine, tenant, m365, approvals={"it_admins": [PEOPLE["blake"]]}
    ) as h:
        asked = await h.service.request_enrollment(
            h.person("blake"), subject=h.person("sasha").id, justification=WHY
        )
        own = await h.service.request_enrollment(h.person(STRANGER))
        assert asked.ticket is not None and own.ticket is not None, (asked, own)
        assert asked.ticket.requester.id == h.person("blake").id
        groups = tenant.seed.group_ids
        roster = Roster(
            h.m365.directory,
            ApprovalSettings(
                approvers_group_id=groups["Calendar Sync Approvers"],
                it_admins_group_id=groups["IT Admins"],
                fallback_approvers=[PEOPLE["avery"]],
            ),
        )
        dialogue = DialogueLogic(ConversationStore(h.sessions), h.service, roster, clock=h.clock)
        async with serving(migrated_engine, dialogue) as started:
            yield Readers(h, started, asked.ticket.ref, own.ticket.ref)


def assert_shows_nothing(answer: object, readers: Readers) -> None:
    """The refusal is the same sentence for any ticket, and names nothing of Sasha's."""
    text = json.dumps(answer)
    for revealing in (readers.ref, "Sasha", "sasha", WHY, "Blake", "awaiting"):
        assert revealing not in text, revealing


async def test_refresh_shows_a_ticket_only_to_its_people(
    readers: Readers, recorder: ConnectorRecorder
) -> None:
    h, client, ref = readers.h, readers.client, readers.ref
    for key, role in READERS.items():
        shown = await click(client, invoke(h, key, recorder.url, "refresh", {"ticket": ref}))
        assert shown["type"] == ADAPTIVE, (key, role, shown)
        assert ref in str(shown["value"]) and WHY in str(shown["value"]), role
    own = await click(
        client, invoke(h, STRANGER, recorder.url, "refresh", {"ticket": readers.own_ref})
    )
    assert own["type"] == ADAPTIVE
    for asked in (ref, UNKNOWN):  # forbidden and unknown look the same
        refused = await click(
            client, invoke(h, STRANGER, recorder.url, "refresh", {"ticket": asked})
        )
        assert refused["value"] == CANNOT_SEE, asked
        assert_shows_nothing(refused, readers)
    unknown = await click(client, invoke(h, "dana", recorder.url, "refresh", {"ticket": UNKNOWN}))
    assert unknown["value"] == f"There is no ticket {UNKNOWN}."


async def test_ticket_command_shows_a_ticket_only_to_its_people(
    readers: Readers, recorder: ConnectorRecorder
) -> None:
    h, client, ref = readers.h, readers.client, readers.ref
    for key, role in READERS.items():
        reply = await say(client, h, key, recorder, f"ticket {ref}")
        assert reply.get("attachments"), (key, role, reply.get("text"))
        card = reply["attachments"][0]["content"]
        assert ref in str(card) and WHY in str(card), role
    own = await say(client, h, STRANGER, recorder, f"ticket {readers.own_ref}")
    assert own.get("attachments"), own.get("text")
    for asked in (ref, UNKNOWN):
        refused = await say(client, h, STRANGER, recorder, f"ticket {asked}")
        assert refused["text"] == CANNOT_SEE, asked
        assert not refused.get("attachments")
        assert_shows_nothing(refused["text"], readers)
    unknown = await say(client, h, "dana", recorder, f"ticket {UNKNOWN}")
    assert unknown["text"] == f"There is no ticket {UNKNOWN}."


async def test_refused_clicks_show_nothing_of_a_ticket_to_a_stranger(
    readers: Readers, recorder: ConnectorRecorder
) -> None:
    """Approve, Reject and Cancel answer with the ticket; a stranger's click gets nothing."""
    h, client, ref = readers.h, readers.client, readers.ref
    for verb in ("approve", "reject", "cancel"):
        for asked in (ref, UNKNOWN):
            data = {"ticket": asked, "version": 1}
            refused = await click(client, invoke(h, STRANGER, recorder.url, verb, data))
            assert refused["value"] == CANNOT_SEE, (verb, asked, refused)
            assert_shows_nothing(refused, readers)
    ticket = await h.service.get_ticket(ref)
    assert ticket is not None and ticket.status == TicketStatus.AWAITING_APPROVAL
    assert ticket.version == 1
    # Those who may read it still see it when their click is refused.
    requester = await click(
        client, invoke(h, "blake", recorder.url, "approve", {"ticket": ref, "version": 1})
    )
    assert "cannot approve your own request" in str(requester["value"])
    assert WHY in str(requester["value"])


async def test_ticket_list_is_for_it_admins_only(
    readers: Readers, recorder: ConnectorRecorder
) -> None:
    h, client, ref = readers.h, readers.client, readers.ref
    listing = await say(client, h, "dana", recorder, "tickets")
    shown = json.dumps(listing["attachments"][0]["content"])
    assert ref in shown and readers.own_ref in shown
    for key in (STRANGER, "sasha", "blake", "casey"):
        refused = await say(client, h, key, recorder, "tickets")
        assert "only IT admins" in refused["text"], key
        assert ref not in json.dumps(refused) and readers.own_ref not in json.dumps(refused)


async def test_secrets_command_runs_a_scan_for_it_admins(
    migrated_engine: AsyncEngine, h: Harness, recorder: ConnectorRecorder
) -> None:
    from syncwarden.core.settings import AlertSettings
    from syncwarden.sync.credential_watch import CredentialWatch

    watch = CredentialWatch(
        h.m365.applications,
        recording_units(h.sessions, h.notifier),
        AlertSettings(watch_all_apps=True),
    )
    dialogue = DialogueLogic(ConversationStore(h.sessions), h.service, h.roster, credentials=watch)
    async with serving(migrated_engine, dialogue) as client:
        reply = await say(client, h, "dana", recorder, "secrets")
        assert "credentials need attention" in reply["text"]
        assert "new alerts posted to the IT channel" in reply["text"]
        refused = await say(client, h, "sasha", recorder, "secrets")
        assert "only IT admins" in refused["text"]
        alert_key = next(s.key for s in h.notifier.sent if s.key.startswith("credential:"))
        data = {"alert": alert_key.removeprefix("credential:")}
        not_it = await click(
            client, invoke(h, "sasha", recorder.url, "credential_acknowledge", data)
        )
        assert "Only IT admins" in str(not_it["value"])
        acknowledged = await click(
            client, invoke(h, "dana", recorder.url, "credential_acknowledge", data)
        )
        assert "Acknowledged by" in str(acknowledged["value"])


async def test_doctor_command_answers_it_admins_with_the_checklist(
    migrated_engine: AsyncEngine,
    tenant: SandboxTenant,
    h: Harness,
    recorder: ConnectorRecorder,
) -> None:
    from syncwarden.doctor import Doctor
    from syncwarden.workflow_wiring import BotTokens
    from tests.support.m365 import sandbox_settings

    groups = tenant.seed.group_ids
    settings = sandbox_settings(
        tenant,
        graph={
            "sync_group_id": groups["Calendar Sync"],
            "test_mailbox": "avery.quinlan@example.edu",
        },
        approvals={"approvers_group_id": groups["Calendar Sync Approvers"]},
    )
    doctor = Doctor(settings, migrated_engine, h.sessions, h.m365, BotTokens(settings))
    dialogue = DialogueLogic(ConversationStore(h.sessions), h.service, h.roster, doctor=doctor)
    async with serving(migrated_engine, dialogue) as client:
        reply = await say(client, h, "dana", recorder, "doctor")
        text = reply["text"]
        # No Teams channel has been given a role yet, and nobody is named as IT admin in settings.
        assert text.startswith("**Doctor: 3 of 15 checks failed.**"), text
        assert "✅ **access policy**: Test-ApplicationAccessPolicy says Granted" in text
        assert "❌ **IT channel**: not set" in text
        assert "Fix: in the Teams channel, say '@Syncwarden use this channel for alerts'" in text
        refused = await say(client, h, "sasha", recorder, "doctor")
        assert "only IT admins" in refused["text"]


async def test_sync_now_asks_the_worker_for_a_run_for_it_admins_only(
    migrated_engine: AsyncEngine,
    tenant: SandboxTenant,
    h: Harness,
    recorder: ConnectorRecorder,
) -> None:
    from syncwarden.connectors.scheduling.builtin_appointments import BuiltinAppointments
    from syncwarden.core.settings import SyncSettings
    from syncwarden.sync.engine import SyncEngine
    from syncwarden.sync.records import SyncState
    from syncwarden.sync.worker import SyncWorker
    from tests.support.enrollments import enroll

    avery = "avery.quinlan@example.edu"
    [enrollment] = await enroll(h.sessions, tenant, avery)
    settings = SyncSettings()
    engine = SyncEngine(h.sessions, h.m365.calendar, BuiltinAppointments(h.sessions), settings)
    worker = SyncWorker(h.sessions, engine, settings)
    dialogue = DialogueLogic(ConversationStore(h.sessions), h.service, h.roster, sync=worker)
    async with serving(migrated_engine, dialogue) as client:
        refused = await say(client, h, "sasha", recorder, f"sync now {avery}")
        assert "only IT admins" in refused["text"]
        reply = await say(client, h, "dana", recorder, f"sync now {avery}")
        assert reply["text"].startswith(f"Syncing **{avery}** now")
        unknown = await say(client, h, "dana", recorder, "sync now nobody@example.edu")
        assert "Nobody enrolled matches" in unknown["text"]
        assert (await h.service.set_paused(h.person("dana"), avery, paused=True)).ok
        paused = await say(client, h, "dana", recorder, f"sync now {avery}")
        assert "is paused" in paused["text"] and f"resume {avery}" in paused["text"]
        assert (await h.service.set_paused(h.person("dana"), avery, paused=False)).ok

    async with h.sessions() as session:
        state = await session.get(SyncState, enrollment)
        assert state is not None and state.requested_at is not None
    [report] = await worker.run_requested()
    assert report.enrollment_id == enrollment and report.ok


async def test_card_values_that_are_not_text_are_never_shown_as_python_values(
    client: WebClient, h: Harness, recorder: ConnectorRecorder
) -> None:
    """Card inputs are strings; a list or an object can only be forged, and its Python form
    (``['x']``, ``{'a': 1}``) must not reach a person or a ticket."""
    listed = await click(
        client,
        invoke(h, "sasha", recorder.url, "submit_request", {"mailbox": ["x@example.edu"]}),
    )
    assert "can't read that form" in str(listed["value"])
    assert "[" not in str(listed["value"])
    assert await h.service.get_ticket("SW-1001") is None

    await click(
        client,
        invoke(h, "sasha", recorder.url, "submit_request", {"justification": {"a": 1}}),
    )
    ticket = await h.service.get_ticket("SW-1001")
    assert ticket is not None and ticket.justification == ""


async def test_a_mention_carrying_only_a_teams_id_is_resolved_through_the_connector(
    client: WebClient, h: Harness, recorder: ConnectorRecorder
) -> None:
    """Teams' mention entity names the Teams user id and display name; the Entra object id comes
    from the connector's member API. A mention it cannot resolve asks for an address and never
    shows the Teams id."""
    sasha = h.person("sasha")
    recorder.members["29:sasha"] = {"id": "29:sasha", "name": sasha.name, "aadObjectId": sasha.id}

    def mentioning(member_id: str, name: str) -> dict[str, Any]:
        text = f"<at>Syncwarden</at> add <at>{name}</at> to calendar sync"
        activity = from_person(h, "dana", message_activity(recorder.url, text))
        activity["entities"] = [
            {
                "type": "mention",
                "text": "<at>Syncwarden</at>",
                "mentioned": {"id": "28:syncwarden-bot", "name": "Syncwarden"},
            },
            {
                "type": "mention",
                "text": f"<at>{name}</at>",
                "mentioned": {"id": member_id, "name": name},
            },
        ]
        return activity

    before = len(recorder.requests)
    response = await client.post("/api/messages", json=mentioning("29:sasha", sasha.name))
    assert response.status < 300
    [form] = [r.body for r in recorder.requests[before:]]
    card = form["attachments"][0]["content"]
    assert sasha.name in str(card) and "29:sasha" not in str(card)
    assert recorder.lookups == ["29:sasha"], "the bot's own mention is not looked up"

    before = len(recorder.requests)
    response = await client.post("/api/messages", json=mentioning("29:stranger", "Someone"))
    assert response.status < 300
    [answer] = [r.body for r in recorder.requests[before:]]
    assert "email address" in answer["text"] and "29:" not in answer["text"]


async def test_naming_an_approvals_channel_posts_the_requests_already_waiting(
    client: WebClient, h: Harness, recorder: ConnectorRecorder
) -> None:
    """Requests asked before any approvals channel existed went only to the approvers' chats;
    the channel named afterwards gets them too, and naming it again posts nothing new."""
    waiting = await h.service.request_enrollment(h.person("sasha"), justification="drop-ins")
    assert waiting.ticket is not None and waiting.ticket.status == TicketStatus.AWAITING_APPROVAL
    decided = await h.service.request_enrollment(h.person("blake"), justification="x")
    assert decided.ticket is not None
    await h.service.cancel(decided.ticket.ref, h.person("blake"))
    before = len(h.notifier.to("channel:approvals"))

    def in_channel(text: str) -> dict[str, Any]:
        activity = from_person(h, "dana", message_activity(recorder.url, text))
        activity["conversation"] = {
            "id": "19:approvals@thread.tacv2",
            "conversationType": "channel",
            "tenantId": "t",
        }
        return activity

    for _ in range(2):
        response = await client.post(
            "/api/messages", json=in_channel("<at>Syncwarden</at> use this channel for approvals")
        )
        assert response.status in (200, 201, 202), await response.text()
    answers = [r.body["text"] for r in recorder.requests[-2:]]
    assert all("1 request waiting for a decision is posted here now" in a for a in answers)
    posted = h.notifier.to("channel:approvals", NotificationKind.APPROVAL_REQUESTED)[before:]
    assert [p.ref for p in posted] == [waiting.ticket.ref], "once, and only the waiting one"


def sessions_opened(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The base URL of every aiohttp session opened from now on."""
    opened: list[str] = []
    original = aiohttp.ClientSession.__init__

    def recording(session: aiohttp.ClientSession, *args: Any, **kwargs: Any) -> None:
        opened.append(str(kwargs.get("base_url", "")))
        original(session, *args, **kwargs)

    monkeypatch.setattr(aiohttp.ClientSession, "__init__", recording)
    return opened


async def test_a_turn_opens_no_session_to_the_user_token_service(
    client: WebClient, h: Harness, recorder: ConnectorRecorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Syncwarden signs nobody in, so a turn builds no OAuth client: the SDK's default would
    open an aiohttp session to the token service (and look up a token for it) on every turn."""
    opened = sessions_opened(monkeypatch)
    reply = await say(client, h, "sasha", recorder, "help")
    assert "add me to calendar sync" in reply["text"]
    assert opened, "the reply's connector client is still made"
    assert not [
        url for url in opened if url.startswith(AuthenticationConstants.AGENTS_SDK_OAUTH_URL)
    ], opened


async def test_a_click_answered_in_its_response_builds_no_connector_client(
    client: WebClient, h: Harness, recorder: ConnectorRecorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An approve click's answer is the invoke's HTTP response, so the turn makes no connector
    client (no token for it, no aiohttp session), which the SDK would make for every turn; a
    click that does reply in the chat (a request sent) gets one, and its reply arrives."""
    request = {"mailbox": "sasha.verhoeven@example.edu", "profile": "prof-sasha"}
    opened = sessions_opened(monkeypatch)
    before = len(recorder.requests)
    sent = await click(client, invoke(h, "sasha", recorder.url, "submit_request", request))
    assert "SW-1001" in str(sent["value"])
    assert [url.rstrip("/") for url in opened] == [recorder.url.rstrip("/")], "one, to reply"
    [confirmation] = [r.body for r in recorder.requests[before:]]
    assert "SW-1001" in confirmation["text"]
    opened.clear()
    approved = await click(
        client, invoke(h, "casey", recorder.url, "approve", {"ticket": "SW-1001", "version": 1})
    )
    assert "Approved** by" in str(approved["value"])
    assert opened == []


async def test_an_invoke_that_expects_replies_gets_its_answer_among_them(
    client: WebClient, h: Harness, recorder: ConnectorRecorder
) -> None:
    """A click's answer skips the SDK's copy of it, except when the sender asked for the turn's
    replies in the response (``expectReplies``): the SDK then returns them all, the invoke's
    answer among them, and nothing goes to the connector."""
    request = {"mailbox": "sasha.verhoeven@example.edu", "profile": "prof-sasha"}
    activity = invoke(h, "sasha", recorder.url, "submit_request", request)
    activity["deliveryMode"] = "expectReplies"
    before = len(recorder.requests)
    response = await client.post("/api/messages", json=activity)
    assert response.status == 200, await response.text()
    replies = (await response.json())["activities"]
    [answer] = [reply for reply in replies if reply["type"] == "invokeResponse"]
    assert answer["value"]["status"] == 200 and "SW-1001" in str(answer["value"]["body"])
    assert any("SW-1001" in str(reply.get("text")) for reply in replies)
    assert recorder.requests[before:] == []


async def test_the_user_token_client_refuses_every_use_plainly() -> None:
    with pytest.raises(UserTokensUnusedError, match="does not sign users in"):
        await NO_USER_TOKENS.get_user_token("29:sasha", "any-connection", "msteams")
    with pytest.raises(UserTokensUnusedError):
        NO_USER_TOKENS.user_token  # noqa: B018
    await NO_USER_TOKENS.close()
