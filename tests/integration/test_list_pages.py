"""IT pages through ``users`` and ``tickets`` in Teams: the Next button on the card, over
``POST /api/messages``, on SQLite and PostgreSQL (issue 15, item 4).

The button carries the list's filter and where the page ended; the server reads both as
untrusted input (a card can be forwarded, kept for months, or forged) and asks again whether
the person who clicked is an IT admin.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from syncwarden.core.db import session_factory
from syncwarden.sandbox.server import SandboxTenant
from syncwarden.workflows.model import TicketStatus
from tests.support.enrollments import enroll
from tests.support.lists import seed_enrollments, seed_tickets
from tests.support.teams_surface import Post, TeamsSurface, answered, teams_surface
from tests.support.workflow import PEOPLE

ADMIN_ONLY = "Sorry, only IT admins can do that. Ask me **help** to see what you can do."
UNREADABLE = "I can't read that Next button (it may come from an older card)."


@pytest.fixture
async def teams(migrated_engine: AsyncEngine, tenant: SandboxTenant) -> AsyncIterator[TeamsSurface]:
    async with teams_surface(migrated_engine, tenant) as surface:
        yield surface


@pytest.fixture
def sessions(migrated_engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return session_factory(migrated_engine)


def table_column(post: Post, column: int) -> list[str]:
    """One column of the card's table, without its header."""
    assert post.card is not None, post.text
    [table] = [element for element in post.card["body"] if element.get("type") == "Table"]
    return [row["cells"][column]["items"][0]["text"] for row in table["rows"][1:]]


def next_button(post: Post, verb: str) -> dict[str, Any] | None:
    """The data of the card's Next button (``verb``), or None on the last page."""
    actions = (post.card or {}).get("actions", [])
    found = [action for action in actions if action.get("verb") == verb]
    return post.action_data(verb) if found else None


async def every_page(teams: TeamsSurface, words: str, verb: str) -> list[Post]:
    """What IT sees saying ``words`` and then pressing Next until there is no Next."""
    pages = [await teams.answer("dana", words)]
    while (data := next_button(pages[-1], verb)) is not None:
        pages.append(answered(await teams.click("dana", verb, data)))
        assert len(pages) < 20
    return pages


async def test_it_pages_through_everyone_with_the_next_button(
    teams: TeamsSurface, sessions: async_sessionmaker[AsyncSession]
) -> None:
    people = await seed_enrollments(sessions, range(60))
    pages = await every_page(teams, "users", "users_page")
    assert [page.headline for page in pages] == [
        "Calendar sync users: rows 1 to 25",
        "Calendar sync users: rows 26 to 50",
        "Calendar sync users: rows 51 to 60",
    ]
    shown = [name for page in pages for name in table_column(page, 0)]
    assert sorted(shown) == sorted(p.name for p in people) and len(set(shown)) == 60


async def test_a_filtered_list_keeps_its_filter_from_page_to_page(
    teams: TeamsSurface, sessions: async_sessionmaker[AsyncSession]
) -> None:
    people = await seed_enrollments(sessions, range(300))
    failing = sorted(p.name for p in people if p.error is not None)
    assert len(failing) == 60
    pages = await every_page(teams, "users failing", "users_page")
    assert [page.headline for page in pages][-1] == "Calendar sync users · failing: rows 51 to 60"
    assert sorted(name for page in pages for name in table_column(page, 0)) == failing
    assert all(status.startswith("problem") for page in pages for status in table_column(page, 4))

    [whole] = await every_page(teams, "users error:throttled name:ann", "users_page")
    expected = [p for p in people if p.error_kind == "throttled" and p.name.startswith("Ann ")]
    assert whole.headline == f"Calendar sync users · error:throttled name:ann ({len(expected)})"
    assert sorted(table_column(whole, 0)) == sorted(p.name for p in expected)


