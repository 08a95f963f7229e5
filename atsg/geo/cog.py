"""Cloud-Optimized GeoTIFFs written block by block: memory bounded by a block, whatever the raster's size.

Blocks go into a tiled GeoTIFF beside the output; GDAL's COG driver then copies it (streaming, within its
block cache) into internal tiles, overviews and lossless compression, and the copy is renamed into place, so
an interrupted write never leaves a file at the output's name.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning
from rasterio.shutil import copy as gdal_copy
from rasterio.windows import Window


def write_cog(
    path: str | Path,
    shape: tuple[int, int, int],
    dtype: str,
    blocks: Iterable[tuple[Window, np.ndarray]],
    *,
    crs=None,
    transform=None,
    nodata: float | None = None,
    masks: Iterable[tuple[Window, np.ndarray]] = (),
    colormap: Sequence[Sequence[int]] | None = None,
    descriptions: Sequence[str] | None = None,
    tags: Mapping[str, object] | None = None,
    resampling: str = "mode",
    block_size: int = 512,
    compress: str = "deflate",
    level: int = 6,
    cache_mb: int = 128,
) -> Path:
    """Write ``blocks`` ((window, (bands, rows, cols) array) pairs covering the raster of ``shape`` (bands,
    height, width)) as a COG at ``path``; ``masks`` (window, (rows, cols) bool valid) pairs become its internal
    mask. Tags are written as strings (non-strings as JSON)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.parent / f".{path.name}.staging.tif"
    copying = path.parent / f".{path.name}.cog.tif"
    count, height, width = shape
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": count,
        "dtype": dtype,
        "tiled": True,
        "blockxsize": block_size,
        "blockysize": block_size,
        "compress": "zstd",
        "zstd_level": 1,
        "bigtiff": "if_safer",
    }
    if nodata is not None:
        profile["nodata"] = nodata
    if crs is not None:
        profile["crs"] = crs
    if transform is not None:
        profile["transform"] = transform
    try:
        with warnings.catch_warnings(), rasterio.Env(GDAL_CACHEMAX=cache_mb, GDAL_TIFF_INTERNAL_MASK=True):
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(staging, "w", **profile) as dst:
                for window, data in blocks:
                    dst.write(data, window=window)
                for window, valid in masks:
                    dst.write_mask(np.where(valid, 255, 0).astype(np.uint8), window=window)
                if colormap is not None:
                    dst.write_colormap(1, {i: tuple(int(v) for v in c) + (255,) for i, c in enumerate(colormap)})
                if descriptions:
                    for i, d in enumerate(descriptions, 1):
                        dst.set_band_description(i, d)
                if tags:
                    dst.update_tags(**{k: v if isinstance(v, str) else json.dumps(v) for k, v in tags.items()})
            gdal_copy(
                staging,
                copying,
                driver="COG",
                COMPRESS=compress.upper(),
                LEVEL=level,
                BLOCKSIZE=block_size,
                OVERVIEW_RESAMPLING=resampling.upper(),
                BIGTIFF="IF_SAFER",
                NUM_THREADS=1,
            )
        os.replace(copying, path)
    finally:
        for tmp in (staging, copying):
            tmp.unlink(missing_ok=True)
    return path


def read_tags(path: str | Path) -> dict:
    """The dataset tags of a raster, JSON values decoded."""
    with rasterio.open(path) as src:
        tags = src.tags()
    out = {}
    for k, v in tags.items():
        try:
            out[k] = json.loads(v)
        except ValueError:
            out[k] = v
    return out
