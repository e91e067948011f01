"""The README and .env.example keep up with the code: every setting and command is documented."""

from __future__ import annotations

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


def test_every_cli_command_is_in_the_readme() -> None:
    def walk(command: object, path: str) -> list[str]:
        children = getattr(command, "commands", None)
        if not children:
            return [path]
        return [p for name, child in children.items() for p in walk(child, f"{path} {name}")]

    commands = walk(get_command(app), "syncwarden")
    assert "syncwarden config check" in commands
    missing = [command for command in commands if f"`{command}" not in README]
    assert not missing, f"commands missing from the README: {missing}"
