"""Raster reading: headers, consistency checks and windowed reads of image/label pairs."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.enums import MaskFlags
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window

from ..errors import DataError
from .labels import LabelDecoder
from .layout import Scene


@dataclass(frozen=True)
class RasterInfo:
    path: Path
    width: int
    height: int
    count: int
    dtype: str
    crs: str | None
    transform: tuple[float, ...] | None


def open_raster(path: Path):
    """An open rasterio dataset, or a one-line error for a file that is not a readable raster."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        try:
            return rasterio.open(path)
        except RasterioError as exc:
            raise DataError(
                f"{path}: cannot be read as a raster ({str(exc).splitlines()[0]}); the file is corrupt, "
                "truncated or not an image: re-export or re-download it"
            ) from None


def inspect_raster(path: Path) -> RasterInfo:
    """Size, bands, dtype and georeference of a raster, reading only its header."""
    with open_raster(path) as src:
        georeferenced = src.crs is not None or src.transform != rasterio.Affine.identity()
        return RasterInfo(
            path=path,
            width=src.width,
            height=src.height,
            count=src.count,
            dtype=str(src.dtypes[0]),
            crs=src.crs.to_string() if src.crs is not None else None,
            transform=tuple(src.transform)[:6] if georeferenced else None,
        )


def check_scene(image: RasterInfo, label: RasterInfo | None, dataset: Mapping, decoder: LabelDecoder) -> None:
    """Errors for a pair that cannot be tiled as configured (band counts, dtypes, sizes)."""
    expected = dataset["expected_bands"]
    if expected is not None and image.count != expected:
        raise DataError(
            f"{image.path}: {image.count} band(s), preset {dataset['preset']} expects {expected} "
            "(dataset.expected_bands); point dataset.images at the right product or change "
            "dataset.bands/expected_bands"
        )
    if max(dataset["bands"]) > image.count:
        raise DataError(
            f"{image.path}: has {image.count} band(s) but dataset.bands asks for band {max(dataset['bands'])}"
        )
    if image.dtype != "uint8" and dataset["value_range"] is None:
        raise DataError(
            f"{image.path}: pixels are {image.dtype}; set dataset.value_range: [low, high] to map them to 8 bits"
        )
    if label is None:
        return
    if (label.width, label.height) != (image.width, image.height):
        raise DataError(
            f"{label.path}: label is {label.width}x{label.height} px but its image {image.path.name} is "
            f"{image.width}x{image.height}; image and label must cover the same pixels"
        )
    check_alignment(image, label)
    if label.count < decoder.bands:
        raise DataError(
            f"{label.path}: {label.count} band(s) but dataset.label_encoding '{decoder.encoding}' needs "
            f"{decoder.bands}; set dataset.label_encoding to match the label rasters"
        )


def check_alignment(image: RasterInfo, label: RasterInfo) -> None:
    """When both rasters are georeferenced, the label must lie on the image's pixels: the same CRS, and every
    corner of the grid within half a pixel (labels without georeference are taken as pixel-aligned)."""
    if image.transform is None or label.transform is None:
        return
    if image.crs and label.crs and CRS.from_user_input(image.crs) != CRS.from_user_input(label.crs):
        raise DataError(
            f"{label.path}: label in {label.crs}, but its image {image.path} is in {image.crs}; "
            "reproject the label onto the image's grid"
        )
    a, b = rasterio.Affine(*image.transform), rasterio.Affine(*label.transform)
    half = 0.5 * min(abs(a.a), abs(a.e)) if a.b == a.d == 0 else 0.5 * abs(a.determinant) ** 0.5
    worst = max(
        float(np.hypot(*np.subtract(a * corner, b * corner)))
        for corner in ((0, 0), (image.width, 0), (0, image.height), (image.width, image.height))
    )
    if worst > half:
        raise DataError(
            f"{label.path}: label grid is {worst:.4g} map units off its image {image.path} (more than "
            f"half a pixel, {half:.4g}); image and label must cover the same pixels: reproject or crop "
            "the label onto the image's grid"
        )


