"""Stage generate_masks: tiles.zarr -> masks.zarr (objects uint16, boundaries uint8).

Sharded: a unit is a batch of ``masks.batch_size`` consecutive tiles (SAM encodes them in one call), or,
with ``masks.scene_windows``, the tiles of one scene window (SAM runs once on the window).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..artifacts import record, recorded_key
from ..errors import ConfigError
from ..shards import ShardedStage, Step, run_sharded
from ..store import base_attrs, create_tile_arrays
from .common import Tiles, consecutive_units, file_sha256, read_tiles, unit_progress

SAM_KEYS = (
    "sam_model_type",
    "points_per_side",
    "pred_iou_thresh",
    "stability_score_thresh",
    "stability_score_offset",
    "box_nms_thresh",
    "crop_n_layers",
    "crop_nms_thresh",
    "scene_windows",
    "encoder_precision",
)


class GenerateMasks(ShardedStage):
    kind = "masks"

    def __init__(self, cfg: Mapping, tiles_path: Path, out: Path, timed: bool = False):
        self.cfg, self.m, self.out, self.timed = cfg, cfg["masks"], Path(out), timed
        self.tiles = Tiles.open(tiles_path)
        self._windows = None

    def windows(self) -> dict:
        """Scene windows by their first tile (scene-window mode only)."""
        if self._windows is None:
            from ..masks.windows import plan_windows
            from ..models.sam import image_size

            if self.m["generator"] != "sam":
                raise ConfigError("config key masks.scene_windows: scene windows are for masks.generator: sam")
            size = image_size(self.m["sam_model_type"])
            t = self.tiles.attrs["tiles"]
            self._windows = {int(w.tiles[0]): w for w in plan_windows(t["scene"], t["window"], size)}
        return self._windows

    def units(self) -> list[np.ndarray]:
        if self.m["scene_windows"]:
            return [w.tiles for w in self.windows().values()]
        return consecutive_units(self.tiles.n, self.m["batch_size"])

    def create(self, path: Path) -> None:
        m = self.m
        sam = m["generator"] == "sam"
        params = {k: m[k] for k in SAM_KEYS} if sam else dict(m[m["generator"]])
        made = record(self.cfg, "masks", {"tiles": recorded_key(self.tiles.attrs, self.tiles.path)})
        attrs = {
            **base_attrs("masks", made),
            "generator": m["generator"],
            "parameters": params,
            "min_area": m["min_area"],
            "max_objects": m["max_objects"],
            "checkpoint_sha256": file_sha256(m["sam_checkpoint"]) if sam else None,
        }
        shape = (self.tiles.n, *self.tiles.size)
        create_tile_arrays(
            path,
            "masks",
            {"objects": shape, "boundaries": shape},
            {},
            {"objects": ("tile", "y", "x"), "boundaries": ("tile", "y", "x")},
            attrs,
        )

    def fill(self, group, units: list[np.ndarray], folders) -> dict:
        import torch

        from ..device import select_device
        from ..masks.generate import build_generator

        m = self.m
        device = select_device(m, "masks") if m["generator"] == "sam" else torch.device("cpu")
        generator = build_generator(m, device, self.timed)
        images, valid = self.tiles.group["images"], self.tiles.group["valid"]
        counts = []
        start = time.perf_counter()
        for idx in unit_progress(units, f"generate_masks ({m['generator']})"):
            tiles = read_tiles(images, idx)
            if m["scene_windows"]:
                maps = generator.window_maps(self.windows()[int(idx[0])], tiles)
            else:
                maps = generator.maps(tiles)
            masks = read_tiles(valid, idx) > 0
            for k, (i, (objects, boundaries)) in enumerate(zip(idx, maps)):
                group["objects"][int(i)] = np.where(masks[k], objects, 0)  # padding and nodata: no object
                group["boundaries"][int(i)] = np.where(masks[k], boundaries, 0)
                counts.append(int(objects.max()))
        summary = {
            "tiles": len(counts),
            "generator": m["generator"],
            "device": str(device),
            "mean_objects": float(np.mean(counts)) if counts else 0.0,
            "seconds": time.perf_counter() - start,
        }
        if generator.model_seconds is not None:
            summary["sam_model_seconds"] = generator.model_seconds
        return summary


def run_generate_masks(cfg: Mapping, tiles_path: Path, out: Path, step: Step = Step()) -> dict:
    return run_sharded(GenerateMasks(cfg, tiles_path, out), step)
