"""Stage extract_cams: tiles.zarr + classifier -> cams.zarr (multi-scale, flip, both heads, float16; and the
classifier's image-level class probabilities, ``scores``).

Sharded: a unit is one batch of consecutive tiles (``cams.batch_size``), so every tile is computed in the
same batch whether the stage runs as one job or as many.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..artifacts import record, recorded_key
from ..shards import ShardedStage, Step, run_sharded
from ..store import base_attrs, create_tile_arrays
from ..timing import ModelClock
from .common import Tiles, check_classes, consecutive_units, file_sha256, model_record, read_tiles, unit_progress

log = logging.getLogger(__name__)


class ExtractCams(ShardedStage):
    kind = "cams"

    def __init__(self, cfg: Mapping, tiles_path: Path, classifier_path: Path, out: Path, timed: bool = False):
        self.cfg, self.c, self.classifier_path = cfg, cfg["cams"], Path(classifier_path)
        self.out, self.timed = Path(out), timed
        self.tiles = Tiles.open(tiles_path)
        self.classifier = model_record(self.classifier_path)  # checked before any store is made
        check_classes(self.classifier, self.tiles, self.classifier_path)
        h, w = self.tiles.size
        stride = self.c["output_stride"]
        self.size = (max(1, h // stride), max(1, w // stride))

    def units(self) -> list[np.ndarray]:
        return consecutive_units(self.tiles.n, self.c["batch_size"])

    def create(self, path: Path) -> None:
        c, tiles = self.c, self.tiles
        shape = (tiles.n, tiles.n_targets, *self.size)
        inputs = {
            "tiles": recorded_key(tiles.attrs, tiles.path),
            "classifier": recorded_key(self.classifier, self.classifier_path),
        }
        attrs = {
            **base_attrs("cams", record(self.cfg, "cams", inputs)),
            "scales": list(c["scales"]),
            "flip": c["flip"],
            "classifier_sha256": file_sha256(self.classifier_path),
            "classes": tiles.classes,
            "target_classes": list(tiles.attrs["target_classes"]),
            "tile_size": list(tiles.size),
        }
        dims = ("tile", "class", "y", "x")
        create_tile_arrays(
            path,
            "cams",
            {"cams": shape, "cams_aux": shape, "scores": (tiles.n, tiles.n_targets)},
            {},
            {"cams": dims, "cams_aux": dims, "scores": ("tile", "class")},
            attrs,
        )

    def fill(self, group, units: list[np.ndarray], folders) -> dict:
        import torch

        from ..cam import multiscale_cams
        from ..device import select_device
        from .train_classifier import load_classifier

        device = select_device(self.c, "cams")
        model, _ = load_classifier(self.classifier_path, self.tiles, device)
        images, valid = self.tiles.group["images"], self.tiles.group["valid"]
        clock = ModelClock(device, self.timed)
        start = time.perf_counter()
        for idx in unit_progress(units, "extract_cams"):
            batch = torch.from_numpy(read_tiles(images, idx)).to(device)
            mask = torch.from_numpy(read_tiles(valid, idx)).to(device).bool()
            cam, cam_aux, logits = multiscale_cams(
                model, batch, self.c["scales"], self.c["flip"], self.size, clock, mask, relu=self.c["relu"], logits=True
            )
            sl = slice(int(idx[0]), int(idx[-1]) + 1)
            group["cams"][sl] = cam.cpu().numpy().astype(np.float16)
            group["cams_aux"][sl] = cam_aux.cpu().numpy().astype(np.float16)
            if logits is None:  # no scale-1 pass among the CAMs': a forward of its own
                with torch.no_grad():
                    logits = model(batch)["logits"]
            # the image-level classification (the report's classifier F1)
            group["scores"][sl] = torch.sigmoid(logits.float()).cpu().numpy().astype(np.float16)
        summary = {
            "tiles": int(sum(len(u) for u in units)),
            "device": str(device),
            "seconds": time.perf_counter() - start,
        }
        if self.timed:
            summary["model_seconds"] = clock.seconds
        return summary


def run_extract_cams(cfg: Mapping, tiles_path: Path, classifier_path: Path, out: Path, step: Step = Step()) -> dict:
    return run_sharded(ExtractCams(cfg, tiles_path, classifier_path, out), step)
