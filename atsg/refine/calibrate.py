"""Thresholds and per-class CAM gains chosen on the val split (``refine.thresholds: val``,
``refine.class_gains: val``), as checkpoints are.

The published thresholds (background 0.6, band 0.25 / 0.7) suit data where the background class is common; where
it is rare (Potsdam's and Vaihingen's clutter) nearly every pixel falls to it once the CAMs sharpen. Here the
background threshold of the CAM labels is the candidate with the best CAM-label mIoU on val tiles, and the
pseudo-labels' uncertain band the candidate pair with the best pseudo-label mIoU (ignored pixels count against
it, so a band that ignores everything cannot win). Per-class gains, when asked for, are chosen between the two, on
the CAM labels (cheap to score) at the chosen background threshold; the band is then chosen with them and
without them, and they are kept only where the pseudo-labels score better with them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch

from ..cam import labels_at_size
from ..scoring.metrics import ConfusionAccumulator
from .pseudo import Refiner


def choose_thresholds(
    r: Mapping, classes: Sequence[str], background: bool, data: Sequence[tuple[tuple, np.ndarray]]
) -> dict:
    """{"values": {bkg_thre, low_thre, high_thre[, class_gains]}, "chosen_on": "val", "tiles": n, "scores": {...}} from
    ``data``: (batch, truth) pairs of val tiles, each batch (images, cls, cam, objects, tokens, valid) as the
    refine stage reads it and its ground truth (B, H, W)."""
    values = {"bkg_thre": r["bkg_thre"], "low_thre": r["low_thre"], "high_thre": r["high_thre"]}
    scores: dict = {"bkg_thre": {}, "band": {}}
    n = int(sum(len(truth) for _, truth in data))
    if not data:
        if r["class_gains"] == "val":
            values["class_gains"] = None  # gains of 1 (the Refiner's none)
        return {"values": values, "chosen_on": "val", "tiles": n, "scores": scores}

    def score(label_fn: Callable) -> float:
        acc = ConfusionAccumulator(classes)
        for batch, truth in data:
            label = label_fn(batch)
            label[~batch[5]] = 255
            acc.update(truth, label.cpu().numpy())
        return acc.scores().miou()

    if r["thresholds"] == "val" and background:  # without a background class no threshold decides anything
        for t in r["bkg_candidates"]:
            scores["bkg_thre"][str(t)] = score(_gained(float(t), True, None))
        if scores["bkg_thre"]:
            values["bkg_thre"] = float(max(r["bkg_candidates"], key=lambda t: scores["bkg_thre"][str(t)]))
    gain_sets: list[list[float] | None] = [None]  # None: gains of 1
    if r["class_gains"] == "val":
        n_cam = len(classes) - int(background)
        gains, scores["class_gains"] = choose_gains(r, score, values["bkg_thre"], background, n_cam)
        values["class_gains"] = None
        if gains != [1.0] * n_cam:
            gain_sets.append(gains)
    search_band = r["uncertain_band"] and r["thresholds"] == "val" and background
    if search_band or len(gain_sets) > 1:
        # the pseudo-labels decide: the band among its candidates, and the gains only where they beat gains of 1
        # with the best band of each (gains chosen on the CAM labels need not carry through PAR and the band)
        bands = r["band_candidates"] if search_band else [(values["low_thre"], values["high_thre"])]
        found = {}
        for k, gains in enumerate(gain_sets):
            for low, high in bands:
                vals = {**values, "class_gains": gains, "low_thre": low, "high_thre": high}
                refiner = Refiner({**r, **vals}, background, len(classes)).to(data[0][0][0].device)
                with torch.no_grad():
                    found[k, low, high] = score(lambda b, refiner=refiner: refiner(b[0], b[2], b[1], b[3], b[4], b[5]))
        best = max(found, key=lambda key: found[key])  # first best: gains of 1 win ties
        if search_band:
            scores["band"] = {f"{low},{high}": v for (k, low, high), v in found.items() if k == best[0]}
            values.update(low_thre=float(best[1]), high_thre=float(best[2]))
        if len(gain_sets) > 1:
            scores["class_gains"]["pseudo_labels"] = {
                "gains of 1": max(v for key, v in found.items() if key[0] == 0),
                "chosen gains": max(v for key, v in found.items() if key[0] == 1),
            }
            values["class_gains"] = gain_sets[best[0]]
    return {"values": values, "chosen_on": "val", "tiles": n, "scores": scores}


def choose_gains(
    r: Mapping, score: Callable, bkg: float, background: bool, n_cam_classes: int
) -> tuple[list[float], dict]:
    """Per-class CAM gains by coordinate ascent on the CAM-label mIoU at background threshold ``bkg``: for each
    class in turn, the candidate of ``r["gain_candidates"]`` that scores best with the other gains held; a gain
    changes only on a strict improvement, so classes the score cannot tell apart keep 1. (gains, {pass: score}).
    :func:`choose_thresholds` then keeps them only if the pseudo-labels score better with them."""
    gains = [1.0] * n_cam_classes
    best = score(_gained(bkg, background, gains))
    trace = {"start": best}
    for p in range(r["gain_passes"]):
        for c in range(n_cam_classes):
            for v in r["gain_candidates"]:
                if float(v) == gains[c]:
                    continue
                trial = [*gains[:c], float(v), *gains[c + 1 :]]
                s = score(_gained(bkg, background, trial))
                if s > best:
                    best, gains = s, trial
        trace[f"pass {p + 1}"] = best
    return gains, trace


def _gained(bkg: float, background: bool, gains: Sequence[float] | None) -> Callable:
    """CAM labels of a batch, the CAMs times ``gains`` (K,) unless None."""
    g = None if gains is None else torch.tensor(gains, dtype=torch.float32).view(1, -1, 1, 1)
    return lambda b: labels_at_size(
        b[2] if g is None else b[2] * g.to(b[2].device), b[1], b[0].shape[-2:], bkg, background
    )[0]
