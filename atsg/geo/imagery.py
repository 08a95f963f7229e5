"""What a segmentation model expects of its imagery, recorded in every model file, and the checks of an input
raster against it (bands, pixel type, CRS, ground sample distance)."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence

import numpy as np
from rasterio.crs import CRS

from ..errors import DataError

log = logging.getLogger(__name__)

IMAGERY_VERSION = 1
"""Version of the imagery record's layout; a model file with another (or none) gets a clear error."""


def ground_sample_distance(
    crs: str | None, transform: Sequence[float] | None, centre: tuple[float, float] | None = None
) -> float | None:
    """Pixel size in metres (the square root of the pixel's area) of a raster grid; None without a CRS or
    transform. Geographic CRSs (degrees) are converted at the grid's centre latitude ``centre`` (x, y)."""
    if not crs or not transform:
        return None
    a, b, _, d, e, _ = transform[:6]
    size = math.sqrt(abs(a * e - b * d))
    if size == 0:
        return None
    crs = CRS.from_user_input(crs)
    if crs.is_geographic:
        lat = math.radians(centre[1]) if centre is not None else 0.0
        return size * 111_320.0 * math.sqrt(max(math.cos(lat), 1e-6))  # metres per degree: y full, x by cos(lat)
    factor = crs.linear_units_factor[1] if crs.linear_units_factor else 1.0
    return size * factor


def _scene_gsd(scene: Mapping) -> float | None:
    t = scene.get("transform")
    if not t:
        return None
    centre = (t[2] + t[0] * scene["width"] / 2, t[5] + t[4] * scene["height"] / 2)
    try:
        return ground_sample_distance(scene.get("crs"), t, centre)
    except Exception:  # an unreadable CRS string: no GSD rather than no model
        return None


def imagery_record(tiles_attrs: Mapping, normalisation: Mapping | None) -> dict:
    """The record of the imagery a model was trained on, from its tile store's attributes: classes and
    palette, the raster bands read (1-based) and their names, how pixels were mapped to 8 bits
    (``value_range``), the tile size, the training ground sample distance (median over scenes, metres) and
    CRS, and the model's input normalisation (0-255 units)."""
    scenes = list(tiles_attrs.get("scenes") or [])
    gsds = [g for g in (_scene_gsd(s) for s in scenes) if g]
    crss = [s.get("crs") for s in scenes if s.get("crs")]
    names = list(tiles_attrs["bands"])
    return {
        "version": IMAGERY_VERSION,
        "classes": list(tiles_attrs["classes"]),
        "palette": [list(c) for c in tiles_attrs["palette"]] if tiles_attrs.get("palette") else None,
        "background": bool(tiles_attrs.get("background", True)),
        "band_names": names,
        "raster_bands": list(tiles_attrs.get("raster_bands") or range(1, len(names) + 1)),
        "value_range": list(tiles_attrs["value_range"]) if tiles_attrs.get("value_range") else None,
        "tile_size": int(tiles_attrs["tile_size"]),
        "gsd": float(np.median(gsds)) if gsds else None,
        "crs": crss[0] if crss else None,
        "normalisation": dict(normalisation) if normalisation else None,
    }


def dataset_imagery(dataset: Mapping, tiling: Mapping) -> dict:
    """Tile-store-like attributes of a dataset section (for model files made without tiles: imported ones)."""
    return {
        "classes": dataset["classes"],
        "palette": dataset["palette"] if dataset["label_encoding"] == "rgb" else None,
        "background": dataset["background"],
        "bands": dataset["band_names"],
        "raster_bands": dataset["bands"],
        "value_range": dataset["value_range"],
        "tile_size": tiling["size"],
        "scenes": [],
    }


def model_normalisation(model) -> dict | None:
    """Mean and std (0-255 units, one per band) a model's backbone subtracts and divides by."""
    backbone = getattr(model, "backbone", None)
    if backbone is None or not hasattr(backbone, "mean"):
        return None
    return {
        "mean": [round(float(v), 6) for v in backbone.mean.flatten()],
        "std": [round(float(v), 6) for v in backbone.std.flatten()],
    }


def read_imagery(model_file: Mapping, path) -> dict:
    """The imagery record of a loaded model file; a clear error for files made before models described it."""
    rec = model_file.get("imagery")
    if not isinstance(rec, Mapping) or rec.get("version") != IMAGERY_VERSION:
        raise DataError(
            f"{path}: this model file does not describe the imagery it was trained on (bands, value "
            "range, tile size, GSD): it was made by an earlier atsg; retrain it with this one (rerun "
            "train_segmentation) to map with it"
        )
    return dict(rec)


def check_input(
    path,
    count: int,
    dtype: str,
    crs,
    gsd: float | None,
    imagery: Mapping,
    value_range: Sequence[float] | None,
    resample: bool,
) -> tuple[list | None, list[str]]:
    """(the value range that maps the input's pixels to 8 bits, or None for 8-bit input; warnings) of an input
    raster against a model's imagery; errors are raised, one line each. ``value_range`` overrides the model's."""
    bands = imagery["raster_bands"]
    if max(bands) > count:
        raise DataError(
            f"{path}: {count} band(s), but the model reads raster band(s) {bands} "
            f"({', '.join(imagery['band_names'])}); give imagery of the product it was trained on"
        )
    trained = imagery.get("value_range")
    if value_range is None:
        if dtype != "uint8" and not trained:
            raise DataError(
                f"{path}: pixels are {dtype}, but the model was trained on 8-bit imagery; give 8-bit "
                "imagery, or --value-range LOW HIGH to map these values to 0-255"
            )
        if dtype == "uint8" and trained:
            raise DataError(
                f"{path}: pixels are uint8, but the model was trained on values {trained} mapped to "
                "8 bits; give imagery of the product it was trained on, or --value-range LOW HIGH"
            )
        value_range = None if dtype == "uint8" else trained
    elif len(value_range) != 2 or value_range[1] <= value_range[0]:
        raise DataError(f"--value-range {value_range}: expected LOW HIGH with LOW < HIGH")
    warnings = []
    if crs is None:
        warnings.append(f"{path}: no CRS; the map will not be georeferenced either")
    train = imagery.get("gsd")
    if gsd and train and not resample and max(gsd / train, train / gsd) > 2:
        warnings.append(
            f"{path}: ground sample distance {gsd:.3g} m, the model was trained at {train:.3g} m "
            f"({gsd / train:.2g}x); objects will look {'smaller' if gsd > train else 'larger'} than "
            "in training: pass --resample to map at the training GSD"
        )
    return (list(value_range) if value_range is not None else None), warnings
