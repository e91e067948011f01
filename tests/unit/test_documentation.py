"""The README and .env.example keep up with the code: every setting and command is documented."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel
from typer.main import get_command

from syncwarden.cli import app
from syncwarden.core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
ENV_EXAMPLE = (ROOT / ".env.example").read_text()


def setting_names(model: type[BaseModel] = Settings, prefix: str = "SYNCWARDEN_") -> list[str]:
    names: list[str] = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names.extend(setting_names(annotation, f"{prefix}{name.upper()}__"))
        else:
            names.append(f"{prefix}{name.upper()}")
    return names


def test_readme_starts_with_the_two_commands() -> None:
    assert README.splitlines()[:2] == ["make run", "make test"]


def test_every_setting_is_in_the_readme_table_and_env_example() -> None:
    names = setting_names()
    assert len(names) > 20
    missing_readme = [name for name in names if f"| `{name}` |" not in README]
    missing_example = [name for name in names if name not in ENV_EXAMPLE]
    assert not missing_readme, f"settings missing from the README table: {missing_readme}"
    assert not missing_example, f"settings missing from .env.example: {missing_example}"


def cli_commands() -> list[str]:
    """Every command the CLI has, without the program name: ``serve``, ``config check``, ..."""

    def walk(command: object, path: str) -> list[str]:
        children = getattr(command, "commands", None)
        if not children:
            return [path.strip()]
        return [p for name, child in children.items() for p in walk(child, f"{path} {name}")]

    return walk(get_command(app), "")


def test_every_cli_command_is_in_the_readme() -> None:
    commands = [f"syncwarden {command}" for command in cli_commands()]
    assert "syncwarden config check" in commands
    missing = [command for command in commands if f"`{command}" not in README]
    assert not missing, f"commands missing from the README: {missing}"


# ``syncwarden`` followed by words, in code (a span or a block) where a command is written.
_CODE = re.compile(r"```.*?```|`[^`\n]+`", re.S)
_INVOCATION = re.compile(r"(?<![\w/.-])syncwarden((?: [a-z][a-z-]*){1,2})")
# Only the tests read these (the README's development section says so).
TEST_ONLY_SETTINGS = frozenset({"SYNCWARDEN_TEST_POSTGRES_URL"})


def mentioned_commands(text: str) -> list[str]:
    """The commands ``syncwarden …`` written in ``text``'s code, as far as they name one."""
    commands = cli_commands()
    groups = {  # every group a command sits in ("scim" and "scim token" of "scim token new")
        " ".join(command.split()[:depth])
        for command in commands
        for depth in range(1, len(command.split()))
    }
    found = []
    for code in _CODE.findall(text):
        for words in _INVOCATION.findall(code):
            parts = words.split()
            # A group is followed by its subcommand; anything else by arguments.
            found.append(" ".join(parts[:2]) if parts[0] in groups else parts[0])
    return found


def test_the_readme_names_only_commands_and_settings_that_exist() -> None:
    """A deployment guide that names a command or a setting that does not exist sends a
    college's IT team into a dead end; every ``syncwarden …`` and ``SYNCWARDEN_…`` it writes
    must be real."""
    commands = cli_commands()
    groups = {  # every group a command sits in ("scim" and "scim token" of "scim token new")
        " ".join(command.split()[:depth])
        for command in commands
        for depth in range(1, len(command.split()))
    }
    mentioned = mentioned_commands(README)
    assert "serve" in mentioned and "manifest build" in mentioned
    unknown = sorted({m for m in mentioned if m not in commands and m not in groups})
    assert not unknown, f"the README names commands that do not exist: {unknown}"
    settings = set(re.findall(r"\bSYNCWARDEN_[A-Z0-9_]*[A-Z0-9]\b", README))
    unknown_settings = sorted(settings - set(setting_names()) - TEST_ONLY_SETTINGS)
    assert not unknown_settings, f"the README names settings that do not exist: {unknown_settings}"


def test_a_misspelt_command_in_code_is_noticed() -> None:
    assert mentioned_commands("run `syncwarden serv --sandbox`, then `syncwarden config chek`") == [
        "serv",
        "config chek",
    ]
    assert mentioned_commands("Syncwarden serves `python -m syncwarden.sandbox`") == []
