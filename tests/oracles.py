"""Reference implementations the tests (and benchmarks) compare the package against: written for clarity,
the published way where there is one, and used by no stage."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch

from atsg.refine.par import views
from atsg.store import IGNORE


def per_mask_maps(
    masks: Iterable[np.ndarray], shape: tuple[int, int], min_area: int, max_objects: int, painted_only: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """The published object and boundary maps: one area sum and one ``find_boundaries`` per mask, painted in a
    loop."""
    from skimage.segmentation import find_boundaries

    masks = list(masks)
    kept = [m for m in masks if int(m.sum()) >= min_area]
    kept.sort(key=lambda m: int(m.sum()), reverse=True)
    kept = kept[:max_objects]
    objects = np.zeros(shape, np.uint16)
    boundaries = np.zeros(shape, bool)
    for k, mask in enumerate(kept, start=1):
        objects[mask] = k
    for mask in kept if painted_only else masks:
        boundaries |= find_boundaries(mask, mode="thick")
    objects[boundaries] = 0
    return objects, boundaries.astype(np.uint8)


def segments_to_masks(segments: np.ndarray) -> list[np.ndarray]:
    """Boolean masks of the regions of a superpixel label image."""
    return [segments == v for v in np.unique(segments)]


def neighbours(x: torch.Tensor, dilations: Sequence[int]) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, 8 * len(dilations), H, W): values of the 8 neighbours at each dilation, stacked
    (the published PAR's layout)."""
    return torch.stack(list(views(x, dilations)), 2)


def iou_by_class(truth: np.ndarray, pred: np.ndarray, n_classes: int, ignore: int = IGNORE) -> list[float | None]:
    """Per-class IoU counted pixel by pixel with boolean masks (None: a class in neither truth nor prediction);
    labelled pixels predicted outside 0..n-1 are wrong for their class."""
    valid = truth != ignore
    out = []
    for c in range(n_classes):
        t, p = (truth == c) & valid, (pred == c) & valid
        union = (t | p).sum()
        out.append(float((t & p).sum() / union) if union else None)
    return out


def tile_georef(attrs: Mapping, index: int) -> tuple[str | None, tuple | None]:
    """CRS and affine transform (a, b, c, d, e, f) of tile ``index`` of a tile store, from its attributes."""
    tiles = attrs["tiles"]
    transform = tiles["transform"][index]
    return tiles["crs"][index], (tuple(transform) if transform is not None else None)
