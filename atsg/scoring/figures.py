"""Report figures drawn with Pillow: sample tiles (image | truth | CAM | pseudo-label | prediction) and the
confusion matrix."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..store import IGNORE


def default_palette(n: int) -> list[list[int]]:
    rng = np.random.default_rng(0)
    return [list(map(int, c)) for c in rng.integers(0, 256, (n, 3))]


def colourise(labels: np.ndarray, palette: Sequence[Sequence[int]]) -> np.ndarray:
    """(H, W) class indices -> (H, W, 3) uint8; IGNORE is black."""
    lut = np.zeros((256, 3), np.uint8)
    lut[: len(palette)] = np.asarray(palette, np.uint8)
    lut[IGNORE] = 0
    return lut[labels]


def heatmap(values: np.ndarray) -> np.ndarray:
    """(H, W) in [0, 1] -> (H, W, 3) uint8, dark blue to yellow."""
    v = np.clip(values, 0, 1)[..., None]
    low, mid, high = np.array([20, 20, 90.0]), np.array([200, 40, 80.0]), np.array([250, 230, 60.0])
    rgb = np.where(v < 0.5, low + (mid - low) * (v * 2), mid + (high - mid) * (v * 2 - 1))
    return rgb.astype(np.uint8)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType sizes
        return ImageFont.load_default()


def sample_grid(rows: list[list[np.ndarray]], titles: Sequence[str], path: Path, cell: int = 192) -> None:
    """One row per tile of (H, W, 3) panels, titles on top."""
    pad, head = 4, 22
    n_cols = len(titles)
    canvas = Image.new("RGB", (n_cols * (cell + pad) + pad, head + len(rows) * (cell + pad) + pad), "white")
    draw = ImageDraw.Draw(canvas)
    font = _font(14)
    for j, title in enumerate(titles):
        draw.text((pad + j * (cell + pad), 3), title, fill="black", font=font)
    for i, row in enumerate(rows):
        for j, panel in enumerate(row):
            im = Image.fromarray(panel).resize((cell, cell), Image.NEAREST)
            canvas.paste(im, (pad + j * (cell + pad), head + pad + i * (cell + pad)))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)


def legend_strip(classes: Sequence[str], palette: Sequence[Sequence[int]], path: Path) -> None:
    font = _font(13)
    width = 14 + max(len(c) for c in classes) * 8 + 30
    canvas = Image.new("RGB", (width, 20 * len(classes) + 8), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (name, colour) in enumerate(zip(classes, palette)):
        draw.rectangle([4, 4 + 20 * i, 18, 18 + 20 * i], fill=tuple(colour), outline="black")
        draw.text((26, 4 + 20 * i), name, fill="black", font=font)
    canvas.save(path)


def confusion_figure(confusion: np.ndarray, classes: Sequence[str], path: Path, title: str) -> None:
    """Row-normalised confusion matrix (truth rows, prediction columns) with percentages."""
    n = len(classes)
    rows = confusion.sum(1, keepdims=True)
    norm = np.divide(confusion, rows, out=np.zeros(confusion.shape, float), where=rows > 0)
    cell, left, top = 56, 150, 150
    canvas = Image.new("RGB", (left + n * cell + 10, top + n * cell + 30), "white")
    draw = ImageDraw.Draw(canvas)
    font = _font(12)
    draw.text((10, 8), title, fill="black", font=_font(15))
    draw.text((left, top - 20), "prediction ->", fill="black", font=font)
    for j, name in enumerate(classes):
        label = Image.new("RGBA", (top - 30, 16), (255, 255, 255, 0))
        ImageDraw.Draw(label).text((0, 0), name[:18], fill="black", font=font)
        canvas.paste(
            label.rotate(90, expand=True), (left + j * cell + cell // 2 - 8, 30), label.rotate(90, expand=True)
        )
    for i, name in enumerate(classes):
        draw.text((8, top + i * cell + cell // 2 - 7), name[:18], fill="black", font=font)
        for j in range(n):
            v = norm[i, j]
            shade = int(255 - 200 * v)
            x0, y0 = left + j * cell, top + i * cell
            draw.rectangle([x0, y0, x0 + cell - 1, y0 + cell - 1], fill=(shade, shade, 255), outline="grey")
            draw.text((x0 + 10, y0 + cell // 2 - 7), f"{100 * v:.0f}%", fill="white" if v > 0.6 else "black", font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
