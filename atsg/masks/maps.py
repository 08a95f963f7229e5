"""Object and boundary maps from class-agnostic masks (METHOD.md, SAM guidance).

Masks are sorted by area (largest first); masks under ``min_area`` pixels are
skipped; at most ``max_objects`` are painted with ids 1..K, smaller ones drawn
over larger ones. The boundary map is the union of the thick boundaries of all
painted masks, and boundary pixels are removed from the object map (id 0).
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
from skimage.segmentation import find_boundaries


def object_and_boundary_maps(masks: Iterable[np.ndarray], shape: tuple[int, int], min_area: int,
                             max_objects: int) -> tuple[np.ndarray, np.ndarray]:
    """(objects (H, W) uint16 with ids 1..K, boundaries (H, W) uint8 0/1) from boolean masks."""
    kept = [m for m in masks if int(m.sum()) >= min_area]
    kept.sort(key=lambda m: int(m.sum()), reverse=True)
    kept = kept[:max_objects]
    objects = np.zeros(shape, np.uint16)
    boundaries = np.zeros(shape, bool)
    for k, mask in enumerate(kept, start=1):
        objects[mask] = k
        boundaries |= find_boundaries(mask, mode="thick")
    objects[boundaries] = 0
    return objects, boundaries.astype(np.uint8)


def segments_to_masks(segments: np.ndarray) -> list[np.ndarray]:
    """Boolean masks of the regions of a superpixel label image."""
    return [segments == v for v in np.unique(segments)]


def partition_maps(segments: np.ndarray, min_area: int, max_objects: int) -> tuple[np.ndarray, np.ndarray]:
    """``object_and_boundary_maps(segments_to_masks(segments), ...)`` for a partition (superpixels), vectorised.

    Segments do not overlap, so the ranking by area is one bincount, painting is
    one lookup, and the union of the kept segments' thick boundaries is: a pixel
    of a kept segment with a 4-neighbour of another segment, or a pixel with a
    4-neighbour in a kept segment other than its own.
    """
    values, inverse = np.unique(segments, return_inverse=True)
    inverse = inverse.reshape(segments.shape)
    areas = np.bincount(inverse.ravel(), minlength=len(values))
    order = np.argsort(-areas, kind="stable")
    order = order[areas[order] >= min_area][:max_objects]
    ids = np.zeros(len(values), np.uint16)
    ids[order] = np.arange(1, len(order) + 1, dtype=np.uint16)
    kept = ids > 0
    seg = inverse
    boundaries = np.zeros(segments.shape, bool)
    for axis in (0, 1):
        for shift in (1, -1):
            nb = np.roll(seg, shift, axis=axis)
            edge = [slice(None)] * 2
            edge[axis] = 0 if shift == 1 else -1
            nb[tuple(edge)] = seg[tuple(edge)]  # outside the image counts as the same segment
            differs = nb != seg
            boundaries |= differs & (kept[seg] | kept[nb])
    objects = ids[seg]
    objects[boundaries] = 0
    return objects, boundaries.astype(np.uint8)
