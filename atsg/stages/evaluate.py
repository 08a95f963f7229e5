"""Stage evaluate: CAM labels, pseudo-labels and predictions against the ground truth
-> eval/metrics.json, eval/confusion.csv, eval/report.md, eval/figures/*.png."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from ..artifacts import RULES, lineage
from ..cam import labels_at_size
from ..errors import DataError
from ..losses.classification import multilabel_f1
from ..scoring.figures import colourise, confusion_figure, default_palette, legend_strip, sample_figure
from ..scoring.metrics import ConfusionAccumulator, majority_scores
from ..scoring.report import Figure, Heading, Para, lineage_blocks, score_blocks, to_markdown
from ..store import SPLITS, open_store, write_json, write_text
from .common import Tiles, evenly_spaced, read_cams, read_tiles

FIGURE_FILES = ("samples.png", "confusion.png", "legend.png")


def cam_labels(
    cams, tiles: Tiles, idx: np.ndarray, r: Mapping, image_labels: bool = True, cam: torch.Tensor | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """CAM-labels (single background threshold ``refine.bkg_thre``, heads mixed by ``refine.cam_aux_weight``) and
    the max CAM score, at tile size: among each tile's image-level classes, or with ``image_labels`` False among
    every class (what the CAMs say where no image-level label is known, as for the segmentation model). ``cam``:
    the tiles' CAMs already read from ``cams`` (read here when None)."""
    cls = torch.from_numpy(read_tiles(tiles.group["cls_labels"], idx))
    if not image_labels:
        cls = torch.ones_like(cls)
    if cam is None:
        cam = read_cams(cams, idx, r["cam_aux_weight"])
    label, score = labels_at_size(cam, cls, tiles.size, r["bkg_thre"], tiles.background)
    return label.numpy().astype(np.uint8), score.numpy()


def _check(store, name: str, tiles: Tiles, path) -> None:
    if store["labels"].shape != (tiles.n, *tiles.size):
        raise DataError(f"{path}: {name} of shape {store['labels'].shape} do not match {tiles.path}; rerun it")


def check_lineage(inputs: Mapping[str, tuple[Mapping, Path]], expect: Mapping[str, str] | None) -> dict:
    """The artifact keys the inputs recorded; with ``expect`` (the keys the current config makes), an input made
    with other settings is an error naming it and the rule to rerun, never a row of the report."""
    keys = {name: attrs.get("artifact_key") for name, (attrs, _) in inputs.items()}
    for name, wanted in (expect or {}).items():
        if name not in inputs:
            continue
        found, path = keys[name], inputs[name][1]
        if found != wanted:
            made = f"artifact key {found[:12]}" if found else "no artifact key (an older atsg)"
            raise DataError(
                f"{path}: made with other settings than this run's ({made}; the config makes "
                f"{wanted[:12]}); rerun {RULES[name]} and what follows it "
                f"(snakemake --forcerun {RULES[name]})"
            )
    return keys


