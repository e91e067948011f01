"""Requests as people make them in Teams: activities posted to ``POST /api/messages``, and every
message Syncwarden sends back to the Bot Framework connector, on SQLite and PostgreSQL.

Issue 13 asks for these behaviours through the HTTP surface, not only through ``WorkflowService``
(``test_workflows.py`` has the service-level tests): the address a person chooses is the one
used everywhere (item 1), only the mailbox's own addresses are offered or accepted (item 2), each
kind of ticket is told in its own words (item 6), and a failed provisioning is told to the people
it concerns, plainly, and again when IT retries or cancels it (item 7). The service is wired as
``serve`` wires it (see :mod:`tests.support.teams_surface`); what people read is what reached the
connector.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from syncwarden.connectors.scheduling.ports import Mapping
from syncwarden.sandbox.server import SandboxTenant
from syncwarden.workflows.steps import StepName
from tests.support.teams_surface import (
    APPROVALS_CHANNEL,
    IT_CHANNEL,
    Post,
    TeamsSurface,
    answered,
    chat,
    display_name,
    teams_surface,
)
from tests.support.workflow import PEOPLE

AVERY = "avery.quinlan@example.edu"  # primary SMTP address and UPN
AVERY_ALIAS = "aquinlan@example.edu"  # smtp: proxy address of the same mailbox
AVERY_ORG_ALIAS = "avery.quinlan@example.org"  # another one
AVERY_OUTSIDE = "avery.q.personal@example.com"  # otherMails: a personal account elsewhere
ROWAN_ADDRESSES = ["rowan.ibarra@example.org", "rowan.ibarra@example.edu", "ribarra@example.edu"]
ROWAN_OUTSIDE = "rowan.ibarra.home@example.com"
ASKED = "An approver has been asked; I'll message you when it is decided."
EXCHANGE = "https://outlook.office365.com"
EXCHANGE_ROLE = "Exchange.ManageAsApp"


@pytest.fixture
async def teams(migrated_engine: AsyncEngine, tenant: SandboxTenant) -> AsyncIterator[TeamsSurface]:
    async with teams_surface(migrated_engine, tenant) as surface:
        yield surface


def mailbox_choices(form: Post) -> list[str]:
    """The addresses the request card lets the person choose from."""
    assert form.card is not None, form.body
    [choice] = [element for element in form.card["body"] if element.get("id") == "mailbox"]
    return [option["value"] for option in choice["choices"]]


def card_notes(post: Post) -> list[str]:
    """The card's lines shown in the attention colour (what the person must correct)."""
    assert post.card is not None, post.body
    return [e["text"] for e in post.card["body"] if e.get("color") == "Attention"]


def ref_of(sent: Post) -> str:
    """The ticket number in a card's title ("Calendar sync request · SW-1001")."""
    return sent.headline.rsplit("· ", 1)[-1]


async def approve(teams: TeamsSurface, ref: str) -> None:
    """Casey presses Approve on the copy of the approval card that reached her chat."""
    card = next(
        post
        for post in reversed(teams.posts(chat("casey")))
        if post.card is not None and post.headline.endswith(f"· {ref}")
    )
    decided = answered(await teams.click("casey", "approve", card.action_data("approve")))
    assert "**Approved** by Casey Lindqvist" in json.dumps(decided.card), decided.card


async def ask_on_the_card(teams: TeamsSurface, key: str, mailbox: str | None = None) -> str:
    """Person ``key`` asks for calendar sync and sends the request card, choosing ``mailbox``
    (default: the address the card suggests); the new ticket's number."""
    [form] = await teams.say(key, "add me to calendar sync")
    data = form.action_data("submit_request")
    if mailbox is not None:
        data["mailbox"] = mailbox
    sent = answered(await teams.click(key, "submit_request", data))
    assert "actions" not in (sent.card or {}), "a sent request card has no button left"
    await teams.settle()
    return ref_of(sent)


