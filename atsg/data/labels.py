"""Label decoding: RGB palettes and class-index rasters to class indices (vectorised)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

import numpy as np

from ..errors import DataError
from ..store import IGNORE


def _rgb_keys(rgb: np.ndarray) -> np.ndarray:
    """(3, ...) uint8 -> (...) uint32 key r<<16 | g<<8 | b."""
    keys = rgb[0].astype(np.uint32) << 16
    keys |= rgb[1].astype(np.uint32) << 8
    keys |= rgb[2]
    return keys


def _colour(key: int) -> tuple[int, int, int]:
    return (key >> 16) & 255, (key >> 8) & 255, key & 255


class LabelDecoder:
    """Turns raw label raster values into class indices, 255 for 'no label'.

    ``decode`` returns the decoded labels and a Counter of values it could not
    map (RGB key or index -> pixel count), so a caller can read a whole file and
    report every unknown value with its total count in one error.
    """

    def __init__(self, dataset: Mapping):
        self.encoding = dataset["label_encoding"]
        self.n_classes = len(dataset["classes"])
        self.threshold = dataset.get("label_threshold")
        if self.encoding == "rgb":
            keys = [int(_rgb_keys(np.array(c, dtype=np.uint8))) for c in dataset["palette"]]
            values = list(range(len(keys)))
            for colour in dataset.get("ignore_colors", []):
                key = int(_rgb_keys(np.array(colour, dtype=np.uint8)))
                if key not in keys:
                    keys.append(key)
                    values.append(IGNORE)
            if len(keys) > 255:
                raise DataError("config keys dataset.palette + dataset.ignore_colors: at most 255 colours")
            if len(set(keys[: self.n_classes])) != self.n_classes:
                raise DataError("config key dataset.palette: two classes share one colour")
            # One lookup over all 2**24 colours (16 MB) instead of a search per pixel: the colour's position in
            # the palette + 1, 0 for an unknown colour; then the position's class.
            self._lut = np.zeros(1 << 24, np.uint8)
            self._lut[np.asarray(keys, np.uint32)] = np.arange(1, len(keys) + 1)
            self._values = np.asarray([IGNORE] + values, np.uint8)
        else:
            lut = np.full(256, -1, dtype=np.int16)
            lut[: self.n_classes] = np.arange(self.n_classes)
            for v in dataset.get("ignore_values", []):
                lut[v] = IGNORE
            self._lut = lut

    @property
    def bands(self) -> int:
        """Number of label raster bands this encoding needs."""
        return 3 if self.encoding == "rgb" else 1

    def decode(self, raw: np.ndarray, valid: np.ndarray | None = None) -> tuple[np.ndarray, Counter]:
        """(bands, H, W) raw label values -> ((H, W) uint8 labels, Counter of unknown values). Pixels outside
        ``valid`` (the raster's nodata) get no label (255) and are never unknown values."""
        if self.encoding == "rgb":
            labels, unknown = self._decode_rgb(raw[:3], valid)
        else:
            labels, unknown = self._decode_index(raw[0], valid)
        if valid is not None:
            labels[~valid] = IGNORE
        return labels, unknown

    def _decode_rgb(self, rgb: np.ndarray, valid: np.ndarray | None) -> tuple[np.ndarray, Counter]:
        if self.threshold is not None:
            rgb = np.where(rgb >= self.threshold, 255, 0).astype(np.uint8)
        keys = _rgb_keys(rgb)
        code = self._lut[keys]
        known = code != 0
        out = self._values[code]
        unknown = Counter()
        if not known.all():
            out[~known] = IGNORE
            bad = ~known if valid is None else ~known & valid
            values, counts = np.unique(keys[bad], return_counts=True)
            unknown.update({int(v): int(c) for v, c in zip(values, counts)})
        return out, unknown

    def _decode_index(self, index: np.ndarray, valid: np.ndarray | None) -> tuple[np.ndarray, Counter]:
        if index.dtype != np.uint8:
            outside = (index < 0) | (index > 255)
            if valid is not None:
                outside &= valid
            if outside.any():
                bad = index[outside]
                values, counts = np.unique(bad, return_counts=True)
                return np.full(index.shape, IGNORE, np.uint8), Counter(dict(zip(values.tolist(), counts.tolist())))
            index = np.clip(index, 0, 255).astype(np.uint8)
        mapped = self._lut[index]
        bad = mapped < 0 if valid is None else (mapped < 0) & valid
        unknown = Counter()
        if bad.any():
            values, counts = np.unique(index[bad], return_counts=True)
            unknown.update(dict(zip(values.tolist(), counts.tolist())))
        mapped = np.where(mapped < 0, IGNORE, mapped)
        return mapped.astype(np.uint8), unknown

    def unknown_message(self, path, unknown: Counter) -> str:
        """The one-line error for values ``decode`` could not map in file ``path``."""
        worst = unknown.most_common(3)
        if self.encoding == "rgb":
            shown = ", ".join(f"RGB{_colour(k)} on {c} px" for k, c in worst)
            fix = "add it to dataset.palette or map it to 'no label' with dataset.ignore_colors"
            what = "colour"
        else:
            shown = ", ".join(f"value {k} on {c} px" for k, c in worst)
            fix = f"classes are 0..{self.n_classes - 1}; list it in dataset.ignore_values to treat it as 'no label'"
            what = "value"
        more = f" (+{len(unknown) - 3} more)" if len(unknown) > 3 else ""
        return f"{path}: label {what} outside the palette: {shown}{more}; {fix}"


def image_level_labels(labels: np.ndarray, n_classes: int, background: bool, min_pixels: int) -> np.ndarray:
    """Multi-hot classifier targets of one tile: classes covering >= min_pixels (class 0 dropped if background)."""
    counts = np.bincount(labels.ravel(), minlength=256)[:n_classes]  # IGNORE (255) is never a class
    present = (counts >= min_pixels).astype(np.uint8)
    return present[1:] if background else present