class SceneReader:
    """Reads windows of an image (and its label raster), never the whole scene."""

    def __init__(self, scene: Scene, dataset: Mapping, decoder: LabelDecoder):
        self.scene = scene
        self.bands = list(dataset["bands"])
        self.value_range = dataset["value_range"]
        self.decoder = decoder
        self._image = open_raster(scene.image)
        self._label = open_raster(scene.label) if scene.label is not None else None
        self.width, self.height = self._image.width, self._image.height

    def __enter__(self) -> SceneReader:
        return self

    def __exit__(self, *exc) -> None:
        self._image.close()
        if self._label is not None:
            self._label.close()

    def read_image(self, row: int, rows: int, col: int = 0, cols: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """((bands, rows, cols) uint8 pixels, (rows, cols) bool valid) of the window (all columns by default);
        see :func:`read_image_window`."""
        cols = self.width - col if cols is None else cols
        return read_image_window(self._image, self.scene.image, self.bands, self.value_range, row, rows, col, cols)

    def read_labels(self, row: int, rows: int, col: int = 0, cols: int | None = None):
        """((rows, cols) uint8 class labels, Counter of unknown values) of the window, or None without labels.
        Pixels the label raster masks (its nodata value or mask) have no label (255)."""
        if self._label is None:
            return None
        cols = self.width - col if cols is None else cols
        indexes = list(range(1, self.decoder.bands + 1))
        raw = _read(self._label, self.scene.label, indexes, row, rows, col, cols)
        return self.decoder.decode(raw, _valid(self._label, self.scene.label, indexes, row, rows, col, cols))


def _read(src, path: Path, indexes, row: int, rows: int, col: int, cols: int) -> np.ndarray:
    try:
        return src.read(indexes=indexes, window=Window(col, row, cols, rows))
    except RasterioError as exc:
        raise DataError(
            f"{path}: rows {row}-{row + rows}, columns {col}-{col + cols} cannot be read "
            f"({str(exc).splitlines()[0]}); the file is corrupt or truncated: re-export or re-download it"
        ) from None


def _valid(src, path: Path, indexes, row: int, rows: int, col: int, cols: int) -> np.ndarray | None:
    """(rows, cols) bool: pixels valid in any of the bands ``indexes``; None when the raster masks nothing."""
    flags = [src.mask_flag_enums[i - 1] for i in indexes]
    if all(f == [MaskFlags.all_valid] for f in flags):
        return None
    try:
        masks = src.read_masks(indexes=indexes, window=Window(col, row, cols, rows))
    except RasterioError as exc:
        raise DataError(
            f"{path}: the nodata mask of rows {row}-{row + rows} cannot be read "
            f"({str(exc).splitlines()[0]}); re-export the file"
        ) from None
    return (masks > 0).any(0)


def read_image_window(
    src, path: Path, bands, value_range, row: int, rows: int, col: int, cols: int
) -> tuple[np.ndarray, np.ndarray]:
    """((bands, rows, cols) uint8 pixels, (rows, cols) bool valid) of a window of an open raster (a file, a
    VRT or a warped view), the window inside the raster.

    Pixels that are not uint8 are mapped linearly from ``value_range`` [low, high] to 0-255. A pixel is valid
    unless every band read is masked: the raster's nodata value, internal mask or alpha band (GDAL's per-band
    masks). Invalid pixels are 0."""
    data = _read(src, path, bands, row, rows, col, cols)
    valid = _valid(src, path, bands, row, rows, col, cols)
    if data.dtype != np.uint8:
        low, high = value_range
        scaled = (data.astype(np.float32) - low) * (255.0 / (high - low))
        data = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    if valid is None:
        return data, np.ones((rows, cols), bool)
    data[:, ~valid] = 0
    return data, valid


def tile_transform(scene_transform: tuple | None, row: int, col: int) -> tuple | None:
    """Affine (a, b, c, d, e, f) of the tile whose upper-left pixel is (row, col) of the scene."""
    if scene_transform is None:
        return None
    return tuple(rasterio.Affine(*scene_transform) @ rasterio.Affine.translation(col, row))[:6]


def grid_positions(length: int, size: int, stride: int) -> list[int]:
    """Tile starts along one axis: 0, stride, ... until the scene is covered (the last tile may overhang)."""
    if length <= size:
        return [0]
    n = -(-(length - size) // stride) + 1
    return [i * stride for i in range(n)]