async def enrolled(teams: TeamsSurface, key: str, mailbox: str | None = None) -> str:
    """Person ``key`` asks on the card, Casey approves and provisioning runs; the ticket."""
    ref = await ask_on_the_card(teams, key, mailbox)
    await approve(teams, ref)
    await teams.settle()
    done = f"{ref} is done: calendar sync is set up for {display_name(key)}"
    assert teams.texts(chat(key))[-1] == done
    return ref


def refuse_group_changes(teams: TeamsSurface) -> None:
    """Exchange stops taking Syncwarden's group changes: its app loses ``Exchange.ManageAsApp``,
    a fault only IT can fix. The token cached with the role is dropped, so the next call carries
    the app's roles as they are now (as it would once the cached token expired)."""
    app_id = teams.tenant.seed.app_ids["Syncwarden"]
    teams.tenant.revoke_role(app_id, EXCHANGE, EXCHANGE_ROLE)
    teams.m365.tokens.invalidate(teams.m365.endpoints.exchange_scope)


def allow_group_changes(teams: TeamsSurface) -> None:
    """IT grants the role back."""
    app_id = teams.tenant.seed.app_ids["Syncwarden"]
    teams.tenant.grant_role(app_id, EXCHANGE, EXCHANGE_ROLE)
    teams.m365.tokens.invalidate(teams.m365.endpoints.exchange_scope)


# -- item 1: the chosen mailbox address is honoured -------------------------------------------


async def test_an_alias_chosen_on_the_request_card_is_what_the_ticket_mapping_and_instructions_use(
    teams: TeamsSurface,
) -> None:
    """Avery picks an alias of their own mailbox on the card; every later word and the
    scheduling system's mapping use that alias, never the primary address the card suggested."""
    [form] = await teams.say("avery", "add me to calendar sync")
    assert mailbox_choices(form) == [AVERY, AVERY_ALIAS, AVERY_ORG_ALIAS]
    before = teams.mark()
    data = {**form.action_data("submit_request"), "mailbox": AVERY_ALIAS}
    sent = answered(await teams.click("avery", "submit_request", data))
    assert sent.headline == "Calendar sync request · SW-1001"
    assert sent.fact("Mailbox") == AVERY_ALIAS
    assert teams.texts(chat("avery"), since=before) == [
        f"Thanks! Your request is **SW-1001**. {ASKED}"
    ]

    asked = await teams.settle()
    approval_cards = [post for post in asked if post.headline == "Calendar sync request · SW-1001"]
    assert {post.conversation for post in approval_cards} == {
        chat("casey"),
        chat("emerson"),
        APPROVALS_CHANNEL,
    }
    assert {post.fact("Mailbox") for post in approval_cards} == {AVERY_ALIAS}

    before = teams.mark()
    await approve(teams, "SW-1001")
    await teams.settle()
    told = teams.texts(chat("avery"), since=before)
    assert len(told) == 3, told
    approved, instructions, done = told
    assert approved == "SW-1001 was approved by Casey Lindqvist; setting it up now"
    assert instructions.startswith("**Your calendar sync is ready, Avery.**"), instructions
    assert f"Outlook calendar of **{AVERY_ALIAS}**" in instructions
    assert AVERY not in instructions
    assert done == "SW-1001 is done: calendar sync is set up for Avery Quinlan"
    assert await teams.workflows.scheduling.list_mappings() == [
        Mapping("prof-avery", AVERY_ALIAS, True)
    ]
    status = await teams.answer("avery", "status")
    assert status.text == f"Your calendar syncs into **{AVERY_ALIAS}**."
    shown = await teams.answer("avery", "ticket SW-1001")
    assert shown.fact("Mailbox") == AVERY_ALIAS