async def test_ticket_pages_go_newest_first_and_keep_their_status(
    teams: TeamsSurface, sessions: async_sessionmaker[AsyncSession]
) -> None:
    tickets = sorted(await seed_tickets(sessions, range(400)), key=lambda t: -t.id)
    failed = [f"SW-{1000 + t.id}" for t in tickets if t.status == "failed"]
    pages = await every_page(teams, "tickets failed", "tickets_page")
    assert [page.headline for page in pages] == [f"Failed tickets ({len(failed)})"]
    assert table_column(pages[0], 0) == failed

    pages = await every_page(teams, "tickets all", "tickets_page")
    assert len(pages) == 16 and pages[1].headline == "All tickets: rows 26 to 50"
    newest_first = [f"SW-{1000 + t.id}" for t in tickets]
    assert [ref for page in pages for ref in table_column(page, 0)] == newest_first

    nothing = await teams.answer("dana", "tickets rejected name:xavier")
    assert nothing.text == "No rejected tickets for xavier."
    nothing = await teams.answer("dana", "tickets all name:xavier")
    assert nothing.text == "No tickets for xavier."
    nothing = await teams.answer("dana", "tickets manual name:xavier")
    assert nothing.text == "No waiting manual tickets for xavier."


async def test_a_next_click_is_authorised_by_who_clicked_not_by_the_card(
    teams: TeamsSurface, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """A card IT forwarded, or one copied from IT's chat, shows nothing to anyone else."""
    people = await seed_enrollments(sessions, range(30))
    await seed_tickets(sessions, range(30))
    for words, verb in (("users", "users_page"), ("tickets all", "tickets_page")):
        first = await teams.answer("dana", words)
        data = next_button(first, verb)
        assert data is not None
        for key in ("sasha", "casey"):  # staff, and an approver who is not IT
            refused = await teams.click(key, verb, data)
            assert refused["value"] == ADMIN_ONLY, key
            assert people[-1].name not in json.dumps(refused)


_MISSING = object()
VALID = {
    "users_page": {"filters": "", "after": "5.ann", "first": 26},
    "tickets_page": {"filters": "", "after": "5", "first": 26},
}
BAD = {
    "no filter": ("filters", _MISSING),
    "a filter that is an object": ("filters", {"state": "ok"}),
    "no cursor": ("after", _MISSING),
    "a cursor that is a list": ("after", ["5", "ann"]),
    "a cursor that is not ours": ("after", "abc"),
    "an id past the table's": ("after", "99999999999"),
    "no row number": ("first", _MISSING),
    "row number 1 on a next page": ("first", 1),
    "a row number past any list": ("first", 10**9),
    "a row number that is text": ("first", "twenty"),
    "a row number that is true": ("first", True),
}
BAD_FOR = {
    "users_page": {
        "a key no name has": ("after", "5.ANN"),
        "two states": ("filters", "failing paused"),
    },
    "tickets_page": {
        "a users cursor": ("after", "5.ann"),
        "two statuses": ("filters", "failed open"),
    },
}
CASES = [
    (verb, case, change)
    for verb in VALID
    for case, change in sorted({**BAD, **BAD_FOR[verb]}.items())
]


@pytest.mark.parametrize(
    ("verb", "change"),
    [(verb, change) for verb, _, change in CASES],
    ids=[f"{verb}: {case}" for verb, case, _ in CASES],
)
async def test_a_next_button_that_is_not_one_of_ours_is_answered_plainly(
    teams: TeamsSurface,
    sessions: async_sessionmaker[AsyncSession],
    verb: str,
    change: tuple[str, Any],
) -> None:
    await seed_enrollments(sessions, range(30))
    await seed_tickets(sessions, range(30))
    assert answered(await teams.click("dana", verb, VALID[verb])).card, "the valid click works"
    key, value = change
    data = {k: v for k, v in VALID[verb].items() if k != key}
    if value is not _MISSING:
        data[key] = value
    answer = await teams.click("dana", verb, data)
    assert answer["type"] == "application/vnd.microsoft.activity.message", answer
    command = verb.removesuffix("_page")
    assert answer["value"] == (f"{UNREADABLE} Say **{command}** to start the list again.")


async def test_a_next_click_on_a_list_that_shrank_says_so(
    teams: TeamsSurface, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """The cursor is where the last page ended; rows gone since leave an empty page behind
    it, which the card says rather than showing the first page again."""
    await seed_enrollments(sessions, range(30))
    data = next_button(await teams.answer("dana", "users"), "users_page")
    assert data is not None
    late = answered(await teams.click("dana", "users_page", {**data, "after": "5.zzz"}))
    assert late.headline == "Calendar sync users"
    assert "No more people on the list." in json.dumps(late.card)
    assert "actions" not in (late.card or {})


EXCHANGE = "https://outlook.office365.com"
EXCHANGE_ROLE = "Exchange.ManageAsApp"


def ticket_ref(reply: Post) -> str:
    """The ticket number an answer to a request names ("Your removal is **SW-1001**")."""
    found = re.search(r"\*\*(SW-\d+)\*\*", reply.text)
    assert found is not None, reply.text
    return found.group(1)


async def test_it_lists_failed_tickets_by_the_kind_of_their_failure(
    migrated_engine: AsyncEngine, tenant: SandboxTenant
) -> None:
    """One ticket fails because Syncwarden's app lost its Exchange role, one because its
    secret was then removed (no token at all); each ``error:`` filter lists its own, and the
    Next button keeps the filter."""
    async with teams_surface(
        migrated_engine,
        tenant,
        approvals={"auto_approve_it_on_behalf": True},
        provisioning={"remove_synced_events": True},
    ) as teams:
        sessions = session_factory(migrated_engine)
        for key in ("harper", "sasha"):
            await teams.say(key, "hello")  # they have a chat with the bot, to be told
        # Exchange stops taking Syncwarden's group changes: Sasha's enrollment fails.
        app_id = tenant.seed.app_ids["Syncwarden"]
        tenant.revoke_role(app_id, EXCHANGE, EXCHANGE_ROLE)
        teams.m365.tokens.invalidate(teams.m365.endpoints.exchange_scope)
        [form] = await teams.say("dana", f"add {PEOPLE['sasha']} to calendar sync")
        sent = await teams.click("dana", "submit_request", form.action_data("submit_request"))
        sasha = answered(sent).headline.rsplit("· ", 1)[-1]
        await teams.settle()
        # Then the app's secret is removed once Harper's removal is asked for: its steps get no
        # token to clean her calendar.
        await enroll(sessions, tenant, PEOPLE["harper"], "prof-harper")
        harper = ticket_ref(
            await teams.answer("dana", f"remove {PEOPLE['harper']} from calendar sync")
        )
        application = tenant.state.application_for(app_id)
        assert application is not None
        application.passwords.clear()
        teams.m365.tokens.invalidate(teams.m365.endpoints.graph_scope)
        await teams.settle()
        failed = await teams.answer("dana", "tickets failed")
        assert sorted(table_column(failed, 0)) == sorted([harper, sasha])

        credential = await teams.answer("dana", "tickets error:credential")
        assert credential.headline == "Open tickets · error:credential (1)"
        assert table_column(credential, 0) == [harper]
        permission = await teams.answer("dana", "tickets failed kind:permission")
        assert permission.headline == "Failed tickets · error:permission (1)"
        assert table_column(permission, 0) == [sasha]
        nothing = await teams.answer("dana", "tickets error:throttled")
        assert nothing.text == "No open tickets with error:throttled."
        bogus = await teams.answer("dana", "tickets error:bogus")
        assert bogus.text.startswith("There is no error kind 'bogus'. The kinds are: "), bogus
        assert "permission" in bogus.text and "no_mailbox" in bogus.text

        seeded = await seed_tickets(sessions, range(2000))
        pages = await every_page(teams, "tickets error:permission", "tickets_page")
        expected = [
            f"SW-{1000 + t.id}"
            for t in sorted(seeded, key=lambda t: -t.id)
            if t.failure_kind == "permission" and TicketStatus(t.status).is_open
        ]
        assert len(pages) > 1 and len(expected) > 25
        assert [ref for page in pages for ref in table_column(page, 0)] == [*expected, sasha]
        assert all(" · error:permission" in page.headline for page in pages)
