"""Generate the demo data set: small, learnable, deterministic, in the dog-breed layout.

    python -m scripts.make_demo_data demo_data          # train/ valid/ test/, 6 classes

Each class is a coloured shape ("001.Red_disc", ...) on a photo-like noisy background, at a random
place, size and tint, in photo-sized images of varied size. Like real collections it mixes JPEG
and PNG (some with alpha), grayscale, CMYK and EXIF-rotated files, so the whole input path is
exercised. The same seed always gives the same bytes.
"""
from __future__ import annotations

import argparse
import colorsys
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from util.progress import Progress

# (folder name, hue): hues evenly spaced, so colour separates the classes and shape backs it up
# (grayscale images only have the shape).
CLASSES = [
    ("001.Red_disc", 0.0),
    ("002.Green_square", 2 / 6),
    ("003.Blue_triangle", 4 / 6),
    ("004.Yellow_ring", 1 / 6),
    ("005.Purple_cross", 5 / 6),
    ("006.Cyan_stripes", 3 / 6),
]
SPLITS = {"train": 40, "valid": 10, "test": 10}  # images per class


def _background(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A muted two-colour gradient with blotches and sensor noise, like a blurry photo."""
    a, b = rng.uniform(60, 190, 3), rng.uniform(60, 190, 3)
    t = np.linspace(0, 1, width)[None, :, None] * rng.uniform(0.3, 1.0)
    t = t + np.linspace(0, 1, height)[:, None, None] * rng.uniform(0.0, 0.7)
    pixels = a + (b - a) * np.clip(t, 0, 1)
    pixels = pixels + rng.normal(0, 12, (height, width, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(6):  # soft clutter that belongs to no class
        x, y, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(10, width / 6)
        grey = tuple(int(v) for v in rng.uniform(70, 180, 3))
        draw.ellipse([x - r, y - r * 0.6, x + r, y + r * 0.6], fill=grey)
    return image.filter(ImageFilter.GaussianBlur(3))


def _draw_subject(draw: ImageDraw.ImageDraw, kind: str, cx: float, cy: float, r: float,
                  angle: float, colour: tuple[int, int, int]) -> None:
    def rotated(points):
        c, s = math.cos(angle), math.sin(angle)
        return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in points]

    if kind == "disc":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    elif kind == "square":
        draw.polygon(rotated([(-r, -r), (r, -r), (r, r), (-r, r)]), fill=colour)
    elif kind == "triangle":
        draw.polygon(rotated([(0, -r * 1.2), (r * 1.1, r * 0.8), (-r * 1.1, r * 0.8)]), fill=colour)
    elif kind == "ring":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=colour, width=max(4, int(r / 3)))
    elif kind == "cross":
        w = r / 3
        draw.polygon(rotated([(-w, -r), (w, -r), (w, r), (-w, r)]), fill=colour)
        draw.polygon(rotated([(-r, -w), (r, -w), (r, w), (-r, w)]), fill=colour)
    elif kind == "stripes":
        for k in range(-2, 3):
            x0 = k * r * 0.45
            draw.polygon(rotated([(x0 - r * 0.15, -r), (x0 + r * 0.15, -r),
                                  (x0 + r * 0.15, r), (x0 - r * 0.15, r)]), fill=colour)


def make_image(rng: np.random.Generator, class_index: int) -> Image.Image:
    name, hue = CLASSES[class_index]
    kind = name.split("_", 1)[1]
    width = int(rng.integers(480, 961))
    height = int(width * rng.uniform(0.62, 1.25))
    image = _background(rng, width, height)
    side = min(width, height)
    r = side * rng.uniform(0.18, 0.3)
    # Framed like a photo of a dog: off-centre, but inside the central square that eval crops.
    cx = width / 2 + rng.uniform(-0.15, 0.15) * side
    cy = height / 2 + rng.uniform(-0.15, 0.15) * side
    h = (hue + rng.uniform(-0.03, 0.03)) % 1.0
    colour = tuple(int(v * 255) for v in colorsys.hsv_to_rgb(h, rng.uniform(0.75, 1), rng.uniform(0.8, 1)))
    _draw_subject(ImageDraw.Draw(image), kind, cx, cy, r, rng.uniform(0, math.pi), colour)
    return image


def save_varied(image: Image.Image, stem: Path, variant: int) -> Path:
    """Write one of the storage variants real data sets contain."""
    if variant == 0:  # PNG with a transparent border
        rgba = image.convert("RGBA")
        alpha = Image.new("L", image.size, 255)
        ImageDraw.Draw(alpha).rectangle([0, 0, image.width, 12], fill=0)
        rgba.putalpha(alpha)
        path = stem.with_suffix(".png")
        rgba.save(path)
    elif variant == 1:  # plain PNG
        path = stem.with_suffix(".png")
        image.save(path)
    elif variant == 2:  # grayscale JPEG
        path = stem.with_suffix(".jpg")
        image.convert("L").save(path, quality=88)
    elif variant == 3:  # CMYK JPEG, as print workflows write them
        path = stem.with_suffix(".jpg")
        image.convert("CMYK").save(path, quality=88)
    elif variant == 4:  # stored sideways, upright only through its EXIF orientation tag
        path = stem.with_suffix(".jpg")
        exif = Image.Exif()
        exif[0x0112] = 6  # "rotate 90 CW to display"
        image.transpose(Image.Transpose.ROTATE_90).save(path, quality=88, exif=exif)
    else:
        path = stem.with_suffix(".jpg")
        image.save(path, quality=90)
    return path


def generate(out_dir: str | Path, per_split: dict[str, int] | None = None, seed: int = 0) -> Path:
    out = Path(out_dir)
    per_split = per_split or SPLITS
    with Progress(f"demo images in {out}", len(CLASSES) * sum(per_split.values()),
                  "images") as progress:
        for split_index, (split, count) in enumerate(per_split.items()):
            for class_index, (name, _) in enumerate(CLASSES):
                folder = out / split / name
                folder.mkdir(parents=True, exist_ok=True)
                rng = np.random.default_rng([seed, split_index, class_index])
                for i in range(count):
                    image = make_image(rng, class_index)
                    variant = int(rng.integers(0, 20))  # 5 variants in 20: a quarter are unusual
                    save_varied(image, folder / f"{name.split('.')[1]}_{i:04d}", variant)
                    progress.update()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out_dir", nargs="?", default="demo_data")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-class", type=int, nargs=3, metavar=("TRAIN", "VALID", "TEST"),
                        help=f"images per class in each split (default {list(SPLITS.values())})")
    args = parser.parse_args()
    per_split = dict(zip(SPLITS, args.per_class)) if args.per_class else None
    out = generate(args.out_dir, per_split, args.seed)
    total = sum(1 for p in out.rglob("*") if p.is_file())
    print(f"wrote {total} images in {len(CLASSES)} classes to {out}/{{{','.join(SPLITS)}}}")


if __name__ == "__main__":
    main()
