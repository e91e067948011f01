"""The design's dependency rules (docs/architecture.md), enforced on the source tree.

Each rule names which of our rooms a room may import. The checker reads every module with ``ast``
(no imports are executed) and reports each offending import with file and line, so a failure says
exactly what to move.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "syncwarden"
# Rooms are the subpackages of ``syncwarden``; its own modules are the composition root, here
# called "syncwarden".
ROOMS = (
    "syncwarden",
    "bot",
    "scim",
    "workflows",
    "sync",
    "connectors",
    "core",
    "sandbox",
    "migrations",
)
SUBPACKAGES = tuple(room for room in ROOMS if room != PACKAGE)
SDK_PREFIX = "microsoft_agents"
# Connector modules that define interfaces (protocols and their error types) rather than clients.
INTERFACE_MODULES = ("ports", "errors")


@dataclass(frozen=True)
class Violation:
    path: str
    line: int
    imported: str
    rule: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line} imports {self.imported}: {self.rule}"


def imported_modules(source: str) -> list[tuple[int, str]]:
    """Absolute module names imported by a module (this project uses no relative imports)."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            found.extend((node.lineno, f"{node.module}.{alias.name}") for alias in node.names)
    return found


def room_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    return parts[1] if len(parts) > 1 and parts[1] in SUBPACKAGES else PACKAGE


def is_connector_interface(module: str) -> bool:
    parts = module.split(".")[1:]
    return (
        parts[:1] == ["connectors"]
        and len(parts) > 1
        and any(p in INTERFACE_MODULES for p in parts[1:])
    )


def rule_violation(room: str, imported: str) -> str | None:
    """Why ``room`` may not import ``imported``, or None when it may."""
    target = room_of(imported)
    if imported.split(".", 1)[0] == SDK_PREFIX and room != "bot":
        return "only bot/ may use the Agents SDK"
    if target is None or target == room:
        return None
    if target == "sandbox":
        return "product code never imports the sandbox tenant (it is a separate program)"
    allowed: dict[str, tuple[str, ...]] = {
        "core": (),
        "connectors": ("core",),
        "workflows": ("core", "connectors"),
        "bot": ("workflows", "connectors", "core"),
        "sync": ("workflows", "connectors", "core"),
        # The SCIM door is an HTTP surface like bot/, beside it: never bot/ or sync/.
        "scim": ("workflows", "connectors", "core"),
        "sandbox": ("core",),
        "migrations": ("core", "syncwarden"),
        "syncwarden": ("bot", "scim", "workflows", "sync", "connectors", "core", "migrations"),
    }
    if target not in allowed[room]:
        return f"{room}/ may import only {', '.join(allowed[room]) or 'nothing of ours'}"
    if room == "workflows" and target == "connectors" and not is_connector_interface(imported):
        return "workflows/ may import only connector interfaces (connectors.*.ports / errors)"
    schema = f"{PACKAGE}.schema"
    if (
        room == "migrations"
        and target == "syncwarden"
        and not (imported == schema or imported.startswith(f"{schema}."))
    ):
        return "migrations/ may import only syncwarden.schema from the composition root"
    return None


def check_source(room: str, path: str, source: str) -> list[Violation]:
    violations = []
    for line, imported in imported_modules(source):
        reason = rule_violation(room, imported)
        if reason:
            violations.append(Violation(path, line, imported, reason))
    return violations


def sdk_importers(room: str, files: list[Path]) -> list[str]:
    return [
        str(path.relative_to(ROOT))
        for path in files
        if any(m.split(".", 1)[0] == SDK_PREFIX for _, m in imported_modules(path.read_text()))
    ]


def room_files(room: str) -> list[Path]:
    if room == PACKAGE:
        return sorted((ROOT / PACKAGE).glob("*.py"))
    return sorted((ROOT / PACKAGE / room).rglob("*.py"))


def test_every_room_follows_the_dependency_rules() -> None:
    violations = [
        violation
        for room in ROOMS
        for path in room_files(room)
        for violation in check_source(room, str(path.relative_to(ROOT)), path.read_text())
    ]
    assert not violations, "Dependency rule broken:\n" + "\n".join(map(str, violations))


# The SDK's edge: the endpoint that hands activities to it, and the clients it builds per turn.
SDK_EDGE = ["syncwarden/bot/teams_endpoint.py", "syncwarden/bot/turn_clients.py"]


def test_only_the_sdk_edge_of_bot_imports_the_agents_sdk() -> None:
    importers = sdk_importers("bot", room_files("bot"))
    assert importers == SDK_EDGE, f"the Agents SDK must stay behind {SDK_EDGE}, found: {importers}"


def test_every_room_exists() -> None:
    missing = [
        room for room in SUBPACKAGES if not (ROOT / PACKAGE / room / "__init__.py").is_file()
    ]
    assert not missing, f"rooms missing from the tree: {missing}"


@pytest.mark.parametrize(
    ("room", "source", "expected"),
    [
        ("core", "import syncwarden.workflows.audit\n", "syncwarden.workflows.audit"),
        ("connectors", "from syncwarden.workflows import service\n", "syncwarden.workflows"),
        (
            "workflows",
            "from syncwarden.connectors.graph.client import GraphClient\n",
            "syncwarden.connectors.graph.client",
        ),
        ("bot", "import syncwarden.sync.engine\n", "syncwarden.sync.engine"),
        ("sync", "from syncwarden.bot import cards\n", "syncwarden.bot"),
        ("syncwarden", "import syncwarden.sandbox.app\n", "syncwarden.sandbox.app"),
        (
            "workflows",
            "from microsoft_agents.hosting.core import TurnContext\n",
            "microsoft_agents.hosting.core",
        ),
    ],
)
def test_checker_names_the_offending_import(room: str, source: str, expected: str) -> None:
    violations = check_source(room, f"{room}/example.py", source)
    assert violations, f"{room} importing {expected} should be refused"
    assert violations[0].imported == expected
    assert str(violations[0]).startswith(f"{room}/example.py:1 imports {expected}")


@pytest.mark.parametrize(
    ("room", "source"),
    [
        ("workflows", "from syncwarden.connectors.ports import GroupMembership\n"),
        ("workflows", "from syncwarden.connectors.scheduling.ports import SchedulingSystem\n"),
        ("bot", "from syncwarden.workflows.service import request_enrollment\n"),
        ("syncwarden", "from syncwarden.bot.teams_endpoint import add_bot_routes\n"),
        ("migrations", "from syncwarden.schema import metadata\n"),
        ("core", "import sqlalchemy\n"),
    ],
)
def test_checker_allows_what_the_design_allows(room: str, source: str) -> None:
    assert check_source(room, f"{room}/example.py", source) == []
