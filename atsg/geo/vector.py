"""Polygons of a class map, block by block, into a GeoPackage: one feature per connected region of a class,
with its class index, name and area (map units squared), in the map's CRS.

Regions are traced in pixel coordinates (4-connected, as GDAL's polygonize). A region that touches an inner
block edge may go on in the next block: those pieces are kept and merged per class at the end; every other
region is written as soon as its block is traced, so memory holds a block and the regions crossing block
edges, never the whole map's polygons.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import shapely
from rasterio.features import shapes
from shapely.geometry import shape

from .windows import Block

logging.getLogger("pyogrio").setLevel(logging.WARNING)  # one INFO line per batch of features otherwise


class PolygonWriter:
    """Collects a class map's regions block by block and writes them to ``path`` (a GeoPackage, layer
    ``layer``). ``simplify``: Douglas-Peucker tolerance in map units (0: exact pixel edges); regions smaller than
    ``min_area`` (map units squared) are dropped. Written under a hidden name, renamed by :meth:`close`."""

    def __init__(
        self,
        path: str | Path,
        classes: Sequence[str],
        transform,
        crs,
        height: int,
        width: int,
        ignore: int,
        simplify: float = 0.0,
        min_area: float = 0.0,
        layer: str = "classes",
        batch: int = 20000,
    ):
        self.path = Path(path)
        self.tmp = self.path.parent / f".{self.path.name}.writing.gpkg"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp.unlink(missing_ok=True)
        self.classes, self.crs, self.layer = list(classes), crs, layer
        self.height, self.width, self.ignore = height, width, ignore
        self.simplify, self.min_area, self.batch = simplify, min_area, batch
        # pixel (col, row) -> map (x, y): shapely's affine_transform takes [a, b, d, e, xoff, yoff]
        t = tuple(transform)[:6] if transform is not None else (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
        self.affine = [t[0], t[1], t[3], t[4], t[2], t[5]]
        self.pending: list = []
        self.edges: dict[int, list] = defaultdict(list)
        self.written = 0
        self.created = False

    def add(self, block: Block, labels: np.ndarray) -> None:
        """Trace the regions of one block's labels ((rows, cols) uint8)."""
        inner = (
            block.row > 0,
            block.col > 0,
            block.row + block.rows < self.height,
            block.col + block.cols < self.width,
        )
        offset = (1.0, 0.0, float(block.col), 0.0, 1.0, float(block.row))
        for geom, value in shapes(labels, mask=labels != self.ignore, connectivity=4, transform=offset):
            poly = shape(geom)
            x0, y0, x1, y1 = poly.bounds
            touches = (
                (inner[0] and y0 <= block.row)
                or (inner[1] and x0 <= block.col)
                or (inner[2] and y1 >= block.row + block.rows)
                or (inner[3] and x1 >= block.col + block.cols)
            )
            if touches:
                self.edges[int(value)].append(poly)
            else:
                self._emit(int(value), poly)
        self._flush(False)

    def _emit(self, value: int, poly) -> None:
        geom = shapely.affinity.affine_transform(poly, self.affine)
        if self.simplify > 0:
            geom = geom.simplify(self.simplify, preserve_topology=True)
        if geom.is_empty or geom.area < self.min_area:
            return
        self.pending.append((value, geom))

    def _flush(self, force: bool) -> None:
        if not self.pending or (not force and len(self.pending) < self.batch):
            return
        import pyogrio.raw

        values = np.array([v for v, _ in self.pending], np.int32)
        geoms = [shapely.geometry.MultiPolygon([g]) if g.geom_type == "Polygon" else g for _, g in self.pending]
        names = np.array([self.classes[v] if v < len(self.classes) else str(v) for v in values], object)
        areas = np.array([g.area for g in geoms], np.float64)
        pyogrio.raw.write(
            self.tmp,
            np.array(shapely.to_wkb(geoms), object),
            [values, names, areas],
            ["class", "name", "area"],
            layer=self.layer,
            driver="GPKG",
            geometry_type="MultiPolygon",
            crs=self.crs,
            append=self.created,
        )
        self.created = True
        self.written += len(self.pending)
        self.pending = []

    def close(self, metadata: Mapping[str, str] | None = None) -> int:
        """Merge the regions cut by block edges, write what is left and move the file into place; the number of
        features written."""
        for value, parts in sorted(self.edges.items()):
            merged = shapely.union_all(parts)
            for poly in getattr(merged, "geoms", [merged]):
                self._emit(value, poly)
            self._flush(False)
        self.edges.clear()
        self._flush(True)
        if not self.created:
            self._write_empty()
        os.replace(self.tmp, self.path)
        return self.written

    def _write_empty(self) -> None:
        """A map without any labelled pixel: an empty layer, so the file still opens."""
        import pyogrio.raw

        pyogrio.raw.write(
            self.tmp,
            np.array([], object),
            [np.array([], np.int32), np.array([], object), np.array([], np.float64)],
            ["class", "name", "area"],
            layer=self.layer,
            driver="GPKG",
            geometry_type="MultiPolygon",
            crs=self.crs,
        )
        self.created = True

    def abort(self) -> None:
        self.tmp.unlink(missing_ok=True)


def rasterise(path: str | Path, transform, height: int, width: int, fill: int, layer: str = "classes") -> np.ndarray:
    """(height, width) uint8 class map of a GeoPackage written by :class:`PolygonWriter` (for checks)."""
    import pyogrio.raw
    from rasterio.features import rasterize

    _, _, geometry, fields = pyogrio.raw.read(path, layer=layer)
    geoms = shapely.from_wkb(geometry)
    values = fields[0]
    return rasterize(
        ((g, int(v)) for g, v in zip(geoms, values)),
        out_shape=(height, width),
        transform=transform,
        fill=fill,
        dtype=np.uint8,
    )