async def test_change_my_sync_address_to_an_alias_gives_a_change_ticket_for_the_alias(
    teams: TeamsSurface,
) -> None:
    """An enrolled person moving their sync to another address of their own mailbox gets a
    change ticket (before, a change to an alias was always refused)."""
    await enrolled(teams, "avery")
    assert (await teams.answer("avery", "status")).text == f"Your calendar syncs into **{AVERY}**."
    before = teams.mark()
    reply = await teams.answer("avery", f"change my sync address to {AVERY_ORG_ALIAS}")
    assert reply.text == f"Thanks! Your change is **SW-1002**. {ASKED}"
    again = await teams.answer("avery", f"change my sync address to {AVERY_ALIAS}")
    assert again.text.count("SW-1002") == 1, again.text
    before = teams.mark()

    asked = await teams.settle()
    [channel_card] = [post for post in asked if post.conversation == APPROVALS_CHANNEL]
    assert channel_card.headline == "Calendar sync change · SW-1002"
    assert channel_card.fact("Mailbox") == AVERY_ORG_ALIAS
    assert channel_card.fact("Replaces") == AVERY
    await approve(teams, "SW-1002")
    await teams.settle()
    told = teams.texts(chat("avery"), since=before)
    assert len(told) == 3, told
    approved, instructions, done = told
    assert approved == "SW-1002 was approved by Casey Lindqvist; moving it now"
    assert f"Outlook calendar of **{AVERY_ORG_ALIAS}**" in instructions
    assert done == f"SW-1002 is done: calendar sync for Avery Quinlan now goes to {AVERY_ORG_ALIAS}"
    assert await teams.workflows.scheduling.list_mappings() == [
        Mapping("prof-avery", AVERY_ORG_ALIAS, True)
    ]
    status = await teams.answer("avery", "status")
    assert status.text == f"Your calendar syncs into **{AVERY_ORG_ALIAS}**."


# -- item 2: only the mailbox's own addresses --------------------------------------------------


async def test_the_request_card_offers_only_mailbox_addresses_and_refuses_an_outside_one(
    teams: TeamsSurface,
) -> None:
    """``otherMails`` (a personal account) is an address of the person, not of their mailbox:
    it is never offered, and a card sent with it (a forged or stale one) opens no ticket."""
    [form] = await teams.say("avery", "add me to calendar sync")
    assert mailbox_choices(form) == [AVERY, AVERY_ALIAS, AVERY_ORG_ALIAS]
    assert AVERY_OUTSIDE not in json.dumps(form.body)
    # Rowan's primary SMTP address is not his UPN; both are his mailbox's, his home one is not.
    [rowans] = await teams.say("rowan", "add me to calendar sync")
    assert mailbox_choices(rowans) == ROWAN_ADDRESSES
    assert ROWAN_OUTSIDE not in json.dumps(rowans.body)

    before = teams.mark()
    data = {**form.action_data("submit_request"), "mailbox": AVERY_OUTSIDE}
    refused = answered(await teams.click("avery", "submit_request", data))
    # The card comes back with the reason by the field, still offering only the mailbox's
    # addresses, and nothing is said in the chat (no "Thanks! Your request is ...").
    assert card_notes(refused) == [f"{AVERY_OUTSIDE} is not an address of Avery Quinlan's mailbox"]
    assert mailbox_choices(refused) == [AVERY, AVERY_ALIAS, AVERY_ORG_ALIAS]
    assert "actions" in (refused.card or {}), "the person can correct it and send again"
    assert teams.posts(since=before) == []
    assert await teams.settle() == [], "no approver or IT channel hears of a ticket"
    assert (await teams.answer("dana", "tickets")).text == "No open tickets."
    assert (await teams.answer("dana", "ticket SW-1001")).text == "There is no ticket SW-1001."
    status = await teams.answer("avery", "status")
    assert status.text.startswith("You are not enrolled in calendar sync.")


async def test_a_change_to_an_outside_address_is_refused_with_no_ticket(
    teams: TeamsSurface,
) -> None:
    await enrolled(teams, "avery", AVERY_ALIAS)
    refused = await teams.answer("avery", f"change my sync address to {AVERY_OUTSIDE}")
    assert refused.text == (
        f"I can't do that: {AVERY_OUTSIDE} is not an address of Avery Quinlan's mailbox."
    )
    assert await teams.settle() == []
    assert (await teams.answer("dana", "tickets")).text == "No open tickets."
    status = await teams.answer("avery", "status")
    assert status.text == f"Your calendar syncs into **{AVERY_ALIAS}**."


