"""The `tile` stage: scenes -> tiles.zarr, reading each scene a few tiles at a time."""

from __future__ import annotations

import json
import logging
from collections import Counter, deque
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
from tqdm.auto import tqdm

from ..artifacts import record, recorded_key, synthetic
from ..data.labels import LabelDecoder, image_level_labels
from ..data.layout import Scene, discover_scenes
from ..data.raster import RasterInfo, SceneReader, check_scene, grid_positions, inspect_raster, tile_transform
from ..data.splits import assign_splits
from ..errors import DataError
from ..integrity import seal
from ..store import IGNORE, SPLITS, atomic_store, base_attrs, create_tile_store, image_serializer, split_code
from .synth import MANIFEST

log = logging.getLogger(__name__)


@dataclass
class ScenePlan:
    """A scene's tile grid; ``first_tile`` and ``kept`` (the (row, col) of every tile stored) are known once the
    scene is tiled, since tiles that hold no valid pixel (all nodata) are skipped."""

    scene: Scene
    image: RasterInfo
    split: str
    rows: list[int]
    cols: list[int]
    first_tile: int = 0
    kept: list[tuple[int, int]] = field(default_factory=list)

    @property
    def grid_tiles(self) -> int:
        return len(self.rows) * len(self.cols)

    @property
    def n_tiles(self) -> int:
        return len(self.kept)


def plan(dataset: Mapping, split_cfg: Mapping, tiling: Mapping, root: Path, decoder: LabelDecoder) -> list[ScenePlan]:
    """Discover and check every scene (headers only) and lay out the tile grid, before writing anything."""
    scenes = discover_scenes(dataset, root)
    assignment = assign_splits(scenes, split_cfg, root)
    plans = []
    for scene in scenes:
        if scene.id not in assignment:
            continue
        image = inspect_raster(scene.image)
        label = inspect_raster(scene.label) if scene.label is not None else None
        check_scene(image, label, dataset, decoder)
        if image.crs is None:
            log.warning(
                "%s has no CRS: its tiles and predictions are not georeferenced (outputs are not georeferenced)",
                scene.image,
            )
        rows = grid_positions(image.height, tiling["size"], tiling["stride"])
        cols = grid_positions(image.width, tiling["size"], tiling["stride"])
        plans.append(ScenePlan(scene, image, assignment[scene.id], rows, cols))
    if not plans:
        raise DataError(f"{root}: no scene is assigned to a split; check the split section of the config")
    if not any(p.split == "train" for p in plans):
        raise DataError("no scene is in the train split; check config keys split.* (the classifier needs train tiles)")
    return plans


class _Writer:
    """Writes groups of tiles to the store in a background thread while the next group is read and decoded
    (GDAL, numpy and the codecs release the GIL). At most ``depth`` groups are in flight, so memory stays
    bounded by a few groups of tiles, whatever the scene's size."""

    def __init__(self, group, depth: int = 2):
        self.arrays = (group["images"], group["labels"], group["valid"])
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="tile-writer")
        self.pending: deque = deque()
        self.depth = depth

    def write(self, start: int, *tiles: np.ndarray) -> None:
        """Write (images, labels, valid) of consecutive tiles from ``start`` on."""
        while len(self.pending) >= self.depth:
            self.pending.popleft().result()
        self.pending.append(self.pool.submit(self._write, start, tiles))

    def _write(self, start: int, tiles: tuple[np.ndarray, ...]) -> None:
        for array, values in zip(self.arrays, tiles):
            array[start : start + len(values)] = values

    def __enter__(self) -> _Writer:
        return self

    def __exit__(self, *exc) -> None:
        try:
            while self.pending:
                self.pending.popleft().result()
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)


def _column_groups(cols: list[int], per_read: int) -> list[list[int]]:
    return [cols[i : i + per_read] for i in range(0, len(cols), per_read)]


def _tile_scene(
    p: ScenePlan,
    dataset: Mapping,
    tiling: Mapping,
    decoder: LabelDecoder,
    writer: _Writer,
    start: int,
    cls_labels: list,
    bar,
) -> None:
    """Tiles of one scene from tile index ``start`` on, read ``tiling.tiles_per_read`` tiles of a tile row at a
    time: memory depends on the tile size, never on the scene's size. Pixels outside the scene (padding) and
    nodata pixels are invalid: image 0, label 255, ``valid`` 0; a tile without a valid pixel is skipped."""
    size = tiling["size"]
    n_bands = len(dataset["bands"])
    unknown: Counter = Counter()
    p.first_tile, p.kept = start, []
    with SceneReader(p.scene, dataset, decoder) as reader:
        for row in p.rows:
            rows = min(size, reader.height - row)
            for group in _column_groups(p.cols, tiling["tiles_per_read"]):
                first_col = group[0]
                width = min(group[-1] + size, reader.width) - first_col
                image_px, valid_px = reader.read_image(row, rows, first_col, width)
                decoded = reader.read_labels(row, rows, first_col, width)
                n = len(group)
                images = np.zeros((n, n_bands, size, size), np.uint8)
                labels = np.full((n, size, size), IGNORE, np.uint8)
                valid = np.zeros((n, size, size), np.uint8)
                if decoded is not None:
                    label_px, bad = decoded
                    unknown.update(bad)
                for k, col in enumerate(group):
                    x0, cols = col - first_col, min(size, reader.width - col)
                    images[k, :, :rows, :cols] = image_px[:, :, x0 : x0 + cols]
                    valid[k, :rows, :cols] = valid_px[:, x0 : x0 + cols]
                    if decoded is not None:
                        labels[k, :rows, :cols] = label_px[:, x0 : x0 + cols]
                if not valid_px.all():
                    labels[valid == 0] = IGNORE
                keep = np.flatnonzero(valid.reshape(n, -1).any(1))
                for k in keep:
                    p.kept.append((row, group[k]))
                    cls_labels.append(
                        image_level_labels(
                            labels[k], len(dataset["classes"]), dataset["background"], tiling["min_pixels"]
                        )
                    )
                if len(keep) == n:  # no copies when every tile holds data (the usual case)
                    writer.write(start + len(p.kept) - n, images, labels, valid)
                elif len(keep):
                    writer.write(start + len(p.kept) - len(keep), images[keep], labels[keep], valid[keep])
                bar.update(n)
    if unknown:
        raise DataError(decoder.unknown_message(p.scene.label, unknown))


