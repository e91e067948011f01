"""Every command the bot understands, declared once: what to type, who may, where, and one line.

The dialogue's dispatch and its admin check, the help each person gets (staff see theirs, IT
admins theirs too), and the Teams manifest's command menus are all made from this table, and a
test keeps the README's table in step, so a command cannot be added in one place and forgotten
in the others. (What a message *means* is :mod:`bot.intents`'s job; this says what each meaning is
called and who may ask for it.)
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from syncwarden.bot.intents import Intent


class Audience(StrEnum):
    EVERYONE = "everyone"
    IT_ADMINS = "it_admins"


class Scope(StrEnum):
    """Where a command is offered in Teams' command menu (the manifest's ``scopes``)."""

    PERSONAL = "personal"
    TEAM = "team"
    GROUP_CHAT = "groupChat"


ALL_SCOPES = (Scope.PERSONAL, Scope.TEAM, Scope.GROUP_CHAT)
# The Teams app manifest allows at most 10 commands per command list (schema: commandLists).
MAX_MENU_COMMANDS = 10


@dataclass(frozen=True)
class Command:
    intent: Intent
    # What to type, as help and the command menu show it (at most 32 characters: the manifest).
    title: str
    # One line: what it does (at most 128 characters: the manifest).
    help: str
    audience: Audience = Audience.EVERYONE
    # Where Teams' command menu offers it (it is understood everywhere).
    menu: tuple[Scope, ...] = ()
    # A full example, when the title alone needs an argument.
    example: str = ""


COMMANDS: tuple[Command, ...] = (
    Command(
        Intent.ENROLL,
        "add me to calendar sync",
        "Ask for your appointments to appear in Outlook",
        menu=(Scope.PERSONAL,),
    ),
    Command(
        Intent.REMOVE,
        "remove me from calendar sync",
        "Stop syncing your calendar",
        menu=(Scope.PERSONAL,),
    ),
    Command(
        Intent.CHANGE,
        "change my sync address to",
        "Sync into another address of your mailbox",
        menu=(Scope.PERSONAL,),
        example="change my sync address to you@example.edu",
    ),
    Command(
        Intent.STATUS,
        "status",
        "Where your request or your sync stands",
        menu=(Scope.PERSONAL, Scope.GROUP_CHAT),
    ),
    Command(
        Intent.TICKET,
        "ticket",
        "Show a ticket that concerns you",
        menu=(Scope.PERSONAL, Scope.TEAM),
        example="ticket SW-1042",
    ),
    Command(Intent.HELP, "help", "What you can say", menu=ALL_SCOPES),
    Command(
        Intent.TICKETS,
        "tickets",
        "Open tickets, a page at a time; or all, failed, completed, …, error:<kind>, name:<start>",
        Audience.IT_ADMINS,
        menu=(Scope.PERSONAL, Scope.TEAM),
    ),
    Command(
        Intent.RETRY,
        "retry",
        "Resume a failed ticket from the step that failed",
        Audience.IT_ADMINS,
        menu=(Scope.PERSONAL, Scope.TEAM),
        example="retry SW-1042",
    ),
    Command(
        Intent.USERS,
        "users",
        "Everyone enrolled, a page at a time; or failing, paused, ok, error:<kind>, name:<start>",
        Audience.IT_ADMINS,
        menu=(Scope.PERSONAL,),
    ),
    Command(
        Intent.PAUSE,
        "pause",
        "Stop one person's sync",
        Audience.IT_ADMINS,
        example="pause someone@example.edu",
    ),
    Command(
        Intent.RESUME,
        "resume",
        "Restart one person's sync",
        Audience.IT_ADMINS,
        example="resume someone@example.edu",
    ),
    Command(
        Intent.SYNC_NOW,
        "sync now",
        "Sync one person (or all) within seconds",
        Audience.IT_ADMINS,
        menu=(Scope.PERSONAL,),
        example="sync now someone@example.edu",
    ),
    Command(
        Intent.SECRETS,
        "secrets",
        "Check app secrets and certificates now",
        Audience.IT_ADMINS,
    ),
    Command(
        Intent.REVIEW_START,
        "start access review",
        "Ask the reviewers now whether each enrolled person still needs calendar sync",
        Audience.IT_ADMINS,
    ),
    Command(
        Intent.RECONCILE,
        "reconcile",
        "Compare the sync group, enrollments and directory now; fix or ignore each difference",
        Audience.IT_ADMINS,
    ),
    Command(
        Intent.DOCTOR,
        "doctor",
        "Check Syncwarden's set-up and name the first thing to fix",
        Audience.IT_ADMINS,
        menu=(Scope.TEAM,),
    ),
    Command(
        Intent.USE_CHANNEL,
        "use this channel for alerts",
        "Send status lines, failures and alerts to this channel",
        Audience.IT_ADMINS,
        menu=(Scope.TEAM,),
    ),
    Command(
        Intent.USE_CHANNEL_FOR_APPROVALS,
        "use this channel for approvals",
        "Post approval cards in this channel too",
        Audience.IT_ADMINS,
        menu=(Scope.TEAM,),
    ),
)

BY_INTENT: dict[Intent, Command] = {command.intent: command for command in COMMANDS}
ADMIN_INTENTS = frozenset(c.intent for c in COMMANDS if c.audience is Audience.IT_ADMINS)


def is_it_only(intent: Intent) -> bool:
    command = BY_INTENT.get(intent)
    return command is not None and command.audience is Audience.IT_ADMINS


def _line(command: Command) -> str:
    said = command.example or command.title
    return f"- **{said}**: {command.help}"


def help_text(*, it_admin: bool) -> str:
    """The help a person gets: everyone's commands, and IT's too for an IT admin."""
    lines = [
        "Hi, I'm Syncwarden. I look after access to calendar sync.",
        "",
        "You can say:",
        *(_line(c) for c in COMMANDS if c.audience is Audience.EVERYONE),
    ]
    if it_admin:
        lines += [
            "",
            "As an IT admin you can also say (mention a person, or give their address):",
            "- **add @Person to calendar sync**: ask on someone's behalf",
            *(_line(c) for c in COMMANDS if c.audience is Audience.IT_ADMINS),
        ]
    return "\n".join(lines)


def manifest_command_lists() -> list[dict[str, Any]]:
    """The manifest's ``bots[0].commandLists``: each scope's menu, in the table's order."""
    lists = []
    for scope in ALL_SCOPES:
        commands = [
            {
                "title": c.title,
                "description": c.help if c.audience is Audience.EVERYONE else f"IT: {c.help}",
            }
            for c in COMMANDS
            if scope in c.menu
        ]
        if len(commands) > MAX_MENU_COMMANDS:
            raise ValueError(f"the {scope.value} menu has {len(commands)} commands; Teams takes 10")
        lists.append({"scopes": [scope.value], "commands": commands})
    return lists