# -- item 6: each kind of ticket in its own words ----------------------------------------------


def it_lines(teams: TeamsSurface, ref: str, *, since: int) -> list[str]:
    """The IT channel's status lines about ticket ``ref``."""
    return [
        post.headline
        for post in teams.posts(IT_CHANNEL, since=since)
        if post.headline.startswith(f"{ref} ·")
    ]


async def test_each_kind_of_ticket_is_told_in_its_own_words(teams: TeamsSurface) -> None:
    """Enrolling is "set up", a change "moves", a removal is "turned off", for the person, the
    approvers and IT; a removal is never "set up" and IT's line for it never "setting it up"."""
    rowan = chat("rowan")
    before = teams.mark()
    await enrolled(teams, "rowan")
    told = teams.texts(rowan, since=before)
    assert len(told) == 4, told
    assert told[0] == f"Thanks! Your request is **SW-1001**. {ASKED}"
    assert told[1] == "SW-1001 was approved by Casey Lindqvist; setting it up now"
    assert told[2].startswith("**Your calendar sync is ready, Rowan.**")
    assert told[3] == "SW-1001 is done: calendar sync is set up for Rowan Ibarra"
    assert it_lines(teams, "SW-1001", since=before) == [
        "SW-1001 · Rowan Ibarra · new calendar sync request, waiting for approval",
        "SW-1001 · Rowan Ibarra · approved by Casey Lindqvist; setting it up now",
        "SW-1001 · Rowan Ibarra · completed",
    ]

    before = teams.mark()
    changed = await teams.answer("rowan", "change my sync address to ribarra@example.edu")
    assert changed.text == f"Thanks! Your change is **SW-1002**. {ASKED}"
    await teams.settle()
    await approve(teams, "SW-1002")
    await teams.settle()
    told = teams.texts(rowan, since=before)
    assert len(told) == 4, told
    assert told[1] == "SW-1002 was approved by Casey Lindqvist; moving it now"
    assert (
        told[3] == "SW-1002 is done: calendar sync for Rowan Ibarra now goes to ribarra@example.edu"
    )
    assert it_lines(teams, "SW-1002", since=before) == [
        "SW-1002 · Rowan Ibarra · new request to move calendar sync to ribarra@example.edu, "
        "waiting for approval",
        "SW-1002 · Rowan Ibarra · approved by Casey Lindqvist; moving it now",
        "SW-1002 · Rowan Ibarra · completed",
    ]
    titles = {post.headline for post in teams.posts(APPROVALS_CHANNEL, since=before)}
    assert titles == {"Calendar sync change · SW-1002"}

    before = teams.mark()
    removing = await teams.answer("rowan", "remove me from calendar sync")
    assert removing.text == f"Thanks! Your removal is **SW-1003**. {ASKED}"
    await teams.settle()
    await approve(teams, "SW-1003")
    await teams.settle()
    assert teams.texts(rowan, since=before) == [
        f"Thanks! Your removal is **SW-1003**. {ASKED}",
        "SW-1003 was approved by Casey Lindqvist; turning it off now",
        "SW-1003 is done: calendar sync is turned off for Rowan Ibarra",
    ]
    assert it_lines(teams, "SW-1003", since=before) == [
        "SW-1003 · Rowan Ibarra · new request to stop calendar sync, waiting for approval",
        "SW-1003 · Rowan Ibarra · approved by Casey Lindqvist; turning it off now",
        "SW-1003 · Rowan Ibarra · completed",
    ]
    titles = {post.headline for post in teams.posts(APPROVALS_CHANNEL, since=before)}
    assert titles == {"Calendar sync removal · SW-1003"}
    # Nothing anyone was sent about the removal (messages, cards and their updates) sets up.
    about_removal = [
        json.dumps(post.body)
        for post in [*teams.posts(since=before), *teams.updates(since=before)]
        if "SW-1003" in json.dumps(post.body)
    ]
    assert about_removal
    for said in about_removal:
        for wrong in ("set up", "setting it up", "is ready"):
            assert wrong not in said, (wrong, said)
    status = await teams.answer("rowan", "status")
    assert status.text.startswith("You are not enrolled in calendar sync.")


