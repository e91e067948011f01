"""Draws the app's two icons (run by hand when the design changes; the PNGs are committed).

Teams wants a 192x192 full-colour icon and a 32x32 outline icon: white on a transparent
background. Both show a calendar page with a check mark: access to calendar sync, granted.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
TEAL = (13, 115, 119, 255)
WHITE = (255, 255, 255, 255)


def calendar(draw: ImageDraw.ImageDraw, size: int, inset: float, width: int) -> None:
    left, top = size * inset, size * (inset + 0.05)
    right, bottom = size * (1 - inset), size * (1 - inset)
    draw.rounded_rectangle(
        (left, top, right, bottom), radius=size * 0.06, outline=WHITE, width=width
    )
    bar = top + (bottom - top) * 0.22
    draw.line((left, bar, right, bar), fill=WHITE, width=width)
    for x in (0.38, 0.62):
        ring = size * x
        draw.line((ring, top - size * 0.06, ring, top + size * 0.05), fill=WHITE, width=width)
    tick = [(size * 0.36, size * 0.60), (size * 0.46, size * 0.70), (size * 0.66, size * 0.48)]
    draw.line(tick, fill=WHITE, width=width, joint="curve")


def main() -> None:
    color = Image.new("RGBA", (192, 192), TEAL)
    calendar(ImageDraw.Draw(color), 192, 0.2, 10)
    color.save(HERE / "color.png")
    outline = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    calendar(ImageDraw.Draw(outline), 32, 0.12, 2)
    outline.save(HERE / "outline.png")


if __name__ == "__main__":
    main()
