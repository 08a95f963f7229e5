"""Thresholds chosen on the val split (``refine.thresholds: val``), as checkpoints are.

The published thresholds (background 0.6, band 0.25 / 0.7) suit data where the background class is common; where
it is rare (Potsdam's and Vaihingen's clutter) nearly every pixel falls to it once the CAMs sharpen. Here the
background threshold of the CAM labels is the candidate with the best CAM-label mIoU on val tiles, and the
pseudo-labels' uncertain band the candidate pair with the best pseudo-label mIoU (ignored pixels count against
it, so a band that ignores everything cannot win).
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
    """{"values": {bkg_thre, low_thre, high_thre}, "chosen_on": "val", "tiles": n, "scores": {...}} from
    ``data``: (batch, truth) pairs of val tiles, each batch (images, cls, cam, objects, tokens, valid) as the
    refine stage reads it and its ground truth (B, H, W)."""
    values = {"bkg_thre": r["bkg_thre"], "low_thre": r["low_thre"], "high_thre": r["high_thre"]}
    scores: dict = {"bkg_thre": {}, "band": {}}
    n = int(sum(len(truth) for _, truth in data))
    if not background or not data:  # no background class: no threshold decides anything
        return {"values": values, "chosen_on": "val", "tiles": n, "scores": scores}

    def score(label_fn: Callable) -> float:
        acc = ConfusionAccumulator(classes)
        for batch, truth in data:
            label = label_fn(batch)
            label[~batch[5]] = 255
            acc.update(truth, label.cpu().numpy())
        return acc.scores().miou()

    def cam_labels(t: float) -> Callable:
        return lambda b: labels_at_size(b[2], b[1], b[0].shape[-2:], t, True)[0]

    for t in r["bkg_candidates"]:
        scores["bkg_thre"][str(t)] = score(cam_labels(float(t)))
    if scores["bkg_thre"]:
        values["bkg_thre"] = float(max(r["bkg_candidates"], key=lambda t: scores["bkg_thre"][str(t)]))
    if r["uncertain_band"]:
        for low, high in r["band_candidates"]:
            refiner = Refiner({**r, "low_thre": low, "high_thre": high}, True, len(classes))
            refiner = refiner.to(data[0][0][0].device)
            with torch.no_grad():
                scores["band"][f"{low},{high}"] = score(
                    lambda b, refiner=refiner: refiner(b[0], b[2], b[1], b[3], b[4], b[5])
                )
        if scores["band"]:
            low, high = max(r["band_candidates"], key=lambda p: scores["band"][f"{p[0]},{p[1]}"])
            values.update(low_thre=float(low), high_thre=float(high))
    return {"values": values, "chosen_on": "val", "tiles": n, "scores": scores}
