"""Object and boundary maps from class-agnostic masks (METHOD.md, SAM guidance).

Masks are sorted by area (largest first); masks under ``min_area`` pixels are
skipped; at most ``max_objects`` are painted with ids 1..K, smaller ones drawn
over larger ones. The boundary map is the union of the thick boundaries of every
mask (published SAMAug; ``painted_only``: of the painted masks alone), and boundary
pixels are removed from the object map (id 0).

``object_and_boundary_maps`` builds both maps in a few whole-stack operations;
the published construction (one ``find_boundaries`` per mask, in a Python loop)
is the reference in tests/oracles.py that tests and ``benchmarks/masks.py``
compare against.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _thick_boundaries(stack: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Union of the skimage "thick" boundaries of (K, H, W) bool masks: pixels with a 4-neighbour inside the
    image whose membership differs in any mask."""
    boundaries = np.zeros(shape, bool)
    if len(stack) == 0:
        return boundaries
    rows = (stack[:, 1:, :] != stack[:, :-1, :]).any(0)
    boundaries[1:] |= rows
    boundaries[:-1] |= rows
    cols = (stack[:, :, 1:] != stack[:, :, :-1]).any(0)
    boundaries[:, 1:] |= cols
    boundaries[:, :-1] |= cols
    return boundaries


def object_and_boundary_maps(
    masks: Sequence[np.ndarray], shape: tuple[int, int], min_area: int, max_objects: int, painted_only: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(objects (H, W) uint16 with ids 1..K, boundaries (H, W) uint8 0/1) from boolean masks.

    ``masks`` is a list of (H, W) masks or a (K, H, W) array, in the generator's order, which equal
    areas keep (a stable sort, as in the published loop). A skimage "thick" boundary of one mask is a
    pixel with a 4-neighbour inside the image on the other side of the mask's edge, so the union over
    the painted masks is: a pixel with a 4-neighbour whose membership differs in any painted mask, a
    few comparisons of the whole stack. A pixel's object id is the highest id among the painted masks
    that cover it (the smallest mask, drawn last).
    """
    areas = np.array([np.count_nonzero(m) for m in masks], np.int64)
    order = np.argsort(-areas, kind="stable")
    order = order[areas[order] >= min_area][:max_objects]
    if len(masks) == 0:
        return np.zeros(shape, np.uint16), np.zeros(shape, np.uint8)
    kept = np.stack([np.asarray(masks[i], bool) for i in order]) if len(order) else np.zeros((0, *shape), bool)
    dtype = np.uint8 if len(order) < 256 else np.uint16
    objects = np.zeros(shape, np.uint16)
    if len(order):
        objects = (kept.view(np.uint8) * np.arange(1, len(order) + 1, dtype=dtype)[:, None, None]).max(0)
    every = kept if painted_only else np.stack([np.asarray(m, bool) for m in masks])
    boundaries = _thick_boundaries(every, shape)
    objects[boundaries] = 0
    return objects.astype(np.uint16), boundaries.view(np.uint8)


def partition_maps(
    segments: np.ndarray, min_area: int, max_objects: int, painted_only: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """``object_and_boundary_maps`` of the masks of every segment, for a partition (superpixels), vectorised.

    Segments do not overlap, so the ranking by area is one bincount, painting is
    one lookup, and the union of the thick boundaries of every segment is every pixel with a 4-neighbour
    of another segment; of the kept segments only (``painted_only``): such a pixel of a kept segment, or a
    pixel with a 4-neighbour in a kept segment other than its own.
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
            boundaries |= (differs & (kept[seg] | kept[nb])) if painted_only else differs
    objects = ids[seg]
    objects[boundaries] = 0
    return objects, boundaries.astype(np.uint8)
