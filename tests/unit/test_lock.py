"""``requirements.lock`` pins every dependency ``pyproject.toml`` declares, within its bounds.

``make`` installs with the lock as constraints, and a constraint file does not stop a package
it does not name from being installed at whatever version is newest; a dependency added to
``pyproject.toml`` without ``make lock`` would go untested into a fresh machine's install.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]


def pins(text: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            found[canonicalize_name(name)] = version.strip()
    return found


def declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        specs.extend(extra)
    return [Requirement(spec) for spec in specs]


def test_every_declared_dependency_is_pinned_within_its_bounds() -> None:
    locked = pins((ROOT / "requirements.lock").read_text())
    unpinned = [str(r) for r in declared() if canonicalize_name(r.name) not in locked]
    assert not unpinned, f"not in requirements.lock (run make lock): {unpinned}"
    outside = [
        f"{r} (locked {locked[canonicalize_name(r.name)]})"
        for r in declared()
        if not r.specifier.contains(locked[canonicalize_name(r.name)], prereleases=True)
    ]
    assert not outside, f"locked outside pyproject.toml's bounds (run make lock): {outside}"


def test_the_lock_names_no_machine_specific_index() -> None:
    """pip-compile copies the index and find-links options it ran with into the file; a path on
    the machine that made the lock means nothing on another."""
    text = (ROOT / "requirements.lock").read_text()
    assert "--index-url" not in text and "--find-links" not in text and "file:///" not in text


def test_pins_are_read_from_the_lock_format() -> None:
    assert pins("aiohttp==3.14.5\n    # via x\nSQLAlchemy==2.1.0  # c\n") == {
        "aiohttp": "3.14.5",
        "sqlalchemy": "2.1.0",
    }
