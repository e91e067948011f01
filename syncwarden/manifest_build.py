"""Building the Teams app package: manifest.json from the template, the two icons, one zip.

The result is checked before it is written: the manifest against Microsoft's v1.24 JSON schema
(shipped in ``manifest/schema``), and the icons against Teams' rules (colour 192x192, outline
32x32 and only white on transparent). A package Teams would refuse is never produced; every
reason is listed instead.
"""

from __future__ import annotations

import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
from PIL import Image

from syncwarden import manifest
from syncwarden.bot.commands import manifest_command_lists
from syncwarden.core.errors import SyncwardenError
from syncwarden.core.settings import Settings

MANIFEST_DIR = Path(manifest.__file__).resolve().parent
SCHEMA = MANIFEST_DIR / "schema" / "teams-manifest-v1.24.schema.json"
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
COLOR_SIZE = (192, 192)
OUTLINE_SIZE = (32, 32)


class ManifestError(SyncwardenError):
    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


@dataclass(frozen=True)
class BuiltPackage:
    path: Path
    manifest: dict[str, Any]


def render_manifest(
    settings: Settings, template: Path = MANIFEST_DIR / "manifest.template.json"
) -> dict[str, Any]:
    bot = settings.bot
    problems = []
    if not bot.app_id or not _GUID.match(bot.app_id):
        problems.append(
            "bot.app_id must be the bot's Entra app id (a GUID): set SYNCWARDEN_BOT__APP_ID"
        )
    if settings.is_production:
        for name in ("website_url", "privacy_url", "terms_url"):
            if "example.edu" in getattr(bot, name):
                problems.append(
                    f"bot.{name} still points at example.edu: set SYNCWARDEN_BOT__{name.upper()}"
                )
    if problems:
        raise ManifestError(problems)
    domains = [bot.public_host] if bot.public_host else []
    values = {
        "APP_VERSION": bot.app_version,
        "BOT_APP_ID": bot.app_id,
        "DEVELOPER_NAME": bot.developer_name,
        "WEBSITE_URL": bot.website_url,
        "PRIVACY_URL": bot.privacy_url,
        "TERMS_URL": bot.terms_url,
    }
    text = template.read_text()
    for name, value in values.items():
        # Settings are JSON-escaped so a quote in a name cannot break the manifest.
        text = text.replace("${" + name + "}", json.dumps(value)[1:-1])
    text = text.replace("${VALID_DOMAINS}", json.dumps(domains))
    # The command menus come from the one declaration of the bot's commands.
    text = text.replace("${COMMAND_LISTS}", json.dumps(manifest_command_lists()))
    left = sorted(set(re.findall(r"\$\{([A-Z_]+)\}", text)))
    if left:
        raise ManifestError([f"the manifest template has unknown placeholders: {', '.join(left)}"])
    manifest: dict[str, Any] = json.loads(text)
    return manifest


def manifest_problems(manifest: dict[str, Any]) -> list[str]:
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft4Validator(schema)
    return [
        f"manifest {'/'.join(str(p) for p in error.absolute_path) or '(root)'}: {error.message}"
        for error in sorted(validator.iter_errors(manifest), key=lambda e: list(e.absolute_path))
    ]


def icon_problems(color: Path, outline: Path) -> list[str]:
    problems = []
    with Image.open(color) as image:
        problems.extend(_size_problem(color, image, COLOR_SIZE))
    with Image.open(outline) as image:
        problems.extend(_size_problem(outline, image, OUTLINE_SIZE))
        rgba = image.convert("RGBA")
        raw = rgba.tobytes()
        pixels = [tuple(raw[i : i + 4]) for i in range(0, len(raw), 4)]
        if not any(alpha == 0 for *_, alpha in pixels):
            problems.append(f"{outline.name} must have a transparent background")
        if any(alpha > 0 and (r, g, b) != (255, 255, 255) for r, g, b, alpha in pixels):
            problems.append(f"{outline.name} may only use white (with any transparency)")
    return problems


def _size_problem(path: Path, image: Image.Image, size: tuple[int, int]) -> list[str]:
    if image.format == "PNG" and image.size == size:
        return []
    found = f"{image.format} {image.size[0]}x{image.size[1]}"
    return [f"{path.name} must be a {size[0]}x{size[1]} PNG, not {found}"]


def build_package(settings: Settings, output: Path, *, icons: Path = MANIFEST_DIR) -> BuiltPackage:
    manifest = render_manifest(settings)
    color, outline = icons / manifest["icons"]["color"], icons / manifest["icons"]["outline"]
    problems = manifest_problems(manifest) + icon_problems(color, outline)
    if problems:
        raise ManifestError(problems)
    output.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(output, "w", compression=zipfile.ZIP_DEFLATED) as package:
        package.writestr("manifest.json", json.dumps(manifest, indent=2))
        package.write(color, "color.png")
        package.write(outline, "outline.png")
    return BuiltPackage(output, manifest)
