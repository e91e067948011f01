"""Render every card the product sends to a PNG, for a person to look at (``make card-previews``).

Each card is drawn by Microsoft's Adaptive Cards JavaScript renderer in a page that headless
Chromium photographs. The pictures go to ``card-previews/`` (ignored by git).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from tests.support.card_catalog import catalog

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "card-previews"
RENDERER = ROOT / "node_modules" / "adaptivecards" / "dist" / "adaptivecards.min.js"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--window-size=560,900",
]

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>body {{ font-family: 'Segoe UI', sans-serif; background: #f5f5f5; margin: 16px; }}
#card {{ background: white; border-radius: 6px; box-shadow: 0 1px 3px #0003; padding: 4px;
         width: 500px; }}
h1 {{ font-size: 13px; color: #555; font-weight: normal; }}</style>
<script src="{renderer}"></script></head>
<body><h1>{title}</h1><div id="card"></div>
<script>
const card = new AdaptiveCards.AdaptiveCard();
card.parse({card});
document.getElementById("card").appendChild(card.render());
</script></body></html>
"""


def file_name(name: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in name.lower()).strip("-")


def main() -> int:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("card-previews needs Chromium (Debian package 'chromium').", file=sys.stderr)
        return 1
    if not RENDERER.is_file():
        print(
            "card-previews needs node_modules: run `make test` or `npm ci` first.", file=sys.stderr
        )
        return 1
    OUT.mkdir(exist_ok=True)
    for name, card in catalog().items():
        page = OUT / f"{file_name(name)}.html"
        page.write_text(PAGE.format(title=name, renderer=RENDERER.as_uri(), card=json.dumps(card)))
        picture = OUT / f"{file_name(name)}.png"
        subprocess.run(  # noqa: S603 - our own files
            [
                chromium,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={OUT / '.chromium'}",
                f"--screenshot={picture}",
                page.as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        print(f"{picture.relative_to(ROOT)}")
    shutil.rmtree(OUT / ".chromium", ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
