"""`atsg synth`: write the demo scenes as georeferenced GeoTIFFs with RGB-coded label rasters."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.transform import from_origin
from tqdm.auto import tqdm

from .. import __version__
from ..data.synthetic.scene import generate_scene, to_class_indices
from ..store import atomic_store

log = logging.getLogger(__name__)

SCENE_PATTERN = "scene_{id}_{kind}.tif"
"""File names of the demo scenes (kind: RGB or label), mirroring Potsdam's top_potsdam_{id}_{kind}.tif."""
MANIFEST = "manifest.json"
_GAP_M = 100.0  # metres between neighbouring scenes on the map


def _profile(size: int, count: int, crs: CRS, transform) -> dict:
    return dict(
        driver="GTiff",
        width=size,
        height=size,
        count=count,
        dtype="uint8",
        crs=crs,
        transform=transform,
        tiled=True,
        blockxsize=256,
        blockysize=256,
        compress="deflate",
        photometric="RGB" if count == 3 else "MINISBLACK",
    )


def scene_transform(k: int, synthetic: Mapping):
    """Affine of scene k: scenes lie on a 4-wide grid on the map, _GAP_M apart."""
    size, gsd = synthetic["size"], synthetic["gsd"]
    east0, north0 = synthetic["origin"]
    step = size * gsd + _GAP_M
    return from_origin(east0 + (k % 4) * step, north0 - (k // 4) * step, gsd, gsd)


def _draw(synthetic: Mapping, classes: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Scene k: (image (size, size, 3) uint8, class indices (size, size) uint8); depends only on (seed, k)."""
    rng = np.random.default_rng([synthetic["seed"], k])
    image, semantic = generate_scene(synthetic["size"], rng, dict(synthetic["block_weights"]), synthetic["gsd"])
    return image, to_class_indices(semantic, classes)


def run_synth(
    synthetic: Mapping, dataset: Mapping, out_dir: Path, workers: int = 1, record: Mapping | None = None
) -> dict:
    """Write ``synthetic.scenes`` scenes into ``out_dir`` (atomically: a temp folder renamed when complete);
    ``record`` (the artifact key of the scenes, :func:`atsg.artifacts.record`) goes into the manifest.

    ``workers`` processes draw scenes in parallel; each scene depends only on its seed, so the files are the
    same for any number of workers."""
    classes = list(dataset["classes"])
    palette = np.asarray(dataset["palette"], np.uint8)
    crs = CRS.from_user_input(synthetic["crs"])
    counts = np.zeros(len(classes), np.int64)
    n = synthetic["scenes"]
    pool = ProcessPoolExecutor(min(workers, n)) if workers > 1 and n > 1 else None
    try:
        draw = partial(_draw, dict(synthetic), classes)
        scenes = pool.map(draw, range(n)) if pool else map(draw, range(n))
        with atomic_store(out_dir) as tmp:
            tmp.mkdir()
            for k, (image, labels) in enumerate(tqdm(scenes, total=n, desc="synth", unit="scene")):
                counts += np.bincount(labels.ravel(), minlength=len(classes))
                transform = scene_transform(k, synthetic)
                sid = f"{k:03d}"
                with rasterio.open(
                    tmp / SCENE_PATTERN.format(id=sid, kind="RGB"),
                    "w",
                    **_profile(synthetic["size"], 3, crs, transform),
                ) as dst:
                    dst.write(image.transpose(2, 0, 1))
                with rasterio.open(
                    tmp / SCENE_PATTERN.format(id=sid, kind="label"),
                    "w",
                    **_profile(synthetic["size"], 3, crs, transform),
                ) as dst:
                    dst.write(palette[labels].transpose(2, 0, 1))
            fractions = {c: round(float(n) / float(counts.sum()), 4) for c, n in zip(classes, counts)}
            manifest = {
                **dict(record or {}),
                "atsg_version": __version__,
                "synthetic": dict(synthetic),
                "class_fractions": fractions,
            }
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
    log.info("wrote %d scenes to %s; class fractions %s", n, out_dir, fractions)
    return manifest
