"""Stage report: the page ``snakemake --report`` opens on, and its figures -> report/run.rst, report/iou.png,
report/training.png.

``run.rst`` describes the run (data, method, settings) and gives the evaluation's headline: the per-class IoU
and mIoU of CAM labels, pseudo-labels, weak and fully supervised predictions, the weak / supervised ratio and
the classifier's F1, then links to the figures, which the workflow registers as report items in this order:
per-class IoU bars and training curves (drawn here, the curves from each training's metrics.json), sample
tiles with the legend, the confusion matrix (drawn by evaluate).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import date
from pathlib import Path

import numpy as np

from .. import __version__
from ..artifacts import REPORT_CATEGORIES, TRAININGS
from ..scoring.figures import iou_bars, training_curves
from ..scoring.report import MAIN_SOURCES, TITLES, Links, Para, headline, to_rst
from ..store import SPLITS, write_text
from .common import Tiles

FILES = ("run.rst", "iou.png", "training.png")


def _weights(section: Mapping) -> str:
    w = section["weights"]
    if w == "checkpoint":
        return f"weights from {section['checkpoint']}"
    return {
        "pretrained": "ImageNet weights (timm)",
        "random_init": "random initialisation",
        "pretrain": "weights of the pretrain stage",
    }.get(w, w)


def _on(flag) -> str:
    return "on" if flag else "off"


def describe(cfg: Mapping, tiles: Tiles, trainings: Mapping[str, Mapping]) -> list:
    """What the run is, in two paragraphs: its data, then the method's stages and the settings that matter most."""
    d, c, m, r, s = cfg["dataset"], cfg["classifier"], cfg["masks"], cfg["refine"], cfg["segmentation"]
    codes = tiles.split_codes()
    counts = ", ".join(f"{int((codes == k).sum())} {sp}" for k, sp in enumerate(SPLITS))
    scenes = tiles.attrs.get("scenes") or []
    data = (
        f"Weakly supervised segmentation (ATSG) from image-level labels only, made by atsg {__version__} on "
        f"{date.today().isoformat()}. Data: preset `{d['preset']}`, {len(scenes)} scenes in {tiles.n} tiles of "
        f"{'x'.join(map(str, tiles.size))} px ({counts}), bands {', '.join(map(str, d['band_names']))}. The "
        f"ground truth gives each tile's image-level labels and the scores below, on the "
        f"{cfg['evaluate']['split']} split (checkpoints and thresholds chosen on val); the weak models never "
        "see it."
    )
    steps = []
    if "pretrain" in trainings:
        p = cfg["pretrain"]
        steps.append(f"`{p['method']}` pretraining of `{p['backbone']}` ({p['iterations']} steps)")
    linking = c["linking"]
    steps.append(
        f"classifier `{c['backbone']}` ({_weights(c)}, {c['iterations']} steps; PTC {_on(c['ptc']['enabled'])}, "
        f"token linking {_on(linking['enabled'])}, CTC {_on(c['ctc']['enabled'])})"
    )
    steps.append(
        f"pseudo-labels from CAMs (background {r['bkg_thre']:g}, thresholds: {r['thresholds']}; PAR {_on(r['par'])}, "
        f"`{m['generator']}` mask voting {_on(r['mask_voting'])}, affinity {_on(r['affinity'])})"
    )
    steps.append(
        f"segmentation `{s['backbone']}` + `{s['decoder']}` ({_weights(s)}, {s['iterations']} steps; object "
        f"loss {_on(s['object_loss']['enabled'])}, boundary loss {_on(s['boundary_loss']['enabled'])})"
    )
    pr = cfg["predict"]
    size = {"crop": "the training crop", None: "their own size"}.get(pr["input_size"], f"{pr['input_size']} px")
    steps.append(
        f"predictions of tiles at {size}, scales {', '.join(f'{x:g}' for x in pr['scales'])}"
        f"{' with flips' if pr['flip'] else ''}, dense CRF {_on(pr['crf']['enabled'])}"
        + (f" ({pr['crf']['iterations']} iterations)" if pr["crf"]["enabled"] else "")
    )
    method = "Method: " + "; ".join(steps) + "."
    if cfg["evaluate"]["supervised_baseline"]:
        method += " The supervised column trains the same segmentation model on the true labels."
    return [Para(data), Para(method)]


TOP_ALIGNED = """.. raw:: html

   <style>.h-screen.items-center { align-items: flex-start; }</style>

"""
"""Snakemake's report centres its landing view vertically in a scrolling box, so whatever is taller than the
window loses its top (the rule graph of this workflow is). This aligns that box to the top instead."""


def run_report(cfg: Mapping, tiles_path: Path, eval_dir: Path, trainings: Mapping[str, Path], out_dir: Path) -> dict:
    eval_dir, out_dir = Path(eval_dir), Path(out_dir)
    tiles = Tiles.open(tiles_path)
    metrics = json.loads((eval_dir / "metrics.json").read_text(encoding="utf-8"))
    order = sorted(trainings, key=lambda n: TRAININGS.index(n) if n in TRAININGS else len(TRAININGS))
    runs = {name: json.loads(Path(trainings[name]).read_text(encoding="utf-8")) for name in order}
    split = cfg["evaluate"]["split"]
    out_dir.mkdir(parents=True, exist_ok=True)
    iou_bars(metrics, {s: TITLES[s] for s in MAIN_SOURCES}, tiles.classes, out_dir / "iou.png", split)
    training_curves(runs, out_dir / "training.png")
    blocks = [
        *describe(cfg, tiles, runs),
        *headline(metrics, tiles.classes, split),
        Links(
            "Figures (also in the menu): ",
            REPORT_CATEGORIES,
            ": per-class IoU bars, training curves (loss and validation metrics over steps), sample tiles with "
            "the legend, the confusion matrix. Every table: `eval/report.md`.",
        ),
    ]
    write_text(out_dir / "run.rst", TOP_ALIGNED + to_rst(blocks, f"atsg run {cfg['run']}"))
    mious = {s: metrics[s]["miou"] for s in MAIN_SOURCES if s in metrics}
    return {"out": str(out_dir), **{s: round(v, 4) for s, v in mious.items() if v is not None and np.isfinite(v)}}
