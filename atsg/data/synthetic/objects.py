"""Objects of the synthetic scenes: roofs, cars, trees, parking lots, ponds, containers."""

from __future__ import annotations

import numpy as np

from .canvas import BUILDING, CAR, CLUTTER, IMPERVIOUS, TREE, Material, Region

ROOFS = {
    "terracotta": Material((0.58, 0.30, 0.22), fine=0.07, mid=0.05, coarse=0.03),
    "brown": Material((0.42, 0.30, 0.25), fine=0.07, mid=0.05, coarse=0.03),
    "slate": Material((0.30, 0.31, 0.34), fine=0.06, mid=0.04, coarse=0.03),
    "anthracite": Material((0.22, 0.22, 0.24), fine=0.06, mid=0.04, coarse=0.03),
}
FLAT_ROOFS = {
    "light": Material((0.72, 0.71, 0.68), fine=0.05, mid=0.05, coarse=0.04),
    "grey": Material((0.50, 0.50, 0.50), fine=0.06, mid=0.05, coarse=0.04),
    "dark": Material((0.27, 0.27, 0.28), fine=0.06, mid=0.04, coarse=0.04),
    "gravel": Material((0.55, 0.52, 0.47), fine=0.14, mid=0.05, coarse=0.03),
    "metal": Material((0.58, 0.62, 0.66), fine=0.03, mid=0.03, coarse=0.02),
}
CAR_PAINT = [
    ((0.85, 0.86, 0.87), 0.25),
    ((0.62, 0.63, 0.65), 0.2),
    ((0.10, 0.10, 0.11), 0.2),
    ((0.16, 0.22, 0.40), 0.1),
    ((0.55, 0.10, 0.09), 0.1),
    ((0.35, 0.36, 0.37), 0.1),
    ((0.75, 0.70, 0.55), 0.05),
]
CANOPY = Material((0.17, 0.27, 0.12), fine=0.22, mid=0.10, coarse=0.06)
PAVING = Material((0.40, 0.40, 0.40), fine=0.05, mid=0.04, coarse=0.05)
WATER = Material((0.11, 0.17, 0.19), fine=0.02, mid=0.03, coarse=0.03)
POOL = Material((0.35, 0.66, 0.78), fine=0.02, mid=0.02, coarse=0.0)
CONTAINER_PAINT = [(0.62, 0.16, 0.12), (0.15, 0.30, 0.55), (0.20, 0.45, 0.25), (0.75, 0.50, 0.12), (0.55, 0.55, 0.57)]


def gable_roof(region: Region, y0, y1, x0, x1, material: Material, height: float) -> None:
    """A building whose ridge runs along its longer side; the sunlit roof half is brighter."""
    part = region.sub(y0, y1, x0, x1)
    if part is None or part.h < 4 or part.w < 4:
        return
    along_x = part.w >= part.h
    p = part if along_x else part.T
    depth = p.h
    yy = np.arange(depth, dtype=np.float32)[:, None] + 0.5
    mid = depth / 2.0
    facing = np.where(yy < mid, -1.0, 1.0)  # roof normal: -1 up (dy<0), +1 down
    shade = 1.0 + 0.32 * facing * p.sun[0]
    stripes = 1.0 + 0.05 * np.sin(np.arange(p.w, dtype=np.float32) * (2 * np.pi / 4.5))[None, :]
    shade = shade * stripes
    ridge = np.abs(yy - mid) < 1.0
    shade = np.where(ridge, 0.75, shade)
    edge = np.zeros((p.h, p.w), bool)
    edge[[0, -1], :] = True
    edge[:, [0, -1]] = True
    shade = np.where(edge, shade * 0.8, shade)
    roof_height = height + 0.45 * depth * (1.0 - np.abs(yy - mid) / mid)
    p.paint(
        BUILDING,
        material,
        height=np.broadcast_to(roof_height, (p.h, p.w)).copy(),
        shade=np.broadcast_to(shade, (p.h, p.w)),
    )


