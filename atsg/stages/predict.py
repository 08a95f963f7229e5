"""Stage predict: tiles + segmentation model -> predictions.zarr and one GeoTIFF per source scene.

Scenes are processed one at a time: their tiles' class probabilities are
written per tile (argmax) and blended into a scene-sized buffer (a Hann window
weights overlapping tiles), whose argmax is written with the scene's CRS and
transform.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning
from rasterio.transform import Affine

from ..artifacts import record, recorded_key
from ..geo.windows import hann_window
from ..shards import ShardedStage, Step, run_sharded
from ..store import IGNORE, base_attrs, create_tile_arrays
from .common import Tiles, batches, check_classes, file_sha256, model_record, read_tiles

log = logging.getLogger(__name__)


def prediction_artifact(model: Mapping) -> str:
    """The artifact the predictions of a model file are: the supervised bound's, or the weak model's."""
    return "supervised_predictions" if model.get("artifact") == "supervised" else "predictions"


def blend_window(size: int, kind: str) -> np.ndarray:
    if kind == "flat":
        return np.ones((size, size), np.float32)
    return hann_window(size)


def write_scene_geotiff(path: Path, labels: np.ndarray, scene: Mapping, palette) -> None:
    profile = {
        "driver": "GTiff",
        "width": labels.shape[1],
        "height": labels.shape[0],
        "count": 1,
        "dtype": "uint8",
        "nodata": IGNORE,
        "compress": "deflate",
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
    }
    if scene.get("crs"):
        profile["crs"] = scene["crs"]
    if scene.get("transform"):
        profile["transform"] = Affine(*scene["transform"][:6])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(labels, 1)
            if palette:
                dst.write_colormap(1, {i: tuple(c) + (255,) for i, c in enumerate(palette)})


class Predict(ShardedStage):
    """A unit is one source scene: its tiles' predictions and its GeoTIFF (blended across tile overlaps)."""

    kind = "predictions"

    def __init__(self, cfg: Mapping, tiles_path: Path, model_path: Path, out: Path, geotiff_dir: Path | None):
        self.cfg, self.p, self.model_path, self.out = cfg, cfg["predict"], Path(model_path), Path(out)
        self.tiles = Tiles.open(tiles_path)
        self.model = model_record(self.model_path)  # checked before any store is made
        check_classes(self.model, self.tiles, self.model_path)
        self.geotiffs = geotiff_dir is not None and self.p["geotiff"]
        self.folders = [Path(geotiff_dir)] if geotiff_dir is not None else []

    def units(self) -> list[dict]:
        return list(self.tiles.attrs["scenes"])

    def _arrays(self) -> dict:
        shape = (self.tiles.n, *self.tiles.size)
        return {"labels": shape, **({"scores": shape} if self.p["scores"] else {})}

    def create(self, path: Path) -> None:
        tiles = self.tiles
        arrays = self._arrays()
        model = self.model
        made = record(
            self.cfg,
            prediction_artifact(model),
            {
                "tiles": recorded_key(tiles.attrs, tiles.path),
                model.get("artifact") or "segmentation": recorded_key(model, self.model_path),
            },
        )
        attrs = {
            **base_attrs("predictions", made),
            "classes": tiles.classes,
            "model_sha256": file_sha256(self.model_path),
            "palette": tiles.attrs.get("palette"),
        }
        create_tile_arrays(
            path, "predictions", arrays, {"labels": IGNORE}, {k: ("tile", "y", "x") for k in arrays}, attrs
        )

    def fill(self, group, units: list[dict], folders: list[Path]) -> dict:
        import torch

        from ..device import select_device
        from ..inference import segment_probs
        from .train_segmentation import load_segmenter

        p, tiles = self.p, self.tiles
        device = select_device(p, "predict")
        model, ck = load_segmenter(self.model_path, tiles, device)
        crop = int(ck["config"]["crop_size"])
        n_cls = len(tiles.classes)
        window = blend_window(tiles.size[0], p["blend"])
        windows = tiles.attrs["tiles"]["window"]
        images, valid = tiles.group["images"], tiles.group["valid"]
        written = []
        for scene in units:
            first, count = scene["first_tile"], scene["n_tiles"]
            acc = weight = None
            if self.geotiffs:
                acc = np.zeros((n_cls, scene["height"], scene["width"]), np.float32)
                weight = np.zeros((scene["height"], scene["width"]), np.float32)
            for idx in batches(np.arange(first, first + count), p["batch_size"], f"predict {scene['id']}"):
                batch = torch.from_numpy(read_tiles(images, idx)).to(device)
                mask = read_tiles(valid, idx) > 0  # padding and nodata: no prediction (255), no CRF message
                probs = segment_probs(model, batch, p, torch.from_numpy(mask).to(device), crop).cpu().numpy()
                sl = slice(int(idx[0]), int(idx[-1]) + 1)
                group["labels"][sl] = np.where(mask, probs.argmax(1), IGNORE).astype(np.uint8)
                if p["scores"]:
                    group["scores"][sl] = np.where(mask, probs.max(1), 0).astype(np.float16)
                if acc is not None:
                    for k, i in enumerate(idx):
                        row, col, th, tw = windows[int(i)]
                        h, w = min(th, scene["height"] - row), min(tw, scene["width"] - col)
                        weights = window[:h, :w] * mask[k, :h, :w]
                        acc[:, row : row + h, col : col + w] += probs[k, :, :h, :w] * weights
                        weight[row : row + h, col : col + w] += weights
            if acc is not None:
                labels = acc.argmax(0).astype(np.uint8)
                labels[weight == 0] = IGNORE
                write_scene_geotiff(folders[0] / f"{scene['id']}.tif", labels, scene, tiles.attrs.get("palette"))
                written.append(scene["id"])
        return {
            "scenes": len(units),
            "tiles": int(sum(s["n_tiles"] for s in units)),
            "geotiffs": len(written),
            "device": str(device),
        }


def run_predict(
    cfg: Mapping, tiles_path: Path, model_path: Path, out: Path, geotiff_dir: Path | None, step: Step = Step()
) -> dict:
    return run_sharded(Predict(cfg, tiles_path, model_path, out, geotiff_dir), step)
