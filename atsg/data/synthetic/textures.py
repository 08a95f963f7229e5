"""Noise fields and shading helpers for the procedural scenes (numpy + scipy, vectorised)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Zero-mean, unit-std noise whose features are about ``scale`` pixels across."""
    h, w = shape
    if scale <= 1.5:
        field = rng.standard_normal(shape).astype(np.float32)
    else:
        small = (max(2, int(np.ceil(h / scale)) + 2), max(2, int(np.ceil(w / scale)) + 2))
        coarse = rng.standard_normal(small).astype(np.float32)
        field = ndimage.zoom(coarse, (h / (small[0] - 2), w / (small[1] - 2)), order=3)[:h, :w]
        if field.shape != shape:  # zoom rounding: pad by edge values
            field = np.pad(field, ((0, h - field.shape[0]), (0, w - field.shape[1])), mode="edge")
    field -= field.mean()
    std = field.std()
    return field / std if std > 0 else field


def fractal_noise(
    rng: np.random.Generator, shape: tuple[int, int], scales=(2, 6, 20, 60), persistence: float = 0.6
) -> np.ndarray:
    """Sum of octaves of smooth noise, unit std; fine scales weigh less by ``persistence``."""
    total = np.zeros(shape, np.float32)
    weight = 1.0
    for scale in sorted(scales, reverse=True):
        total += weight * smooth_noise(rng, shape, scale)
        weight *= persistence
    return total / total.std()


def cast_shadows(height: np.ndarray, sun: tuple[float, float], slope: float, max_steps: int) -> np.ndarray:
    """Boolean shadow mask of a height field lit from direction ``sun`` (unit (dy, dx) towards the sun).

    A pixel is shadowed when some pixel k steps towards the sun is higher than
    it by more than k * slope (the sun's elevation as height per pixel).
    """
    shadow = np.zeros(height.shape, bool)
    h, w = height.shape
    dy, dx = sun
    for k in range(1, max_steps + 1):
        oy, ox = int(round(dy * k)), int(round(dx * k))
        if abs(oy) >= h or abs(ox) >= w:
            break
        # source[p] = height[p + (oy, ox)] (the pixel towards the sun)
        src = np.full_like(height, -np.inf)
        ys, yd = (slice(oy, None), slice(0, h - oy)) if oy >= 0 else (slice(0, h + oy), slice(-oy, None))
        xs, xd = (slice(ox, None), slice(0, w - ox)) if ox >= 0 else (slice(0, w + ox), slice(-ox, None))
        src[yd, xd] = height[ys, xs]
        shadow |= src - height > k * slope
    return shadow
