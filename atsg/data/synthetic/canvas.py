"""A drawable region of a synthetic scene: semantic labels, colours and heights, with textures.

A :class:`Region` is a set of numpy *views* (label, image, height, noise fields)
of the scene canvas, so a block can be drawn in its own coordinates, and drawn
transposed (``Region.T``) to reuse one layout for both street orientations.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

# Semantic vocabulary of the generator; the config maps these names to class indices.
SEMANTIC = ("clutter", "impervious_surface", "building", "low_vegetation", "tree", "car")
CLUTTER, IMPERVIOUS, BUILDING, LOW_VEG, TREE, CAR = range(len(SEMANTIC))


@dataclass(frozen=True)
class Material:
    """Base RGB (0..1) and the amplitudes of fine, medium and coarse texture noise."""

    rgb: tuple[float, float, float]
    fine: float = 0.05
    mid: float = 0.04
    coarse: float = 0.04

    def jitter(self, rng: np.random.Generator, amount: float = 0.08) -> Material:
        """The same material with its colour varied per object."""
        scale = 1.0 + amount * rng.standard_normal()
        tint = 1.0 + 0.3 * amount * rng.standard_normal(3)
        rgb = tuple(float(np.clip(c * scale * t, 0.0, 1.0)) for c, t in zip(self.rgb, tint))
        return replace(self, rgb=rgb)


@dataclass
class Region:
    lab: np.ndarray  # (h, w) uint8 semantic ids
    img: np.ndarray  # (h, w, 3) float32 colours
    height: np.ndarray  # (h, w) float32 heights in shadow-pixel units
    fine: np.ndarray  # (h, w) texture noise fields (unit std)
    mid: np.ndarray
    coarse: np.ndarray
    sun: tuple[float, float]  # unit (dy, dx) towards the sun, in this region's coordinates
    rng: np.random.Generator

    @property
    def h(self) -> int:
        return self.lab.shape[0]

    @property
    def w(self) -> int:
        return self.lab.shape[1]

    @property
    def T(self) -> Region:
        return Region(
            self.lab.T,
            self.img.transpose(1, 0, 2),
            self.height.T,
            self.fine.T,
            self.mid.T,
            self.coarse.T,
            (self.sun[1], self.sun[0]),
            self.rng,
        )

    def sub(self, y0: float, y1: float, x0: float, x1: float) -> Region | None:
        """The part [y0, y1) x [x0, x1) clipped to this region, or None if empty."""
        ya, yb = max(0, int(round(y0))), min(self.h, int(round(y1)))
        xa, xb = max(0, int(round(x0))), min(self.w, int(round(x1)))
        if yb <= ya or xb <= xa:
            return None
        s = (slice(ya, yb), slice(xa, xb))
        return Region(
            self.lab[s], self.img[s], self.height[s], self.fine[s], self.mid[s], self.coarse[s], self.sun, self.rng
        )

    def texture(self, material: Material) -> np.ndarray:
        mod = material.fine * self.fine + material.mid * self.mid + material.coarse * self.coarse
        return np.asarray(material.rgb, np.float32)[None, None, :] * (1.0 + mod[..., None])

    def paint(
        self,
        cls: int,
        material: Material,
        mask: np.ndarray | None = None,
        height: float | np.ndarray | None = None,
        shade: np.ndarray | float = 1.0,
    ) -> None:
        """Set class, textured colour (times ``shade``) and height where ``mask`` (everywhere if None)."""
        colour = self.texture(material) * (
            np.asarray(shade, np.float32)[..., None] if np.ndim(shade) else np.float32(shade)
        )
        if mask is None:
            self.lab[...] = cls
            self.img[...] = colour
            if height is not None:
                self.height[...] = height
            return
        self.lab[mask] = cls
        self.img[mask] = colour[mask]
        if height is not None:
            self.height[mask] = height[mask] if np.ndim(height) else height

    def rect(
        self, cls: int, material: Material, y0: float, y1: float, x0: float, x1: float, height: float | None = None
    ) -> Region | None:
        """Paint an axis-aligned rectangle; return its sub-region (None if outside)."""
        part = self.sub(y0, y1, x0, x1)
        if part is not None:
            part.paint(cls, material, height=height)
        return part

    def disk_mask(self, cy: float, cx: float, r: float, roughness: float = 0.0):
        """(sub-region, mask, dy, dx) of a roughly round blob, or None when outside."""
        part = self.sub(cy - r - 2, cy + r + 3, cx - r - 2, cx + r + 3)
        if part is None:
            return None
        y0, x0 = max(0, int(round(cy - r - 2))), max(0, int(round(cx - r - 2)))
        yy, xx = np.mgrid[0 : part.h, 0 : part.w].astype(np.float32)
        dy, dx = (yy + y0 - cy) / r, (xx + x0 - cx) / r
        mask = dy * dy + dx * dx + roughness * part.mid < 1.0
        return part, mask, dy, dx