def run_evaluate(
    cfg: Mapping,
    tiles_path: Path,
    cams_path: Path,
    pseudo_path: Path,
    predictions_path: Path,
    supervised_path: Path | None,
    out_dir: Path,
    expect: Mapping[str, str] | None = None,
) -> dict:
    e, r = cfg["evaluate"], cfg["refine"]
    out_dir = Path(out_dir)
    tiles = Tiles.open(tiles_path)
    cams = open_store(cams_path, "cams")
    stores = {
        "pseudo_labels": open_store(pseudo_path, "pseudo_labels"),
        "predictions": open_store(predictions_path, "predictions"),
    }
    if supervised_path is not None:
        stores["supervised"] = open_store(supervised_path, "predictions")
    for name, path in (
        ("pseudo_labels", pseudo_path),
        ("predictions", predictions_path),
        ("supervised", supervised_path),
    ):
        if name in stores:
            _check(stores[name], name, tiles, path)
    inputs = {
        "tiles": (tiles.attrs, tiles.path),
        "cams": (cams.attrs, cams_path),
        "pseudo_labels": (stores["pseudo_labels"].attrs, pseudo_path),
        "predictions": (stores["predictions"].attrs, predictions_path),
    }
    if "supervised" in stores:
        inputs["supervised_predictions"] = (stores["supervised"].attrs, supervised_path)
    made = lineage(cfg, "eval", check_lineage(inputs, expect))
    chosen = stores["pseudo_labels"].attrs.get("thresholds")  # refine.thresholds: val
    if chosen:
        r = {**r, **chosen["values"]}
    sources = ["cam", "cam_all_classes", *stores]
    acc = {s: {sp: ConfusionAccumulator(tiles.classes) for sp in SPLITS} for s in sources}
    codes = tiles.split_codes()
    g = tiles.group
    for start in range(0, tiles.n, 16):
        idx = np.arange(start, min(tiles.n, start + 16))
        truth = read_tiles(g["labels"], idx)
        cam = read_cams(cams, idx, r["cam_aux_weight"])
        preds = {
            "cam": cam_labels(cams, tiles, idx, r, cam=cam)[0],
            "cam_all_classes": cam_labels(cams, tiles, idx, r, image_labels=False, cam=cam)[0],
        }
        preds.update({s: read_tiles(st["labels"], idx) for s, st in stores.items()})
        for k, i in enumerate(idx):
            split = SPLITS[codes[i]]
            for s in sources:
                acc[s][split].update(truth[k], preds[s][k])
    exclude = [0] if (e["ignore_background"] and tiles.background) else []
    metrics = {}
    for s in sources:
        by_split = {}
        for sp in SPLITS:
            scores = acc[s][sp].scores()
            if scores.support.sum() > 0:
                by_split[sp] = _clean(scores.as_dict(exclude))
        if e["split"] not in by_split:
            raise DataError(f"{tiles.path}: the {e['split']} split has no labelled tiles to report (evaluate.split)")
        metrics[s] = {"split": e["split"], **by_split[e["split"]], "splits": by_split}
    if "supervised" in metrics:
        sup, weak = metrics["supervised"]["miou"], metrics["predictions"]["miou"]
        metrics["supervised"]["weak_to_supervised"] = weak / sup if sup else None
    metrics["majority"] = _majority_baseline(acc["cam"], tiles.classes, exclude, e["split"])
    metrics["cam"]["bkg_thre"] = metrics["cam_all_classes"]["bkg_thre"] = r["bkg_thre"]
    metrics["classification"] = classifier_f1(cams, tiles, codes)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "metrics.json", {**metrics, "lineage": made})
    confusion = acc["predictions"][e["split"]].confusion
    with open(out_dir / "confusion.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["truth \\ prediction", *tiles.classes])
        for name, row in zip(tiles.classes, confusion):
            w.writerow([name, *map(int, row)])
    palette = tiles.attrs.get("palette") or default_palette(len(tiles.classes))
    fig_dir = out_dir / "figures"
    _samples_figure(tiles, cams, stores, e, r, palette, fig_dir / "samples.png")
    confusion_figure(
        confusion, tiles.classes, fig_dir / "confusion.png", f"predictions, {e['split']} split (rows: truth)"
    )
    legend_strip([*tiles.classes, "no label (ignored)"], [*palette, [0, 0, 0]], fig_dir / "legend.png")
    ungeoreferenced = [sc["id"] for sc in tiles.attrs.get("scenes", []) if not sc.get("crs")]
    write_text(out_dir / "report.md", report_markdown(metrics, tiles.classes, e["split"], made, ungeoreferenced))
    return {s: round(metrics[s]["miou"], 4) for s in sources}


def _majority_baseline(accs: Mapping, classes, exclude, split: str) -> dict:
    """mIoU of predicting the train split's most frequent class everywhere, per split."""
    train = accs["train"].support
    if train.sum() == 0:
        return {"class": None, "split": split, "miou": None, "splits": {}}
    majority = int(np.argmax(train))
    by_split = {
        sp: {"miou": majority_scores(a.support, majority, classes).miou(exclude)}
        for sp, a in accs.items()
        if a.support.sum() > 0
    }
    return {
        "class": classes[majority],
        "split": split,
        "miou": by_split.get(split, {}).get("miou"),
        "splits": _clean_nested(by_split),
    }


def _clean_nested(d: dict) -> dict:
    return {k: _clean(v) for k, v in d.items()}


def classifier_f1(cams, tiles: Tiles, codes: np.ndarray) -> dict:
    """Per split: the classifier's image-level F1 (mean over classes of scores > 0.5 against the image-level
    labels) and that of the all-classes baseline (every class predicted for every tile). None for a cams
    store made before it recorded scores."""
    if "scores" not in cams:
        return {}
    scores = torch.from_numpy(np.asarray(cams["scores"][:], dtype=np.float32))
    targets = torch.from_numpy(np.asarray(tiles.group["cls_labels"][:]))
    out = {}
    for code, sp in enumerate(SPLITS):
        idx = np.flatnonzero(codes == code)
        if len(idx) == 0:
            continue
        t = targets[idx]
        out[sp] = {
            "f1": multilabel_f1(scores[idx] > 0.5, t),
            "f1_all_classes": multilabel_f1(torch.ones_like(t), t),
            "tiles": int(len(idx)),
        }
    return out


def _clean(d: dict) -> dict:
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}