async def test_a_removal_filed_by_it_without_approval_is_not_set_up(
    migrated_engine: AsyncEngine, tenant: SandboxTenant
) -> None:
    """With ``auto_approve_it_on_behalf`` IT's own requests start at once, so the answer to IT
    says what is under way. For an enrollment that is setting it up; a removal is turned off."""
    async with teams_surface(
        migrated_engine, tenant, approvals={"auto_approve_it_on_behalf": True}
    ) as teams:
        await teams.say("rowan", "hello")  # Rowan has a chat with the bot
        rowan = PEOPLE["rowan"]
        [form] = await teams.say("dana", f"add {rowan} to calendar sync")
        sent = await teams.click("dana", "submit_request", form.action_data("submit_request"))
        assert ref_of(answered(sent)) == "SW-1001"
        assert teams.texts(chat("dana"))[-1] == (
            "Thanks! Your request is **SW-1001**. I'm setting it up now."
        )
        await teams.settle()
        assert teams.texts(chat("rowan"))[-1] == (
            "SW-1001 is done: calendar sync is set up for Rowan Ibarra"
        )

        before = teams.mark()
        reply = await teams.answer("dana", f"remove {rowan} from calendar sync")
        await teams.settle()
        assert teams.texts(chat("rowan"), since=before) == [
            'SW-1002 was approved by Dana Whitfield ("filed by IT; no approval needed"); '
            "turning it off now",
            "SW-1002 is done: calendar sync is turned off for Rowan Ibarra",
        ]
        assert reply.text.startswith("Thanks! Your removal is **SW-1002**.")
        assert "setting it up" not in reply.text, reply.text
        assert "turning it off now" in reply.text, reply.text


# -- item 7: a failed provisioning is told, and told again -------------------------------------


def assert_plain(text: str, teams: TeamsSurface) -> None:
    """A person's message names no internals: no step, service address, tenant, code or role."""
    internals = [
        "http",
        teams.tenant.tenant_id,
        "Exchange",
        EXCHANGE_ROLE,
        "403",
        "Forbidden",
        "InvokeCommand",
        "step",
        *(step.value for step in StepName),
    ]
    for internal in internals:
        assert internal not in text, (internal, text)


def not_finished(ref: str, key: str) -> str:
    return (
        f"{ref}: setting up calendar sync for {display_name(key)} could not be finished yet. "
        "IT has been told and will try again or get in touch; there is nothing you need to do."
    )


def failure_card(teams: TeamsSurface, ref: str, *, since: int) -> Post:
    """The one card with Retry and Cancel that IT's channel got about ``ref``."""
    [card] = [
        post
        for post in teams.posts(IT_CHANNEL, since=since)
        if post.card is not None and post.card.get("actions") and ref in post.headline
    ]
    assert card.card is not None
    assert [action["verb"] for action in card.card["actions"]] == ["retry", "cancel"]
    return card


