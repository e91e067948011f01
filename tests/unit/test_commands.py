"""The one declaration of the bot's commands drives dispatch, help, the manifest and the README."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from syncwarden.bot.commands import (
    BY_INTENT,
    COMMANDS,
    MAX_MENU_COMMANDS,
    Audience,
    help_text,
    manifest_command_lists,
)
from syncwarden.bot.conversations import ConversationStore
from syncwarden.bot.dialogue import DialogueLogic
from syncwarden.bot.intents import Intent
from syncwarden.core.settings import Settings
from syncwarden.manifest_build import render_manifest

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_every_intent_but_unknown_is_one_declared_command() -> None:
    declared = [command.intent for command in COMMANDS]
    assert len(declared) == len(set(declared)), "each command is declared once"
    assert set(declared) == set(Intent) - {Intent.UNKNOWN}


def test_the_dialogue_has_a_handler_for_every_declared_command() -> None:
    """With every optional part wired (credentials, doctor, sync, drift), nothing says "not
    yet"."""
    anything: Any = object()
    dialogue = DialogueLogic(
        ConversationStore(anything),
        anything,
        anything,
        credentials=anything,
        doctor=anything,
        sync=anything,
        drift=anything,
    )
    assert set(BY_INTENT) <= dialogue.handled_intents


def test_help_is_per_person_and_says_every_command_in_one_line() -> None:
    staff, it = help_text(it_admin=False), help_text(it_admin=True)
    for command in COMMANDS:
        said = command.example or command.title
        assert f"**{said}**: {command.help}" in it
        assert (f"**{said}**" in staff) is (command.audience is Audience.EVERYONE), said
    assert "change my sync address to" in staff, "the issue found change missing from help"


@pytest.mark.parametrize("lists", [manifest_command_lists()])
def test_the_manifest_menus_fit_what_teams_accepts(lists: list[dict[str, Any]]) -> None:
    """Teams app manifest schema (v1.24): at most 10 commands per list, titles up to 32
    characters, descriptions up to 128."""
    for entry in lists:
        assert 0 < len(entry["commands"]) <= MAX_MENU_COMMANDS, entry["scopes"]
        for command in entry["commands"]:
            assert len(command["title"]) <= 32 and len(command["description"]) <= 128


def test_the_built_manifest_carries_the_declared_menus() -> None:
    settings = Settings.model_validate(
        {"mode": "sandbox", "bot": {"app_id": "00000000-0000-0000-0000-000000000001"}}
    )
    manifest = render_manifest(settings)
    assert manifest["bots"][0]["commandLists"] == manifest_command_lists()


def test_the_readme_table_lists_every_command() -> None:
    section = README.split("### What the bot understands", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    first_cells = [re.findall(r"`([^`]+)`", row.split(" | ", 1)[0]) for row in rows]
    typed = [text for cell in first_cells for text in cell]
    for command in COMMANDS:
        assert any(text.startswith(command.title) for text in typed), command.title
