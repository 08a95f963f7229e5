"""City blocks and streets: how objects are arranged in a synthetic scene."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import objects as obj
from .canvas import CLUTTER, IMPERVIOUS, LOW_VEG, Material, Region

GRASS = Material((0.36, 0.45, 0.22), fine=0.08, mid=0.08, coarse=0.10)
DRY_GRASS = Material((0.50, 0.50, 0.30), fine=0.09, mid=0.08, coarse=0.10)
ASPHALT = Material((0.34, 0.34, 0.35), fine=0.06, mid=0.05, coarse=0.07)
SIDEWALK = Material((0.58, 0.57, 0.55), fine=0.05, mid=0.03, coarse=0.04)
MARKING = Material((0.90, 0.90, 0.88), fine=0.02, mid=0.0, coarse=0.0)
SOIL = Material((0.47, 0.39, 0.31), fine=0.10, mid=0.09, coarse=0.10)
SAND = Material((0.70, 0.63, 0.48), fine=0.06, mid=0.05, coarse=0.05)
CAR_LENGTH, CAR_WIDTH = 27.0, 12.0


@dataclass(frozen=True)
class Road:
    centre: float
    width: float
    sidewalk: float

    @property
    def outer(self) -> tuple[float, float]:
        half = self.width / 2 + self.sidewalk
        return self.centre - half, self.centre + half


def road_positions(rng: np.random.Generator, extent: int, spacing: tuple[float, float]) -> list[Road]:
    roads, pos = [], rng.uniform(-0.2, 0.7) * spacing[0]
    while pos < extent + 0.3 * spacing[0]:
        width = rng.uniform(30, 50)
        roads.append(Road(pos, width, rng.uniform(6, 12)))
        pos += rng.uniform(*spacing)
    return roads


def blocks_between(roads_x: list[Road], roads_y: list[Road], extent: int):
    """Block rectangles (y0, y1, x0, x1) left between the streets."""

    def gaps(roads):
        edges = [-60.0] + [e for r in roads for e in r.outer] + [extent + 60.0]
        return [(edges[i], edges[i + 1]) for i in range(0, len(edges), 2) if edges[i + 1] - edges[i] > 20]

    return [(y0, y1, x0, x1) for y0, y1 in gaps(roads_y) for x0, x1 in gaps(roads_x)]


def draw_vertical_roads(region: Region, roads: list[Road], crossings: list[Road]) -> None:
    """Sidewalks, asphalt, dashed centre line, zebra crossings and cars of roads along y."""
    rng = region.rng
    for road in roads:
        lo, hi = road.outer
        region.rect(IMPERVIOUS, SIDEWALK.jitter(rng, 0.04), 0, region.h, lo, hi)
        c, half = road.centre, road.width / 2
        region.rect(IMPERVIOUS, ASPHALT.jitter(rng, 0.06), 0, region.h, c - half, c + half)
        blocked = [(r.outer[0] - 4, r.outer[1] + 4) for r in crossings]
        for y in np.arange(rng.uniform(0, 30), region.h, 32.0):
            if not any(a - 16 < y < b for a, b in blocked):
                region.rect(IMPERVIOUS, MARKING, y, y + 16, c - 1, c + 1)
        for a, _ in blocked:
            if rng.random() < 0.35:  # zebra crossing before the junction
                for x in np.arange(c - half + 3, c + half - 3, 6.0):
                    region.rect(IMPERVIOUS, MARKING, a - 14, a - 3, x, x + 3)
        lanes = [(c - half / 2, 0.006), (c + half / 2, 0.006)]
        if road.width > 38:  # parking along both kerbs
            lanes += [(c - half + CAR_WIDTH / 2 + 1, 0.015), (c + half - CAR_WIDTH / 2 - 1, 0.015)]
        if rng.random() < 0.35:  # a quiet street: no traffic, no parking
            continue
        for x, density in lanes:
            y = rng.uniform(0, 60)
            while y < region.h:
                if not any(a - CAR_LENGTH < y < b + CAR_LENGTH for a, b in blocked) and rng.random() < density * 30:
                    obj.car(
                        region,
                        y,
                        x + rng.normal(0, 0.8),
                        CAR_LENGTH * rng.uniform(0.9, 1.15),
                        CAR_WIDTH * rng.uniform(0.92, 1.08),
                        along_x=False,
                    )
                y += CAR_LENGTH + rng.exponential(1.0 / density)


def street_trees(region: Region, roads: list[Road], probability: float) -> None:
    rng = region.rng
    for road in roads:
        if rng.random() > probability:
            continue
        for side in road.outer:
            y = rng.uniform(0, 40)
            while y < region.h:
                obj.tree(region, y, side + rng.normal(0, 2), rng.uniform(10, 18), rng.uniform(10, 17))
                y += rng.uniform(28, 60)


def residential(region: Region) -> None:
    """Rows of houses with gable roofs facing the streets, driveways, gardens and trees."""
    rng = region.rng
    r = region if region.w >= region.h else region.T
    r.paint(LOW_VEG, GRASS.jitter(rng, 0.06))
    rows = [(0, r.h / 2, True), (r.h / 2, r.h, False)] if r.h > 150 else [(0, r.h, True)]
    for y0, y1, street_top in rows:
        n = max(1, int(round(r.w / rng.uniform(70, 110))))
        lot_w = r.w / n
        for i in range(n):
            lot = r.sub(y0, y1, i * lot_w, (i + 1) * lot_w)
            if lot is None or lot.h < 30 or lot.w < 30:
                continue
            lot = lot if street_top else _flip_y(lot)
            _house_lot(lot)


def _flip_y(region: Region) -> Region:
    return Region(
        region.lab[::-1],
        region.img[::-1],
        region.height[::-1],
        region.fine[::-1],
        region.mid[::-1],
        region.coarse[::-1],
        (-region.sun[0], region.sun[1]),
        region.rng,
    )


def _house_lot(lot: Region) -> None:
    """One lot, street at its top edge."""
    rng = lot.rng
    if rng.random() < 0.3:
        lot.paint(LOW_VEG, DRY_GRASS.jitter(rng, 0.05))
    hw = lot.w * rng.uniform(0.55, 0.85)
    hd = min(lot.h * rng.uniform(0.4, 0.65), rng.uniform(45, 85))
    setback = rng.uniform(5, 16)
    hx = rng.uniform(3, max(4, lot.w - hw - 3))
    if rng.random() < 0.5:  # driveway beside the house with a car on it
        dx = hx + hw + 2 if hx + hw + 16 < lot.w else max(1, hx - 16)
        lot.rect(IMPERVIOUS, obj.PAVING.jitter(rng, 0.08), 0, setback + hd, dx, dx + 14)
        if rng.random() < 0.5:
            obj.car(lot, setback + hd / 2, dx + 7, CAR_LENGTH, CAR_WIDTH, along_x=False)
    if rng.random() < 0.45:  # terrace behind the house
        lot.rect(
            IMPERVIOUS,
            obj.PAVING.jitter(rng, 0.1),
            setback + hd,
            setback + hd + rng.uniform(8, 16),
            hx + 3,
            hx + hw * rng.uniform(0.4, 0.9),
        )
    roof_kind = rng.choice(list(obj.ROOFS))
    if rng.random() < 0.78:
        obj.gable_roof(lot, setback, setback + hd, hx, hx + hw, obj.ROOFS[roof_kind].jitter(rng), rng.uniform(9, 15))
    else:
        flat = obj.FLAT_ROOFS[rng.choice(["light", "grey", "dark", "gravel"])]
        obj.flat_roof(lot, setback, setback + hd, hx, hx + hw, flat.jitter(rng), rng.uniform(8, 13))
    back = setback + hd + 10
    if back < lot.h - 8:
        if rng.random() < 0.12:  # garden shed or garage
            obj.flat_roof(
                lot, lot.h - 22, lot.h - 4, lot.w - 24, lot.w - 4, obj.FLAT_ROOFS["grey"].jitter(rng), rng.uniform(4, 6)
            )
        if rng.random() < 0.08:  # swimming pool / garden water (clutter)
            lot.rect(CLUTTER, obj.POOL, back, min(lot.h - 4, back + 14), 6, min(lot.w - 6, 32))
        if rng.random() < 0.25:  # garden clutter: compost, storage, bare beds
            cy, cx = rng.uniform(back, lot.h - 6), rng.uniform(4, lot.w - 16)
            lot.rect(CLUTTER, SOIL.jitter(rng, 0.1), cy, cy + rng.uniform(6, 16), cx, cx + rng.uniform(8, 20))
        for _ in range(rng.integers(1, 7)):
            obj.tree(lot, rng.uniform(back - 6, lot.h), rng.uniform(0, lot.w), rng.uniform(8, 20), rng.uniform(8, 18))


def commercial(region: Region) -> None:
    """One or two large flat-roof buildings and a parking lot with cars; a few trees."""
    rng = region.rng
    r = region if region.w >= region.h else region.T
    r.paint(IMPERVIOUS, obj.PAVING.jitter(rng, 0.06))
    depth = r.h * rng.uniform(0.45, 0.7)
    n = 1 if r.w < 260 or rng.random() < 0.5 else 2
    for i in range(n):
        x0 = i * r.w / n + rng.uniform(4, 14)
        x1 = (i + 1) * r.w / n - rng.uniform(4, 14)
        roof = obj.FLAT_ROOFS[rng.choice(list(obj.FLAT_ROOFS))].jitter(rng)
        obj.flat_roof(r, rng.uniform(4, 12), depth, x0, x1, roof, rng.uniform(14, 28))
    lot = r.sub(depth + 6, r.h - 4, 4, r.w - 4)
    if lot is not None and lot.h > 40:
        obj.parking_lot(lot, CAR_LENGTH, CAR_WIDTH, rng.uniform(0.2, 0.6))
    verge = r.sub(r.h - 10, r.h, 0, r.w)
    if verge is not None and rng.random() < 0.6:
        verge.paint(LOW_VEG, GRASS.jitter(rng, 0.06))
        for x in np.arange(rng.uniform(5, 30), r.w, rng.uniform(30, 60)):
            obj.tree(r, r.h - 5, x, rng.uniform(7, 12), rng.uniform(8, 13))


def lawn(region: Region) -> None:
    """Plain grass (slivers of blocks at the canvas edge)."""
    region.paint(LOW_VEG, GRASS.jitter(region.rng, 0.08))


def park(region: Region) -> None:
    """Lawns, tree groups, footpaths, sometimes a pond or a playground."""
    rng = region.rng
    region.paint(LOW_VEG, GRASS.jitter(rng, 0.08))
    for _ in range(rng.integers(1, 3)):  # footpaths across the park
        if rng.random() < 0.5:
            y = rng.uniform(10, region.h - 10)
            region.rect(IMPERVIOUS, SAND.jitter(rng, 0.05), y, y + rng.uniform(5, 8), 0, region.w)
        else:
            x = rng.uniform(10, region.w - 10)
            region.rect(IMPERVIOUS, SAND.jitter(rng, 0.05), 0, region.h, x, x + rng.uniform(5, 8))
    if rng.random() < 0.55:
        obj.pond(
            region,
            rng.uniform(0.3, 0.7) * region.h,
            rng.uniform(0.3, 0.7) * region.w,
            rng.uniform(0.12, 0.25) * region.h,
            rng.uniform(0.12, 0.25) * region.w,
        )
    if rng.random() < 0.25 and min(region.h, region.w) > 60:  # playground sand (clutter)
        y, x = rng.uniform(0, region.h - 40), rng.uniform(0, region.w - 40)
        region.rect(CLUTTER, SAND.jitter(rng, 0.1), y, y + rng.uniform(20, 40), x, x + rng.uniform(20, 40))
    for _ in range(rng.integers(3, 8)):
        obj.tree_group(
            region,
            rng.uniform(0, region.h),
            rng.uniform(0, region.w),
            rng.uniform(12, 40),
            int(rng.integers(5, 20)),
            r_range=(9, 22),
            h_range=(9, 20),
        )


def industrial(region: Region) -> None:
    """Bare ground and containers (clutter), warehouses, a concrete yard."""
    rng = region.rng
    r = region if region.w >= region.h else region.T
    r.paint(CLUTTER, SOIL.jitter(rng, 0.08))
    yard = r.sub(0, r.h * rng.uniform(0.3, 0.5), 0, r.w)
    if yard is not None:
        yard.paint(IMPERVIOUS, obj.PAVING.jitter(rng, 0.08))
    wx = rng.uniform(0.35, 0.6) * r.w
    obj.flat_roof(r, 6, r.h * rng.uniform(0.35, 0.55), 6, wx, obj.FLAT_ROOFS["metal"].jitter(rng), rng.uniform(10, 18))
    obj.containers(r, r.h * 0.6, r.h - 6, wx + 10, r.w - 6, rng.uniform(26, 36), rng.uniform(9, 12))
    if rng.random() < 0.5:
        obj.tree_group(r, r.h - 10, rng.uniform(0, r.w), 15, int(rng.integers(2, 6)))


def apartments(region: Region) -> None:
    """A perimeter block: rows of long buildings along the streets around a green courtyard."""
    rng = region.rng
    region.paint(LOW_VEG, GRASS.jitter(rng, 0.06))
    depth = rng.uniform(35, 55)
    gable = rng.random() < 0.6
    roof = (
        obj.ROOFS[rng.choice(list(obj.ROOFS))]
        if gable
        else obj.FLAT_ROOFS[rng.choice(["light", "grey", "dark", "gravel"])]
    ).jitter(rng)
    draw = obj.gable_roof if gable else obj.flat_roof
    h = rng.uniform(14, 24)
    sides = [
        (0, depth, 0, region.w),
        (region.h - depth, region.h, 0, region.w),
        (depth, region.h - depth, 0, depth),
        (depth, region.h - depth, region.w - depth, region.w),
    ]
    for y0, y1, x0, x1 in sides:
        if rng.random() < 0.85:  # a gap now and then: a passage into the courtyard
            along_x = (x1 - x0) >= (y1 - y0)
            n = max(1, int((x1 - x0 if along_x else y1 - y0) // rng.uniform(60, 140)))
            for i in range(n):  # separate houses of one row, each its own roof
                if along_x:
                    a, b = x0 + i * (x1 - x0) / n, x0 + (i + 1) * (x1 - x0) / n
                    draw(region, y0 + 3, y1 - 3, a + 1, b - 1, roof.jitter(rng, 0.03), h)
                else:
                    a, b = y0 + i * (y1 - y0) / n, y0 + (i + 1) * (y1 - y0) / n
                    draw(region, a + 1, b - 1, x0 + 3, x1 - 3, roof.jitter(rng, 0.03), h)
    inner = region.sub(depth + 8, region.h - depth - 8, depth + 8, region.w - depth - 8)
    if inner is not None and inner.h > 30 and inner.w > 30:
        if rng.random() < 0.4:
            obj.parking_lot(inner, CAR_LENGTH, CAR_WIDTH, rng.uniform(0.2, 0.6))
        for _ in range(rng.integers(1, 5)):
            obj.tree_group(
                inner, rng.uniform(0, inner.h), rng.uniform(0, inner.w), 14, int(rng.integers(2, 8)), r_range=(9, 20)
            )


BLOCK_TYPES = {
    "apartments": apartments,
    "residential": residential,
    "commercial": commercial,
    "park": park,
    "industrial": industrial,
}
