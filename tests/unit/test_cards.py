"""Every card passes Microsoft's Adaptive Cards parser and validator, and carries what it must."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from syncwarden.bot.cards import MAX_REFRESH_USERS, Verb, approval_card, approver_card
from tests.support.card_catalog import NOW, catalog
from tests.support.tickets import sample_ticket

ROOT = Path(__file__).resolve().parents[2]
VALIDATOR = ROOT / "tests" / "js" / "validate_cards.js"


def renderer_report(cards: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    node = shutil.which("node")
    assert node, "Node.js is needed for the card check (make test installs the npm packages)"
    assert (ROOT / "node_modules" / "adaptivecards").is_dir(), (
        "run `make test` to install adaptivecards"
    )
    payload = json.dumps([{"name": name, "card": card} for name, card in cards.items()])
    result = subprocess.run(  # noqa: S603 - our own script
        [node, str(VALIDATOR)],
        input=payload,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=True,
    )
    report: dict[str, list[str]] = json.loads(result.stdout)
    return report


def test_every_card_passes_the_official_renderer() -> None:
    report = renderer_report(catalog())
    assert len(report) == len(catalog())
    assert {name: problems for name, problems in report.items() if problems} == {}


def test_the_renderer_check_can_fail() -> None:
    broken = {
        "type": "AdaptiveCard",
        "version": "1.5",
        "body": [{"type": "Nope"}, {"type": "Input.ChoiceSet", "id": "x", "choices": []}],
    }
    report = renderer_report({"broken": broken})
    assert len(report["broken"]) == 2


def actions(card: dict[str, Any]) -> list[dict[str, Any]]:
    return list(card.get("actions", []))


def test_approver_buttons_carry_ticket_and_version_with_submit_fallback() -> None:
    waiting = catalog()["approval: approver's view"]
    approve, reject = actions(waiting)
    assert (approve["type"], approve["verb"], reject["verb"]) == (
        "Action.Execute",
        Verb.APPROVE,
        Verb.REJECT,
    )
    assert approve["data"] == {"verb": Verb.APPROVE, "ticket": "SW-1042", "version": 1}
    assert approve["fallback"]["type"] == "Action.Submit"
    assert approve["fallback"]["data"] == approve["data"]


def test_everyone_sees_status_and_approvers_get_a_refresh() -> None:
    card = catalog()["approval: waiting, seen by all"]
    assert actions(card) == []
    assert card["refresh"]["userIds"] == ["29:casey", "29:emerson"]
    assert card["refresh"]["action"]["verb"] == Verb.REFRESH
    many = approval_card(
        sample_ticket().__class__(**{**sample_ticket().__dict__, "status": "awaiting_approval"}),
        now=NOW,
        approver_ids=[f"29:{n}" for n in range(100)],
    )
    assert len(many["refresh"]["userIds"]) == MAX_REFRESH_USERS


def test_decided_cards_have_no_buttons_and_say_who_decided() -> None:
    done = approver_card(sample_ticket(), now=NOW)
    assert actions(done) == [] and "refresh" not in done
    text = json.dumps(done)
    assert "Approved** by Casey" in text


def test_failed_status_offers_retry_and_cancel() -> None:
    assert [a["verb"] for a in actions(catalog()["status: failed with retry"])] == [
        Verb.RETRY,
        Verb.CANCEL,
    ]
    assert actions(catalog()["status: completed"]) == []


@pytest.mark.parametrize("name", sorted(catalog()))
def test_cards_are_small_enough_for_teams(name: str) -> None:
    assert len(json.dumps(catalog()[name])) < 28_000  # Teams refuses messages over about 28 KB


def test_the_users_table_shows_what_each_sync_did_and_why_one_failed() -> None:
    text = json.dumps(catalog()["users: two people"])
    assert "ok: 2 created, 0 updated, 0 deleted, 0 re-created, 5 busy blocks" in text
    assert "problem (not_in_scope): Exchange refuses the mailbox" in text


def test_a_list_page_with_more_has_a_next_button_carrying_its_filter_and_cursor() -> None:
    users = catalog()["users: failing, a page with more"]
    [following] = actions(users)
    assert following["data"] == {
        "verb": Verb.USERS_PAGE,
        "filters": 'failing error:permission name:"Ann Lee"',
        "after": "1024.person 24",
        "first": 51,
    }
    assert following["fallback"]["data"] == following["data"]
    assert users["body"][0]["text"] == (
        'Calendar sync users · failing error:permission name:"Ann Lee": rows 26 to 50'
    )
    [tickets] = actions(catalog()["tickets: failed, a page with more"])
    assert tickets["data"] == {
        "verb": Verb.TICKETS_PAGE,
        "filters": "failed name:ann",
        "after": "42",
        "first": 26,
    }


def test_a_whole_list_says_how_many_and_has_no_next_button() -> None:
    whole = catalog()["tickets: open, the whole list"]
    assert actions(whole) == [] and whole["body"][0]["text"] == "Open tickets (3)"
    assert actions(catalog()["users: two people"]) == []
    assert catalog()["users: nobody matches"]["body"][0]["text"] == (
        "Calendar sync users · paused (0)"
    )