def scene_inputs(cfg: Mapping, root: Path) -> dict:
    """The artifacts tiles are made from: the demo's scenes (their key is in the folder's manifest), or none."""
    if not synthetic(cfg):
        return {}
    try:
        manifest = json.loads((Path(root) / MANIFEST).read_text())
    except (OSError, ValueError):
        manifest = {}
    return {"scenes": recorded_key(manifest, Path(root) / MANIFEST)}


def tile_attrs(plans: list[ScenePlan], cfg: Mapping, inputs: Mapping) -> dict:
    dataset, tiling = cfg["dataset"], cfg["tiling"]
    tiles = {"scene": [], "window": [], "crs": [], "transform": []}
    scenes = []
    for p in plans:
        scenes.append(
            {
                "id": p.scene.id,
                "image": str(p.scene.image),
                "label": str(p.scene.label) if p.scene.label else None,
                "width": p.image.width,
                "height": p.image.height,
                "crs": p.image.crs,
                "transform": list(p.image.transform) if p.image.transform else None,
                "split": p.split,
                "first_tile": p.first_tile,
                "n_tiles": p.n_tiles,
                "grid": [len(p.rows), len(p.cols)],
            }
        )
        for row, col in p.kept:
            tiles["scene"].append(p.scene.id)
            tiles["window"].append([row, col, tiling["size"], tiling["size"]])
            tiles["crs"].append(p.image.crs)
            t = tile_transform(p.image.transform, row, col)
            tiles["transform"].append(list(t) if t else None)
    classes = list(dataset["classes"])
    return {
        **base_attrs("tiles", record(cfg, "tiles", inputs)),
        "preset": dataset["preset"],
        "classes": classes,
        "palette": [list(c) for c in dataset["palette"]] if dataset["label_encoding"] == "rgb" else None,
        "background": dataset["background"],
        "target_classes": classes[1:] if dataset["background"] else classes,
        "ignore_index": IGNORE,
        "tile_size": tiling["size"],
        "stride": tiling["stride"],
        "min_pixels": tiling["min_pixels"],
        "bands": list(dataset["band_names"]),
        "raster_bands": list(dataset["bands"]),
        "value_range": list(dataset["value_range"]) if dataset["value_range"] else None,
        "splits": list(SPLITS),
        "scenes": scenes,
        "tiles": tiles,
    }


def run_tile(cfg: Mapping, out: Path, root: Path) -> dict:
    """Tile every scene under ``root`` into the store ``out``; returns a summary for the log."""
    dataset, tiling = cfg["dataset"], cfg["tiling"]
    decoder = LabelDecoder(dataset)
    plans = plan(dataset, cfg["split"], tiling, root, decoder)
    grid_tiles = sum(p.grid_tiles for p in plans)
    n_targets = len(dataset["classes"]) - (1 if dataset["background"] else 0)
    log.info(
        "tiling %d scenes into at most %d tiles of %d px (stride %d) -> %s",
        len(plans),
        grid_tiles,
        tiling["size"],
        tiling["stride"],
        out,
    )
    cls_labels: list[np.ndarray] = []
    with atomic_store(out) as tmp, rasterio.Env(GDAL_CACHEMAX=tiling["gdal_cache_mb"]):
        names = list(dataset["band_names"])
        reference = names.index(tiling["reference_band"]) if tiling["reference_band"] in names else None
        serializer = image_serializer(
            tiling["size"], len(dataset["bands"]), tiling["image_codec"], tiling["wavelet_levels"], reference
        )
        group = create_tile_store(
            tmp, grid_tiles, len(dataset["bands"]), tiling["size"], n_targets, tiling["compressor_level"], serializer
        )
        n_tiles = 0
        with tqdm(total=grid_tiles, desc="tile", unit="tile", mininterval=1.0) as bar, _Writer(group) as writer:
            for p in plans:
                _tile_scene(p, dataset, tiling, decoder, writer, n_tiles, cls_labels, bar)
                n_tiles += p.n_tiles
        if n_tiles == 0:
            raise DataError(f"{root}: every tile of every scene is nodata; check the rasters' nodata value and masks")
        for name in group.array_keys():  # tiles without a valid pixel were skipped: drop their places
            group[name].resize((n_tiles, *group[name].shape[1:]))
        split = np.concatenate([np.full(p.n_tiles, split_code(p.split), np.uint8) for p in plans])
        group["cls_labels"][:] = np.asarray(cls_labels, np.uint8).reshape(n_tiles, n_targets)
        group["split"][:] = split
        group.attrs.update(tile_attrs(plans, cfg, scene_inputs(cfg, root)))
        seal(tmp)
    summary = {
        "scenes": len(plans),
        "tiles": n_tiles,
        "skipped_nodata_tiles": grid_tiles - n_tiles,
        "per_split": {s: int((split == split_code(s)).sum()) for s in SPLITS},
        "classes_per_tile": float(np.asarray(cls_labels).sum(1).mean()) if n_tiles and n_targets else 0.0,
    }
    log.info("wrote %s: %s", out, summary)
    return summary