def _samples_figure(tiles: Tiles, cams, stores, e, r, palette, path: Path) -> None:
    idx = evenly_spaced(tiles.indices(e["split"]), e["figure_tiles"])
    if len(idx) == 0:
        return
    g = tiles.group
    labels, scores = cam_labels(cams, tiles, idx, r)
    rows = []
    titles = ["image", "truth", "CAM (max)", "CAM label", "pseudo-label", "prediction"]
    if "supervised" in stores:
        titles.append("supervised")
    for k, i in enumerate(idx):
        image = np.moveaxis(g["images"][int(i)][:3], 0, -1)
        if image.shape[-1] < 3:
            image = np.repeat(image[..., :1], 3, -1)
        row = [
            np.ascontiguousarray(image),
            colourise(g["labels"][int(i)], palette),
            scores[k],
            colourise(labels[k], palette),
            colourise(stores["pseudo_labels"]["labels"][int(i)], palette),
            colourise(stores["predictions"]["labels"][int(i)], palette),
        ]
        if "supervised" in stores:
            row.append(colourise(stores["supervised"]["labels"][int(i)], palette))
        rows.append(row)
    sample_figure(rows, titles, [tile_id(tiles, int(i)) for i in idx], titles.index("CAM (max)"), path)


def tile_id(tiles: Tiles, i: int) -> str:
    """How a figure names tile ``i``: its index, scene and pixel offset in the scene."""
    where = tiles.attrs.get("tiles") or {}
    if not where.get("scene"):
        return f"tile {i}"
    row, col = where["window"][i][:2]
    return f"tile {i}\nscene {where['scene'][i]}\nrow {row}, col {col}"


def report_markdown(
    metrics: Mapping, classes, split: str, made: Mapping | None = None, ungeoreferenced: list[str] = ()
) -> str:
    """eval/report.md: every score of the evaluation, its figures and the artifact keys it comes from."""
    blocks = [
        Para(
            f"Reported split: **{split}** (checkpoints were chosen on val). Values in %; mIoU averages the "
            "classes present in the ground truth."
        )
    ]
    if ungeoreferenced:
        shown = ", ".join(ungeoreferenced[:5]) + (" ..." if len(ungeoreferenced) > 5 else "")
        blocks.append(
            Para(
                f"**Warning: outputs are not georeferenced**: {len(ungeoreferenced)} scene(s) have no CRS "
                f"({shown}); their predictions carry pixel coordinates only."
            )
        )
    if metrics.get("cam", {}).get("bkg_thre") is not None:
        blocks.append(Para(f"CAM labels: background at or under {metrics['cam']['bkg_thre']:g} of the normalised CAM."))
    blocks.append(
        Para(
            "CAM labels and pseudo-labels take each tile's classes from its image-level labels: known on train, "
            "an oracle on val and test. The every-class row is what the CAMs give without them, as the "
            "segmentation model must (new imagery has no labels)."
        )
    )
    blocks += score_blocks(metrics, classes, split)
    blocks += [Heading("Figures")] + [Figure(Path("figures") / f, f.removesuffix(".png")) for f in FIGURE_FILES]
    if made:
        blocks += lineage_blocks(made)
    return to_markdown(blocks, "atsg evaluation")
