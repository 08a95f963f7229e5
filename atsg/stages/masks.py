"""Stage generate_masks: tiles.zarr -> masks.zarr (objects uint16, boundaries uint8).

Sharded: a unit is one tile.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from ..shards import ShardedStage, Step, run_sharded
from ..store import base_attrs, create_tile_arrays
from .common import Tiles, consecutive_units, file_sha256, unit_progress

SAM_KEYS = ("sam_model_type", "points_per_side", "pred_iou_thresh", "stability_score_thresh", "box_nms_thresh",
            "crop_n_layers", "crop_nms_thresh")


class GenerateMasks(ShardedStage):
    kind = "masks"

    def __init__(self, cfg: Mapping, tiles_path: Path, out: Path):
        self.m, self.out = cfg["masks"], Path(out)
        self.tiles = Tiles.open(tiles_path)

    def units(self) -> list[np.ndarray]:
        return consecutive_units(self.tiles.n, 1)

    def create(self, path: Path) -> None:
        m = self.m
        sam = m["generator"] == "sam"
        params = {k: m[k] for k in SAM_KEYS} if sam else dict(m[m["generator"]])
        attrs = {**base_attrs("masks", {"masks": dict(m)}), "generator": m["generator"], "parameters": params,
                 "min_area": m["min_area"], "max_objects": m["max_objects"],
                 "checkpoint_sha256": file_sha256(m["sam_checkpoint"]) if sam else None}
        shape = (self.tiles.n, *self.tiles.size)
        create_tile_arrays(path, "masks", {"objects": shape, "boundaries": shape}, {},
                           {"objects": ("tile", "y", "x"), "boundaries": ("tile", "y", "x")}, attrs)

    def fill(self, group, units: list[np.ndarray], folders) -> dict:
        import torch

        from ..device import select_device
        from ..masks.generate import build_generator

        m = self.m
        device = select_device(m, "masks") if m["generator"] == "sam" else torch.device("cpu")
        generator = build_generator(m, device)
        images = self.tiles.group["images"]
        counts = []
        for (i,) in unit_progress(units, f"generate_masks ({m['generator']})"):
            objects, boundaries = generator(images[int(i)], m["min_area"], m["max_objects"])
            group["objects"][int(i)] = objects
            group["boundaries"][int(i)] = boundaries
            counts.append(int(objects.max()))
        return {"tiles": len(counts), "generator": m["generator"], "device": str(device),
                "mean_objects": float(np.mean(counts)) if counts else 0.0}


def run_generate_masks(cfg: Mapping, tiles_path: Path, out: Path, step: Step = Step()) -> dict:
    return run_sharded(GenerateMasks(cfg, tiles_path, out), step)
