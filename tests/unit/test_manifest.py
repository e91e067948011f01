"""The Teams app package: a manifest Microsoft's schema accepts, and icons Teams accepts."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from syncwarden.core.settings import Mode, Settings
from syncwarden.manifest_build import (
    MANIFEST_DIR,
    ManifestError,
    build_package,
    icon_problems,
    manifest_problems,
    render_manifest,
)

BOT_ID = "dc7dbee2-09c5-45e0-8202-38df45e07303"


def settings(**bot: object) -> Settings:
    """Sandbox mode, where the example.edu links are fine (production is the default)."""
    return Settings.model_validate({"mode": Mode.SANDBOX, "bot": {"app_id": BOT_ID, **bot}})


def test_the_package_holds_a_valid_manifest_and_both_icons(tmp_path: Path) -> None:
    built = build_package(
        settings(public_host="syncwarden.example.edu"), tmp_path / "appPackage.zip"
    )
    with zipfile.ZipFile(built.path) as package:
        assert sorted(package.namelist()) == ["color.png", "manifest.json", "outline.png"]
        manifest = json.loads(package.read("manifest.json"))
    assert manifest_problems(manifest) == []
    assert manifest["id"] == manifest["bots"][0]["botId"] == BOT_ID
    assert manifest["manifestVersion"] == "1.24"
    assert manifest["validDomains"] == ["syncwarden.example.edu"]
    scopes = [tuple(lst["scopes"]) for lst in manifest["bots"][0]["commandLists"]]
    assert scopes == [("personal",), ("team",), ("groupChat",)]
    personal = [c["title"] for c in manifest["bots"][0]["commandLists"][0]["commands"]]
    assert "add me to calendar sync" in personal and "help" in personal


def test_a_missing_or_bad_app_id_is_explained(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="SYNCWARDEN_BOT__APP_ID"):
        build_package(Settings(), tmp_path / "a.zip")
    with pytest.raises(ManifestError):
        render_manifest(settings(app_id="not-a-guid"))
    assert not (tmp_path / "a.zip").exists()


def test_production_needs_real_links() -> None:
    production = Settings.model_validate({"mode": Mode.PRODUCTION, "bot": {"app_id": BOT_ID}})
    with pytest.raises(ManifestError) as raised:
        render_manifest(production)
    assert len(raised.value.problems) == 3


def test_schema_problems_are_reported_with_their_place() -> None:
    manifest = render_manifest(
        settings(developer_name="A developer name far longer than thirty-two characters")
    )
    problems = manifest_problems(manifest)
    assert any(p.startswith("manifest developer/name:") for p in problems)


def test_quotes_in_settings_cannot_break_the_manifest() -> None:
    manifest = render_manifest(settings(developer_name='IT "Ops"'))
    assert manifest["developer"]["name"] == 'IT "Ops"'


def test_shipped_icons_pass() -> None:
    assert icon_problems(MANIFEST_DIR / "color.png", MANIFEST_DIR / "outline.png") == []


def test_icon_rules(tmp_path: Path) -> None:
    Image.new("RGBA", (100, 100), (13, 115, 119, 255)).save(tmp_path / "color.png")
    Image.new("RGBA", (32, 32), (255, 0, 0, 255)).save(tmp_path / "outline.png")
    problems = icon_problems(tmp_path / "color.png", tmp_path / "outline.png")
    assert problems == [
        "color.png must be a 192x192 PNG, not PNG 100x100",
        "outline.png must have a transparent background",
        "outline.png may only use white (with any transparency)",
    ]
    shutil.copy(MANIFEST_DIR / "color.png", tmp_path / "ok.png")
    with pytest.raises(ManifestError, match="192x192"):
        build_package(settings(), tmp_path / "x.zip", icons=tmp_path)
