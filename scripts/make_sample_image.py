"""Generate samkit's bundled demo image ``samkit/assets/sample.png`` (deterministic).

A few flat-shaded shapes (disc, box, triangle, ring, ellipse) on a softly textured background,
640 x 480, so that a point prompt at the centre lands on an object. Re-make it with

    python scripts/make_sample_image.py [--out PATH]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

WIDTH, HEIGHT = 640, 480
SEED = 20230405
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "samkit" / "assets" / "sample.png"


def noise(rng: np.random.Generator, cell: int, channels: int) -> np.ndarray:
    """(HEIGHT, WIDTH, channels) float noise in 0..255, smooth over ``cell`` pixels."""
    coarse = (rng.random((HEIGHT // cell + 1, WIDTH // cell + 1, channels)) * 255).astype(np.uint8)
    planes = [Image.fromarray(coarse[..., c]).resize((WIDTH, HEIGHT), Image.BICUBIC) for c in range(channels)]
    return np.stack([np.asarray(p, dtype=np.float32) for p in planes], axis=-1)


def background(rng: np.random.Generator) -> Image.Image:
    """Coloured value noise at two scales over a vertical gradient."""
    ramp = np.linspace(0.0, 1.0, HEIGHT, dtype=np.float32)[:, None, None]
    base = (1 - ramp) * np.array([196, 214, 188], np.float32) + ramp * np.array([150, 160, 120], np.float32)
    pixels = 0.7 * base + 0.2 * noise(rng, 40, 3) + 0.1 * noise(rng, 10, 1)
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))


def draw_shapes(image: Image.Image) -> Image.Image:
    """Solid shapes with a darker outline; the disc covers the image centre."""
    draw = ImageDraw.Draw(image)
    outline = dict(width=3)
    draw.ellipse((250, 170, 390, 310), fill=(214, 64, 52), outline=(120, 30, 25), **outline)  # centre disc
    draw.rectangle((60, 60, 200, 170), fill=(52, 104, 196), outline=(25, 50, 110), **outline)
    draw.polygon([(470, 60), (590, 200), (420, 210)], fill=(242, 190, 40), outline=(140, 105, 15))
    draw.ellipse((440, 300, 600, 440), fill=(70, 160, 90), outline=(30, 80, 40), **outline)
    draw.ellipse((480, 340, 560, 400), fill=(188, 200, 170))  # hole: a ring
    draw.ellipse((70, 300, 290, 420), fill=(150, 80, 170), outline=(70, 35, 85), **outline)
    return image.filter(ImageFilter.SMOOTH)


def make_sample(out: Path) -> Path:
    """Write the sample PNG to ``out`` and return the path."""
    image = draw_shapes(background(np.random.default_rng(SEED)))
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out, format="PNG", optimize=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output PNG (default: {DEFAULT_OUT})")
    path = make_sample(parser.parse_args().out)
    print(f"wrote {path} ({path.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