def flat_roof(region: Region, y0, y1, x0, x1, material: Material, height: float) -> None:
    """A flat roof with a parapet and rooftop units that cast their own small shadows."""
    part = region.sub(y0, y1, x0, x1)
    if part is None or part.h < 4 or part.w < 4:
        return
    rng = part.rng
    shade = np.ones((part.h, part.w), np.float32)
    shade[:2, :] = shade[-2:, :] = 1.12
    shade[:, :2] = shade[:, -2:] = 1.12
    part.paint(BUILDING, material, height=height, shade=shade)
    for _ in range(rng.integers(0, 2 + (part.h * part.w) // 2500)):
        uh, uw = rng.integers(4, 12, size=2)
        if part.h <= uh + 6 or part.w <= uw + 6:
            continue
        uy, ux = rng.integers(3, part.h - uh - 2), rng.integers(3, part.w - uw - 2)
        unit = Material((0.60, 0.60, 0.62) if rng.random() < 0.6 else (0.30, 0.30, 0.32), 0.03, 0.02, 0.0)
        part.rect(BUILDING, unit, uy, uy + uh, ux, ux + uw, height=height + rng.uniform(2, 4))


def car(region: Region, cy: float, cx: float, length: float, width: float, along_x: bool) -> None:
    """A car centred at (cy, cx): body, windscreen and rear window, lighter roof."""
    rng = region.rng
    colours, weights = zip(*CAR_PAINT)
    rgb = colours[rng.choice(len(colours), p=np.asarray(weights) / sum(weights))]
    body = Material(rgb, fine=0.03, mid=0.02, coarse=0.0).jitter(rng, 0.05)
    hl, hw = (length / 2, width / 2) if along_x else (width / 2, length / 2)
    part = region.sub(cy - hw, cy + hw, cx - hl, cx + hl)
    if part is None:
        return
    p = part if along_x else part.T
    t = (np.arange(p.w, dtype=np.float32) + 0.5) / p.w  # position along the car
    if rng.random() < 0.5:
        t = t[::-1]
    shade = np.ones((p.h, p.w), np.float32)
    glass = ((t > 0.22) & (t < 0.36)) | ((t > 0.74) & (t < 0.84))
    shade[:, glass] = 0.12 / max(float(np.mean(rgb)), 0.12)
    shade[:, (t >= 0.36) & (t <= 0.74)] *= 1.08
    shade[[0, -1], :] *= 0.8
    p.paint(CAR, body, height=2.5, shade=shade)


def tree(region: Region, cy: float, cx: float, r: float, height: float) -> None:
    """A roughly round crown with bumpy texture, lit from the sun side, dome-shaped in height."""
    found = region.disk_mask(cy, cx, r, roughness=0.18)
    if found is None:
        return
    part, mask, dy, dx = found
    if not mask.any():
        return
    rng = part.rng
    dome = np.sqrt(np.clip(1.0 - dy * dy - dx * dx, 0.0, 1.0))
    light = 1.0 + 0.35 * (dy * part.sun[0] + dx * part.sun[1]) * (1.0 - 0.5 * dome)
    shade = light * (0.85 + 0.25 * dome)
    crown = CANOPY.jitter(rng, 0.12)
    part.paint(TREE, crown, mask=mask, height=height * (0.55 + 0.45 * dome), shade=shade)


def tree_group(
    region: Region, cy: float, cx: float, spread: float, count: int, r_range=(7, 16), h_range=(8, 18)
) -> None:
    rng = region.rng
    for _ in range(count):
        tree(
            region, cy + rng.normal(0, spread), cx + rng.normal(0, spread), rng.uniform(*r_range), rng.uniform(*h_range)
        )


def parking_lot(region: Region, car_length: float, car_width: float, occupancy: float) -> None:
    """Rows of stalls (perpendicular parking) along x with painted lines, partly filled with cars."""
    region.paint(IMPERVIOUS, PAVING.jitter(region.rng, 0.06))
    rng = region.rng
    stall_d, stall_w, aisle = car_length + 6, car_width + 4, car_length
    y = 2.0
    row_pattern = [stall_d, stall_d, aisle]  # two facing rows, then an aisle
    k = 0
    line = Material((0.88, 0.88, 0.86), 0.02, 0.0, 0.0)
    while y + stall_d <= region.h - 2:
        depth = row_pattern[k % 3]
        if depth == stall_d:
            for x in np.arange(3.0, region.w - stall_w, stall_w):
                region.rect(IMPERVIOUS, line, y, y + stall_d, x, x + 1.2)
                if rng.random() < occupancy:
                    car(region, y + stall_d / 2, x + stall_w / 2 + 0.6, car_length, car_width, along_x=False)
        y += depth
        k += 1


def pond(region: Region, cy: float, cx: float, ry: float, rx: float) -> None:
    """An irregular water body (clutter, as Potsdam labels water)."""
    part = region.sub(cy - ry - 2, cy + ry + 3, cx - rx - 2, cx + rx + 3)
    if part is None:
        return
    y0, x0 = max(0, int(round(cy - ry - 2))), max(0, int(round(cx - rx - 2)))
    yy, xx = np.mgrid[0 : part.h, 0 : part.w].astype(np.float32)
    d = ((yy + y0 - cy) / ry) ** 2 + ((xx + x0 - cx) / rx) ** 2 + 0.35 * part.coarse
    part.paint(CLUTTER, WATER.jitter(part.rng, 0.1), mask=d < 1.0, shade=1.0 - 0.15 * (d < 0.5))


def containers(region: Region, y0, y1, x0, x1, length: float, width: float) -> None:
    """Rows of shipping containers (clutter)."""
    rng = region.rng
    y = y0
    while y + width <= y1:
        x = x0
        while x + length <= x1:
            if rng.random() < 0.75:
                rgb = CONTAINER_PAINT[rng.integers(len(CONTAINER_PAINT))]
                region.rect(
                    CLUTTER,
                    Material(rgb, 0.03, 0.03, 0.0).jitter(rng, 0.06),
                    y,
                    y + width - 1,
                    x,
                    x + length - 1,
                    height=rng.uniform(3, 6),
                )
            x += length + rng.uniform(1, 4)
        y += width + rng.uniform(2, 10)
