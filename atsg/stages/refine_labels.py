"""Stage refine_labels: tiles + cams + masks (+ classifier tokens) -> pseudo_labels.zarr."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from ..artifacts import record, recorded_key
from ..device import select_device
from ..errors import DataError
from ..integrity import seal
from ..refine.calibrate import choose_thresholds
from ..refine.pseudo import Refiner
from ..store import IGNORE, atomic_store, base_attrs, create_tile_arrays, open_store
from .common import Tiles, batches, evenly_spaced, file_sha256, read_cams, read_tiles


def run_refine_labels(
    cfg: Mapping, tiles_path: Path, cams_path: Path, masks_path: Path | None, classifier_path: Path | None, out: Path
) -> dict:
    r = cfg["refine"]
    tiles = Tiles.open(tiles_path)
    cams = open_store(cams_path, "cams")
    if cams["cams"].shape[0] != tiles.n or cams["cams"].shape[1] != tiles.n_targets:
        raise DataError(
            f"{cams_path}: CAMs of shape {cams['cams'].shape} do not match {tiles.path} "
            f"({tiles.n} tiles, {tiles.n_targets} classes); rerun extract_cams"
        )
    masks = None
    if r["mask_voting"]:
        if masks_path is None:
            raise DataError("refine.mask_voting is on but no masks store was given (--masks)")
        masks = open_store(masks_path, "masks")
    device = select_device(r, "refine")
    model = None
    if r["affinity"]:
        if classifier_path is None:
            raise DataError("refine.affinity is on but no classifier was given (--classifier)")
        from .train_classifier import load_classifier  # timm's import (about 5 s) only for the affinity walk

        model, classifier_record = load_classifier(classifier_path, tiles, device)
    refiner = Refiner(r, tiles.background, len(tiles.classes)).to(device)
    inputs = {"tiles": recorded_key(tiles.attrs, tiles.path), "cams": recorded_key(cams.attrs, cams_path)}
    if masks is not None:
        inputs["masks"] = recorded_key(masks.attrs, masks_path)
    if model is not None:
        inputs["classifier"] = recorded_key(classifier_record, classifier_path)
    attrs = {
        **base_attrs("pseudo_labels", record(cfg, "pseudo_labels", inputs)),
        "classes": tiles.classes,
        "cams_classifier_sha256": cams.attrs.get("classifier_sha256"),
        "masks_generator": masks.attrs.get("generator") if masks is not None else None,
        "classifier_sha256": file_sha256(classifier_path) if model is not None else None,
    }
    g_tiles = tiles.group

    def batch_of(idx):
        images = torch.from_numpy(read_tiles(g_tiles["images"], idx)).to(device)
        cls = torch.from_numpy(read_tiles(g_tiles["cls_labels"], idx)).to(device)
        cam = read_cams(cams, idx, r["cam_aux_weight"]).to(device)
        objects = (
            torch.from_numpy(read_tiles(masks["objects"], idx).astype(np.int64)).to(device)
            if masks is not None
            else None
        )
        tokens = None
        if model is not None:
            with torch.no_grad():
                tokens = model.tokens(images)[0].float()
        valid = torch.from_numpy(read_tiles(g_tiles["valid"], idx)).to(device).bool()
        return images, cls, cam, objects, tokens, valid

    chosen = None
    if r["thresholds"] == "val" or r["class_gains"] == "val":
        asked = "refine.thresholds: val" if r["thresholds"] == "val" else "refine.class_gains: val"
        val_idx = tiles.require("val", asked)
        idx = evenly_spaced(val_idx, r["calibrate_tiles"])
        data = [
            (batch_of(b), read_tiles(g_tiles["labels"], b))
            for b in np.array_split(idx, range(r["batch_size"], len(idx), r["batch_size"]))
        ]
        chosen = choose_thresholds(r, tiles.classes, tiles.background, data)
        refiner = Refiner({**r, **chosen["values"]}, tiles.background, len(tiles.classes)).to(device)
        attrs["thresholds"] = chosen
    shape = (tiles.n, *tiles.size)
    ignored = 0
    with atomic_store(out) as tmp:
        g = create_tile_arrays(
            tmp, "pseudo_labels", {"labels": shape}, {"labels": IGNORE}, {"labels": ("tile", "y", "x")}, attrs
        )
        for idx in batches(np.arange(tiles.n), r["batch_size"], "refine_labels"):
            images, cls, cam, objects, tokens, valid = batch_of(idx)
            label = refiner(images, cam, cls, objects, tokens, valid)
            label[~valid] = IGNORE  # padding and nodata are never trained on
            ignored += int((label == IGNORE).sum())
            g["labels"][int(idx[0]) : int(idx[-1]) + 1] = label.to(torch.uint8).cpu().numpy()
        seal(tmp)
    summary = {"tiles": tiles.n, "ignored_fraction": ignored / max(1, tiles.n * shape[1] * shape[2])}
    if chosen is not None:
        summary["thresholds"] = chosen["values"]
    return summary
