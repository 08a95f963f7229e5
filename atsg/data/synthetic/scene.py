"""One synthetic aerial scene: street grid, city blocks, trees, cast shadows, illumination, rotation."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy import ndimage

from ...errors import ConfigError
from . import blocks
from .canvas import SEMANTIC, Region
from .textures import cast_shadows, fractal_noise, smooth_noise

SHADOW_TINT = np.array([0.42, 0.45, 0.55], np.float32)  # shadows are darker and bluer (skylight)
NATIVE_GSD = 0.15
"""Metres per pixel at which the generator's object sizes are drawn; other GSDs resample the scene."""


def generate_scene(size: int, rng: np.random.Generator, block_weights: Mapping[str, float], gsd: float = NATIVE_GSD):
    """(image (size, size, 3) uint8, semantic labels (size, size) uint8 indexing ``SEMANTIC``) at ``gsd`` m/px."""
    native = max(32, int(round(size * gsd / NATIVE_GSD)))
    canvas = int(np.ceil(native * 1.45)) + 8
    shape = (canvas, canvas)
    lab = np.zeros(shape, np.uint8)
    img = np.zeros(shape + (3,), np.float32)
    height = np.zeros(shape, np.float32)
    azimuth = rng.uniform(0, 2 * np.pi)
    sun = (float(np.sin(azimuth)), float(np.cos(azimuth)))
    region = Region(
        lab,
        img,
        height,
        smooth_noise(rng, shape, 1.2),
        smooth_noise(rng, shape, 5.0),
        fractal_noise(rng, shape, scales=(25, 80, 200)),
        sun,
        rng,
    )

    spacing = (rng.uniform(250, 340), rng.uniform(420, 600))
    roads_x = blocks.road_positions(rng, canvas, spacing)
    roads_y = blocks.road_positions(rng, canvas, spacing)
    names = [n for n in blocks.BLOCK_TYPES if block_weights.get(n, 0) > 0]
    p = np.array([block_weights[n] for n in names], float)
    for y0, y1, x0, x1 in blocks.blocks_between(roads_x, roads_y, canvas):
        block = region.sub(y0, y1, x0, x1)
        if block is None:
            continue
        if min(block.h, block.w) < 48:  # a sliver at the canvas edge: grass
            blocks.lawn(block)
        else:
            blocks.BLOCK_TYPES[names[rng.choice(len(names), p=p / p.sum())]](block)
    blocks.draw_vertical_roads(region, roads_x, roads_y)
    blocks.draw_vertical_roads(region.T, roads_y, roads_x)
    blocks.street_trees(region, roads_x, 0.45)
    blocks.street_trees(region.T, roads_y, 0.45)

    elevation = rng.uniform(0.7, 1.3)  # height units per pixel of shadow
    shadow = cast_shadows(height, sun, slope=elevation, max_steps=int(40 / elevation))
    shadow = ndimage.uniform_filter(shadow.astype(np.float32), 2)  # soft penumbra
    img *= 1.0 - shadow[..., None] * (1.0 - SHADOW_TINT)

    angle = rng.uniform(-40, 40)
    img = ndimage.rotate(img, angle, axes=(1, 0), reshape=False, order=1, mode="reflect")
    lab = ndimage.rotate(lab, angle, axes=(1, 0), reshape=False, order=0, mode="nearest")
    off = (canvas - native) // 2
    img, lab = img[off : off + native, off : off + native], lab[off : off + native, off : off + native]
    if native != size:
        f = size / native
        img = ndimage.zoom(img, (f, f, 1), order=1, grid_mode=True, mode="nearest")[:size, :size]
        lab = ndimage.zoom(lab, (f, f), order=0, grid_mode=True, mode="nearest")[:size, :size]
    return _illuminate(img, rng), lab


def _illuminate(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Scene-wide brightness, colour cast, haze gradient, gamma, optics blur and sensor noise; to uint8."""
    h, w = img.shape[:2]
    gain = rng.uniform(0.85, 1.15) * rng.uniform(0.93, 1.07, size=3).astype(np.float32)
    gradient = 1.0 + 0.07 * smooth_noise(rng, (h, w), max(h, w) / 2)
    haze = rng.uniform(0.0, 0.06) * np.array([0.8, 0.9, 1.0], np.float32)
    out = img * gain * gradient[..., None] + haze
    out = np.clip(out, 0, 1) ** rng.uniform(0.9, 1.1)
    out = ndimage.gaussian_filter(out, sigma=(0.6, 0.6, 0))
    out += rng.normal(0, 0.012, size=out.shape).astype(np.float32)
    return np.clip(np.rint(out * 255), 0, 255).astype(np.uint8)


def to_class_indices(semantic: np.ndarray, classes: list[str]) -> np.ndarray:
    """Map the generator's semantic ids to the configured class list (every generator class must be there)."""
    lut = np.zeros(len(SEMANTIC), np.uint8)
    for i, name in enumerate(SEMANTIC):
        if name not in classes:
            raise ConfigError(
                f"config key dataset.classes: the synthetic preset draws '{name}', which is not in {classes}"
            )
        lut[i] = classes.index(name)
    return lut[semantic]
