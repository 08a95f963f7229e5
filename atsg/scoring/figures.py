"""Report figures: sample tiles (image | truth | CAM | CAM label | pseudo-label | prediction) with their tile ids
and a colour bar, the confusion matrix, per-class IoU bars and training curves (matplotlib), and the class
legend (Pillow)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType sizes
        return ImageFont.load_default()


def legend_strip(classes: Sequence[str], palette: Sequence[Sequence[int]], path: Path) -> None:
    font = _font(13)
    width = 26 + int(max(font.getlength(c) for c in classes)) + 12
    canvas = Image.new("RGB", (width, 20 * len(classes) + 8), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (name, colour) in enumerate(zip(classes, palette)):
        draw.rectangle([4, 4 + 20 * i, 18, 18 + 20 * i], fill=tuple(colour), outline="black")
        draw.text((26, 4 + 20 * i), name, fill="black", font=font)
    canvas.save(path)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display, whatever the user's matplotlibrc says
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")  # tight: no label is clipped at the edge
    _pyplot().close(fig)


def sample_figure(
    rows: Sequence[Sequence[np.ndarray]], titles: Sequence[str], tile_ids: Sequence[str], cam_col: int, path: Path
) -> None:
    """One row per tile of (H, W, 3) panels (column ``cam_col``: an (H, W) CAM score in [0, 1]), the tile's id
    left of its row, column titles on top and a colour bar for the CAM."""
    plt = _pyplot()
    n_rows, n_cols = len(rows), len(titles)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.9 * n_cols + 0.8, 1.9 * n_rows + 0.5), squeeze=False)
    image = None
    for i, row in enumerate(rows):
        for j, panel in enumerate(row):
            ax = axes[i][j]
            if j == cam_col:
                image = ax.imshow(panel, cmap="inferno", vmin=0, vmax=1, interpolation="nearest")
            else:
                ax.imshow(panel, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(titles[j], fontsize=10)
        axes[i][0].set_ylabel(tile_ids[i], fontsize=8)
    if image is not None:  # under the CAM column, leaving the panels their size
        fig.subplots_adjust(bottom=0.1 if n_rows > 2 else 0.2)
        pos = axes[-1][cam_col].get_position()
        cax = fig.add_axes((pos.x0, pos.y0 - 0.35 / fig.get_figheight(), pos.width, 0.12 / fig.get_figheight()))
        bar = fig.colorbar(image, cax=cax, orientation="horizontal")
        bar.set_label("CAM score (max over the tile's classes)", fontsize=8)
    _save(fig, path)


def confusion_figure(confusion: np.ndarray, classes: Sequence[str], path: Path, title: str) -> None:
    """Row-normalised confusion matrix (truth rows, prediction columns) in %, every class name in full; a class
    with no pixel in the ground truth has its row greyed and is marked absent."""
    plt = _pyplot()
    n = len(classes)
    rows = confusion.sum(1, keepdims=True)
    norm = np.divide(confusion, rows, out=np.zeros(confusion.shape, float), where=rows > 0)
    absent = rows[:, 0] == 0
    shown = np.ma.masked_array(norm * 100, np.repeat(absent[:, None], n, 1))
    side = 1.2 + 0.75 * n
    fig, ax = plt.subplots(figsize=(side + 1.5, side))
    cmap = plt.get_cmap("Blues").copy()
    cmap.set_bad("#dddddd")
    image = ax.imshow(shown, cmap=cmap, vmin=0, vmax=100)
    for i in range(n):
        for j in range(n):
            if absent[i]:
                continue
            v = 100 * norm[i, j]
            ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=9, color="white" if v > 60 else "black")
        if absent[i]:
            ax.text((n - 1) / 2, i, "absent from the ground truth", ha="center", va="center", fontsize=9)
    ax.set_xticks(range(n), classes, rotation=40, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(n), [f"{c} (absent)" if a else c for c, a in zip(classes, absent)])
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    ax.set_title(title, fontsize=11)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04).set_label("% of the true class's pixels")
    _save(fig, path)


def iou_bars(metrics: Mapping, sources: Mapping[str, str], classes: Sequence[str], path: Path, split: str) -> None:
    """Per-class IoU (%) of each source (name -> title) as grouped bars; mIoU as the last group."""
    plt = _pyplot()
    shown = [s for s in sources if s in metrics]
    groups = [*classes, "mIoU"]
    width = 0.8 / max(len(shown), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(groups) + 2), 3.8))
    x = np.arange(len(groups))
    for k, s in enumerate(shown):
        values = [metrics[s]["iou"].get(c) for c in classes] + [metrics[s]["miou"]]
        heights = [np.nan if v is None else 100 * v for v in values]
        ax.bar(x + (k - (len(shown) - 1) / 2) * width, heights, width, label=sources[s])
    ax.set_xticks(x, groups, rotation=30, ha="right", rotation_mode="anchor")
    ax.set_ylabel(f"IoU on {split} (%)")
    ax.set_ylim(0, 100)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncols=min(len(shown), 4), loc="upper center", bbox_to_anchor=(0.5, 1.16), frameon=False)
    _save(fig, path)


def training_curves(trainings: Mapping[str, Mapping], path: Path) -> None:
    """One row per training (name -> its metrics.json): the loss terms over steps (left) and the validation
    metrics over steps (right), the metric that chose the checkpoint drawn thick, the chosen step dashed."""
    plt = _pyplot()
    names = list(trainings)
    fig, axes = plt.subplots(max(len(names), 1), 2, figsize=(10, 3.1 * max(len(names), 1)), squeeze=False)
    for row, name in enumerate(names):
        m = trainings[name]
        left, right = axes[row]
        losses = m.get("losses") or []
        for key in [k for k in (losses[0] if losses else {}) if k not in ("step", "lr")]:
            left.plot(
                [e["step"] for e in losses], [e.get(key) for e in losses], label=key, lw=2 if key == "loss" else 1
            )
        left.set_title(f"{name}: training loss", fontsize=10)
        if losses:
            left.legend(fontsize=7)
        else:
            left.text(0.5, 0.5, "no loss recorded", ha="center", va="center", transform=left.transAxes)
        history = m.get("history") or []
        select = m.get("select_metric")
        keys = [k for k in (history[0] if history else {}) if k != "step" and isinstance(history[0][k], int | float)]
        for key in keys:
            steps = [h["step"] for h in history]
            lw = 2.2 if key == select else 1
            right.plot(steps, [h.get(key) for h in history], marker="o", ms=3, lw=lw, label=key)
        if m.get("best_step"):
            right.axvline(m["best_step"], ls="--", color="grey", lw=1, label=f"chosen (step {m['best_step']})")
        right.set_title(f"{name}: validation" + (f" (chosen by {select})" if select else ""), fontsize=10)
        if keys:
            right.legend(fontsize=7)
        for ax in (left, right):
            ax.grid(alpha=0.3)
            ax.set_xlabel("step", fontsize=8)
    fig.tight_layout()
    _save(fig, path)