async def test_a_failed_provisioning_is_told_plainly_and_again_when_it_retries_or_cancels(
    teams: TeamsSurface,
) -> None:
    sasha = chat("sasha")
    ref = await ask_on_the_card(teams, "sasha")
    refuse_group_changes(teams)
    before = teams.mark()
    await approve(teams, ref)
    await teams.settle()
    told = teams.texts(sasha, since=before)
    assert told == [
        f"{ref} was approved by Casey Lindqvist; setting it up now",
        not_finished(ref, "sasha"),
    ]
    assert_plain(told[-1], teams)
    # IT reads which part failed, and what to grant, on its card.
    failed = failure_card(teams, ref, since=before)
    assert failed.headline.startswith(
        f"{ref} · Sasha Verhoeven · failed while adding them to the sync group: "
    ), "who it is about, as in every IT line"
    assert EXCHANGE_ROLE in failed.headline
    assert "Microsoft Graph application permission" not in failed.headline

    before = teams.mark()
    retried = answered(
        await teams.click("dana", "retry", failed.action_data("retry"), channel=IT_CHANNEL)
    )
    assert retried.headline == f"{ref} is now provisioning"
    await teams.settle()  # still refused: it fails again, and Sasha hears both
    assert teams.texts(sasha, since=before) == [
        f"{ref}: IT is trying again to finish it; I'll tell you when it is done.",
        not_finished(ref, "sasha"),
    ]

    again = failure_card(teams, ref, since=before)
    before = teams.mark()
    cancelled = answered(
        await teams.click("dana", "cancel", again.action_data("cancel"), channel=IT_CHANNEL)
    )
    assert cancelled.headline == f"{ref} is now cancelled"
    await teams.settle()
    told = teams.texts(sasha, since=before)
    assert told == [f"{ref} was cancelled by Dana Whitfield"]
    assert_plain(told[-1], teams)


async def test_a_failed_enrollment_that_it_cancels_leaves_the_person_not_enrolled(
    teams: TeamsSurface,
) -> None:
    """Sasha is told her request was cancelled, so she is not enrolled: nothing says she syncs
    and she may ask again, though the step before the failed one had already mapped her
    profile. (That mapping is not undone yet: asking again reuses it.)"""
    ref = await ask_on_the_card(teams, "sasha")
    refuse_group_changes(teams)
    before = teams.mark()
    await approve(teams, ref)
    await teams.settle()
    failed = failure_card(teams, ref, since=before)
    await teams.click("dana", "cancel", failed.action_data("cancel"), channel=IT_CHANNEL)
    await teams.settle()
    assert teams.texts(chat("sasha"))[-1] == f"{ref} was cancelled by Dana Whitfield"

    status = await teams.answer("sasha", "status")
    asked_again = await teams.answer("sasha", "add me to calendar sync")
    users = await teams.answer("dana", "users")
    assert status.text.startswith("You are not enrolled in calendar sync."), status.text
    assert asked_again.card is not None, asked_again.text
    assert asked_again.headline == "Ask for calendar sync"
    assert users.headline == "Calendar sync users (0)", users.headline


async def test_a_failed_request_made_for_someone_is_told_to_both_and_finished_after_a_retry(
    teams: TeamsSurface,
) -> None:
    """IT asks for Blake; when provisioning fails both the requester and Blake hear it plainly,
    and when IT has fixed the cause and retried, both hear that it is done."""
    await teams.say("blake", "hello")  # Blake has a chat with the bot
    [form] = await teams.say("dana", f"add {PEOPLE['blake']} to calendar sync")
    sent = answered(await teams.click("dana", "submit_request", form.action_data("submit_request")))
    ref = ref_of(sent)
    await teams.settle()
    refuse_group_changes(teams)
    before = teams.mark()
    await approve(teams, ref)
    await teams.settle()
    for key in ("dana", "blake"):
        told = teams.texts(chat(key), since=before)
        assert told[-1] == not_finished(ref, "blake"), (key, told)
        assert_plain(told[-1], teams)

    allow_group_changes(teams)
    failed = failure_card(teams, ref, since=before)
    before = teams.mark()
    await teams.click("dana", "retry", failed.action_data("retry"), channel=IT_CHANNEL)
    await teams.settle()
    retrying = f"{ref}: IT is trying again to finish it; I'll tell you when it is done."
    done = f"{ref} is done: calendar sync is set up for Blake Okonkwo-Reyes"
    assert teams.texts(chat("dana"), since=before) == [retrying, done]
    blakes = teams.texts(chat("blake"), since=before)
    assert len(blakes) == 3, blakes
    assert blakes[0] == retrying and blakes[2] == done
    assert blakes[1].startswith("**Your calendar sync is ready, Blake.**")
    assert teams.tenant.seed.user_ids[PEOPLE["blake"]] in teams.tenant.group_member_ids(
        teams.tenant.seed.group_ids["Calendar Sync"]
    )
