"""Stage map: a trained segmentation model applied to new imagery -> a Cloud-Optimized GeoTIFF per input
(optionally class probabilities and GeoPackage polygons), at any raster size with flat memory.

Each input is cut into output blocks (``map.block`` px) over one global grid of overlapping model tiles (see
:mod:`atsg.geo.windows`). Blocks are the units of work: shard k of S fills blocks k, k+S, ... of every input
into the input's work store (a Zarr group beside the outputs, one chunk per block, a ``done`` flag per block
written after the block), so shards run at once without locks, a killed run resumes at the first block not
done, and sharded and unsharded runs fill identical stores. Finalising turns each complete store into the
outputs, tagged with a key of the model file and the settings: an input whose outputs carry the current key
is skipped on rerun.

Life of a run (one process, or Snakemake's map_prepare / map_shard / map jobs):
``prepare`` checks every input against the model's imagery record and makes the work stores; ``fill`` runs
one shard; ``finalise`` checks that every block of every input is done and writes the outputs.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import logging
import shutil
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
import zarr
from rasterio.errors import RasterioError
from rasterio.windows import Window
from tqdm.auto import tqdm

from .. import __version__
from ..config import artifact_settings
from ..data.raster import open_raster, read_image_window
from ..errors import DataError
from ..geo.cog import read_tags, write_cog
from ..geo.imagery import check_input, ground_sample_distance, read_imagery
from ..geo.vector import PolygonWriter
from ..geo.windows import Block, TileGrid, finish_block, hann_window, predict_block
from ..shards import Shard, Step, read_markers, write_marker
from ..store import IGNORE, create_array, write_json
from .common import file_sha256, model_record

log = logging.getLogger(__name__)

RASTER_SUFFIXES = (".tif", ".tiff", ".vrt")
KEY_TAG = "atsg_map_key"
"""Tag of a finished map: the key of the model file and settings it was made with (rerun skips it)."""


def find_inputs(items: Sequence[str | Path]) -> list[Path]:
    """Input rasters of ``items``: files, folders (their .tif/.tiff/.vrt files) or globs (``**`` recurses).
    Two inputs with the same name would write the same outputs: an error."""
    found: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            matches = sorted(p for p in path.iterdir() if p.suffix.lower() in RASTER_SUFFIXES and p.is_file())
            if not matches:
                raise DataError(f"{path}: a folder without .tif, .tiff or .vrt files")
        elif path.is_file():
            matches = [path]
        else:
            matches = sorted(Path(p) for p in glob.glob(str(item), recursive=True) if Path(p).is_file())
            if not matches:
                raise DataError(f"{item}: no such raster, folder or matching file")
        found.extend(matches)
    if not found:
        raise DataError("no input rasters given (INPUT arguments or config key map.inputs)")
    names: dict[str, Path] = {}
    for p in found:
        if p.stem in names and names[p.stem] != p:
            raise DataError(
                f"{p} and {names[p.stem]} would both be mapped to {p.stem}.tif; rename one or map them "
                "to different --out folders"
            )
        names[p.stem] = p
    return list(names.values())


@dataclass
class MapInput:
    """One input raster, checked against the model: its grid, and the grid it is mapped on (the training GSD's
    with ``resample``)."""

    path: Path
    name: str
    width: int
    height: int
    crs: str | None
    transform: tuple | None
    value_range: list | None
    warnings: list[str] = field(default_factory=list)
    resampled: tuple[int, int, tuple] | None = None  # (height, width, transform) of the mapped grid

    @property
    def shape(self) -> tuple[int, int]:
        return (self.resampled[0], self.resampled[1]) if self.resampled else (self.height, self.width)

    @contextlib.contextmanager
    def open(self) -> Iterator:
        """The raster the model reads: the file, or a bilinear warp of it to the training GSD."""
        src = open_raster(self.path)
        try:
            if self.resampled is None:
                yield src
            else:
                from rasterio.vrt import WarpedVRT

                h, w, t = self.resampled
                with WarpedVRT(
                    src,
                    crs=src.crs,
                    transform=rasterio.Affine(*t),
                    width=w,
                    height=h,
                    resampling=rasterio.enums.Resampling.bilinear,
                ) as vrt:
                    yield vrt
        finally:
            src.close()


def inspect_input(path: Path, imagery: Mapping, value_range, resample: bool) -> MapInput:
    """An input's header checked against the model's imagery record (one-line errors, warnings kept)."""
    with open_raster(path) as src:
        georef = src.crs is not None or src.transform != rasterio.Affine.identity()
        crs = src.crs.to_string() if src.crs is not None else None
        transform = tuple(src.transform)[:6] if georef else None
        centre = src.xy(src.height // 2, src.width // 2) if georef else None
        gsd = ground_sample_distance(crs, transform, centre) if crs else None
        ranged, notes = check_input(path, src.count, str(src.dtypes[0]), crs, gsd, imagery, value_range, resample)
        item = MapInput(path, path.stem, src.width, src.height, crs, transform, ranged, notes)
        if resample:
            train = imagery.get("gsd")
            if not (gsd and train):
                raise DataError(
                    f"{path}: --resample needs the ground sample distance of the input and of the "
                    f"model's training imagery (input: {gsd}, model: {train}); both need a CRS"
                )
            factor = gsd / train
            h, w = max(1, round(src.height * factor)), max(1, round(src.width * factor))
            t = src.transform * rasterio.Affine.scale(src.width / w, src.height / h)
            item.resampled = (h, w, tuple(t)[:6])
    return item


def map_key(model_sha: str, settings: Mapping) -> str:
    """The key of a map: the model file's digest and the settings that change the map."""
    text = json.dumps({"model": model_sha, "settings": settings}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class MapJob:
    """Mapping ``inputs`` with the segmentation model ``model_path`` into ``out`` (work stores under ``work``)."""

    def __init__(
        self,
        cfg: Mapping,
        model_path: Path,
        inputs: Sequence[str | Path],
        out: Path,
        work: Path | None = None,
        redo: bool = False,
    ):
        self.cfg, self.p, self.redo = cfg, cfg["map"], redo
        self.model_path, self.out = Path(model_path), Path(out)
        self.work = Path(work) if work is not None else self.out / ".atsg-map"
        if not self.model_path.is_file():
            raise DataError(
                f"{self.model_path}: no such model file; give a trained segmentation model "
                "(results/{run}/segmentation/model.pt)"
            )
        record = model_record(self.model_path)
        if record["atsg_model"] != "segmentation":
            raise DataError(
                f"{self.model_path}: a {record['atsg_model']} model file; map needs a segmentation "
                "model (segmentation/model.pt, supervised/model.pt or paper mode's segmenter.pt)"
            )
        self.imagery = read_imagery(record, self.model_path)
        self.classes = list(self.imagery["classes"])
        tile = int(self.imagery["tile_size"])
        self.overlap = self.p["overlap"] if self.p["overlap"] is not None else tile // 4
        if self.overlap >= tile:
            raise DataError(f"config key map.overlap: {self.overlap} px is not under the model's tile size {tile} px")
        settings = {k: v for k, v in artifact_settings(cfg, "map").items() if k not in ("inputs", "model")}
        self.key = map_key(file_sha256(self.model_path), {**settings, "overlap": self.overlap})
        self.inputs = [
            inspect_input(p, self.imagery, self.p["value_range"], self.p["resample"]) for p in find_inputs(inputs)
        ]
        for item in self.inputs:
            for note in item.warnings:
                log.warning("%s", note)

    # ---- where things are

    def outputs(self, item: MapInput) -> list[Path]:
        """Every file of an input's map; the class map last, as it is written last."""
        extra = ([self.out / f"{item.name}.probabilities.tif"] if self.p["probabilities"] else []) + (
            [self.out / f"{item.name}.gpkg"] if self.p["vector"] else []
        )
        return [*extra, self.out / f"{item.name}.tif"]

    def store_path(self, item: MapInput) -> Path:
        return self.work / f"{item.name}.zarr"

    def finished(self, item: MapInput) -> bool:
        """Whether the input's outputs exist and were made with this model and these settings."""
        if self.redo or not all(p.is_file() for p in self.outputs(item)):
            return False
        try:
            return read_tags(self.outputs(item)[-1]).get(KEY_TAG) == self.key
        except RasterioError:
            return False

    def grid(self, item: MapInput) -> TileGrid:
        h, w = item.shape
        return TileGrid(h, w, int(self.imagery["tile_size"]), self.overlap, int(self.p["block"]))

    def pending(self) -> list[MapInput]:
        return [item for item in self.inputs if not self.finished(item)]

    # ---- prepare

    def prepare(self) -> dict:
        """Work stores of the inputs not yet mapped with this key (kept when they hold this key's blocks, so a
        killed run resumes); a manifest naming this preparation, which shard markers refer to."""
        self.work.mkdir(parents=True, exist_ok=True)
        todo = self.pending()
        for item in todo:
            self._store(item)
        manifest = {"key": self.key, "partial_id": uuid.uuid4().hex, "inputs": [i.name for i in todo]}
        write_json(self.work / "manifest.json", manifest)
        skipped = len(self.inputs) - len(todo)
        if skipped:
            log.info(
                "map: %d of %d input(s) already mapped with this model and settings: skipped", skipped, len(self.inputs)
            )
        return {"inputs": len(self.inputs), "to_map": len(todo), "skipped": skipped}

    def _store(self, item: MapInput) -> zarr.Group:
        path = self.store_path(item)
        grid = self.grid(item)
        attrs = {
            "atsg_store": "map",
            "atsg_version": __version__,
            "key": self.key,
            "input": str(item.path),
            "shape": list(item.shape),
            "block": grid.block,
            "probabilities": bool(self.p["probabilities"]),
        }
        if path.exists():
            g = zarr.open_group(str(path), mode="r+")
            if {k: g.attrs.get(k) for k in attrs} == attrs:
                return g
            shutil.rmtree(path)
        g = zarr.open_group(str(path), mode="w")
        h, w, b = *item.shape, grid.block
        create_array(g, "labels", (h, w), (b, b), "uint8", IGNORE, ("y", "x"), 3)
        if self.p["probabilities"]:
            create_array(
                g,
                "probabilities",
                (len(self.classes), h, w),
                (len(self.classes), b, b),
                "uint8",
                0,
                ("class", "y", "x"),
                3,
            )
        create_array(g, "done", (len(grid.blocks()),), (1,), "uint8", 0, ("block",), 3)
        g.attrs.update(attrs)
        return g

    def _open_store(self, item: MapInput) -> zarr.Group:
        path = self.store_path(item)
        if not path.exists():
            raise DataError(f"{path}: no work store of {item.path}; run map with --prepare first")
        g = zarr.open_group(str(path), mode="r+")
        if g.attrs.get("key") != self.key:
            raise DataError(f"{path}: made for other settings or another model; run map with --prepare again")
        return g

    def manifest(self) -> dict:
        try:
            return json.loads((self.work / "manifest.json").read_text())
        except (OSError, ValueError):
            raise DataError(f"{self.work}: not prepared; run map with --prepare first") from None

    # ---- fill

    def units(self, names: Sequence[str]) -> list[tuple[int, int]]:
        """(input index, block index) of every block of the inputs ``names``, in order."""
        return [
            (i, b.index) for i, item in enumerate(self.inputs) if item.name in names for b in self.grid(item).blocks()
        ]

    def fill(self, shard: Shard, names: Sequence[str]) -> dict:
        """Compute this shard's blocks that are not done yet."""
        import torch

        from ..device import select_device
        from ..factory import segmenter
        from ..inference import segment_probs
        from .common import build_trained, load_model_file

        mine = shard.pick(self.units(names))
        device = select_device(self.p, "map")
        ck = load_model_file(self.model_path, "segmentation")
        model = build_trained(ck, lambda c: segmenter(c, int(ck["in_chans"]), len(self.classes)), device)
        crop = int(ck["config"]["crop_size"])

        def predict(batch: np.ndarray, valid: np.ndarray) -> np.ndarray:
            images, valid = torch.from_numpy(batch).to(device), torch.from_numpy(valid).to(device)
            return segment_probs(model, images, self.p, valid, crop).float().cpu().numpy()

        weights = hann_window(int(self.imagery["tile_size"]))
        bands = list(self.imagery["raster_bands"])
        computed = 0
        for i, item in enumerate(self.inputs):
            blocks = [b for k, b in mine if k == i]
            if not blocks:
                continue
            g = self._open_store(item)
            done = g["done"][:]
            grid = self.grid(item)
            every = grid.blocks()
            todo = [every[b] for b in blocks if not done[b]]
            if len(todo) < len(blocks):
                log.info(
                    "%s: %d of this shard's %d blocks already done (resumed)",
                    item.name,
                    len(blocks) - len(todo),
                    len(blocks),
                )
            computed += self._fill_input(item, g, grid, todo, predict, weights, bands)
        return {"blocks": len(mine), "computed": computed, "device": str(device)}

    def _fill_input(
        self, item: MapInput, g: zarr.Group, grid: TileGrid, blocks: list[Block], predict, weights, bands
    ) -> int:
        pixels = sum(b.rows * b.cols for b in blocks)
        with (
            item.open() as src,
            rasterio.Env(GDAL_CACHEMAX=64),
            tqdm(
                total=pixels, desc=f"map {item.name}", unit="px", unit_scale=True, mininterval=2, dynamic_ncols=True
            ) as bar,
        ):

            def read(row, rows, col, cols):
                return read_image_window(src, item.path, bands, item.value_range, row, rows, col, cols)

            for block in blocks:
                acc, total = predict_block(
                    grid, block, read, predict, len(self.classes), int(self.p["batch_size"]), weights
                )
                labels, probs = finish_block(acc, total, IGNORE, self.p["probabilities"])
                ys, xs = slice(block.row, block.row + block.rows), slice(block.col, block.col + block.cols)
                g["labels"][ys, xs] = labels
                if self.p["probabilities"]:
                    g["probabilities"][:, ys, xs] = probs
                g["done"][block.index] = 1  # after its pixels: a killed run redoes this block
                bar.update(block.rows * block.cols)
        return len(blocks)

    # ---- finalise

    def finalise(self, names: Sequence[str]) -> dict:
        written = []
        for item in self.inputs:
            if item.name not in names:
                continue
            g = self._open_store(item)
            grid = self.grid(item)
            missing = np.flatnonzero(g["done"][:] == 0)
            if len(missing):
                raise DataError(
                    f"{self.store_path(item)}: blocks {missing[:8].tolist()}"
                    f"{' ...' if len(missing) > 8 else ''} of {item.path} are not mapped; run every "
                    "shard before finalising"
                )
            self._write_outputs(item, g, grid)
            shutil.rmtree(self.store_path(item))
            written.append(item.name)
        return {"mapped": written}

    def _tags(self, item: MapInput) -> dict:
        return {
            KEY_TAG: self.key,
            "atsg_version": __version__,
            "atsg_model": self.model_path.name,
            "atsg_classes": self.classes,
            "atsg_input": item.path.name,
            **{f"CLASS_{i}": name for i, name in enumerate(self.classes)},
        }

    def _blocks(self, g: zarr.Group, grid: TileGrid, name: str) -> Iterator[tuple[Window, np.ndarray]]:
        for b in grid.blocks():
            ys, xs = slice(b.row, b.row + b.rows), slice(b.col, b.col + b.cols)
            data = g[name][ys, xs] if name == "labels" else g[name][:, ys, xs]
            yield Window(b.col, b.row, b.cols, b.rows), data.reshape(-1, b.rows, b.cols)

    def _write_outputs(self, item: MapInput, g: zarr.Group, grid: TileGrid) -> None:
        palette = self.imagery.get("palette")
        n = len(self.classes)
        self.out.mkdir(parents=True, exist_ok=True)
        with _on_input_grid(item, g, grid, self.work) as (store, grid_out):
            if self.p["probabilities"]:
                masks = ((w, d[0] != IGNORE) for w, d in self._blocks(store, grid_out, "labels"))
                write_cog(
                    self.out / f"{item.name}.probabilities.tif",
                    (n, item.height, item.width),
                    "uint8",
                    self._blocks(store, grid_out, "probabilities"),
                    masks=masks,
                    crs=item.crs,
                    transform=_affine(item),
                    descriptions=self.classes,
                    tags=self._tags(item),
                    resampling="average",
                )
            if self.p["vector"]:
                writer = PolygonWriter(
                    self.out / f"{item.name}.gpkg",
                    self.classes,
                    item.transform,
                    item.crs,
                    item.height,
                    item.width,
                    IGNORE,
                    self.p["simplify"],
                    self.p["min_area"],
                )
                try:
                    for b, (_, data) in zip(grid_out.blocks(), self._blocks(store, grid_out, "labels")):
                        writer.add(b, data[0])
                    features = writer.close()
                except BaseException:
                    writer.abort()
                    raise
                log.info("%s: %d polygons", item.name, features)
            write_cog(
                self.out / f"{item.name}.tif",
                (1, item.height, item.width),
                "uint8",
                self._blocks(store, grid_out, "labels"),
                crs=item.crs,
                transform=_affine(item),
                nodata=IGNORE,
                colormap=palette,
                descriptions=["class"],
                tags=self._tags(item),
                resampling="mode",
            )


def _affine(item: MapInput):
    return rasterio.Affine(*item.transform) if item.transform else None


@contextlib.contextmanager
def _on_input_grid(item: MapInput, g: zarr.Group, grid: TileGrid, work: Path):
    """(store, grid) of the map on the input's own grid: the work store itself, or (``resample``) the map
    warped back from the training GSD into a temporary store (nearest for classes, bilinear for
    probabilities), block by block."""
    if item.resampled is None:
        yield g, grid
        return
    from rasterio.vrt import WarpedVRT

    path = work / f".{item.name}.input-grid.zarr"
    back = zarr.open_group(str(path), mode="w")
    out_grid = TileGrid(item.height, item.width, grid.tile, grid.tile - grid.stride, grid.block)
    h, w, t = item.resampled
    names = ["labels"] + (["probabilities"] if "probabilities" in g else [])
    try:
        for name in names:
            src_arr = g[name]
            count = 1 if name == "labels" else src_arr.shape[0]
            chunks = (grid.block, grid.block) if name == "labels" else (count, grid.block, grid.block)
            shape = (item.height, item.width) if name == "labels" else (count, item.height, item.width)
            create_array(
                back,
                name,
                shape,
                chunks,
                "uint8",
                IGNORE if name == "labels" else 0,
                ("y", "x") if name == "labels" else ("class", "y", "x"),
                3,
            )
            staging = path.parent / f".{item.name}.{name}.staging.tif"
            profile = {
                "driver": "GTiff",
                "width": w,
                "height": h,
                "count": count,
                "dtype": "uint8",
                "tiled": True,
                "blockxsize": 512,
                "blockysize": 512,
                "compress": "zstd",
                "crs": item.crs,
                "transform": rasterio.Affine(*t),
                "nodata": IGNORE if name == "labels" else None,
            }
            try:
                with rasterio.open(staging, "w", **profile) as dst:
                    for b in grid.blocks():
                        ys, xs = slice(b.row, b.row + b.rows), slice(b.col, b.col + b.cols)
                        data = src_arr[ys, xs] if name == "labels" else src_arr[:, ys, xs]
                        dst.write(data.reshape(count, b.rows, b.cols), window=Window(b.col, b.row, b.cols, b.rows))
                resampling = (
                    rasterio.enums.Resampling.nearest if name == "labels" else rasterio.enums.Resampling.bilinear
                )
                with (
                    rasterio.open(staging) as src,
                    WarpedVRT(
                        src,
                        crs=src.crs,
                        transform=_affine(item),
                        width=item.width,
                        height=item.height,
                        resampling=resampling,
                    ) as vrt,
                ):
                    for b in out_grid.blocks():
                        data = vrt.read(window=Window(b.col, b.row, b.cols, b.rows))
                        ys, xs = slice(b.row, b.row + b.rows), slice(b.col, b.col + b.cols)
                        if name == "labels":
                            back[name][ys, xs] = data[0]
                        else:
                            back[name][:, ys, xs] = data
            finally:
                staging.unlink(missing_ok=True)
        yield back, out_grid
    finally:
        shutil.rmtree(path, ignore_errors=True)


def run_map(
    cfg: Mapping,
    model_path: Path,
    inputs: Sequence[str | Path],
    out: Path,
    work: Path | None = None,
    step: Step = Step(),
    redo: bool = False,
) -> dict:
    """Run ``step`` of mapping ``inputs``: everything (one process: inputs already mapped with this model and
    settings are skipped unless ``redo``, a killed run resumes at its first block not done), prepare, one shard
    or finalise."""
    job = MapJob(cfg, model_path, inputs, out, work, redo)
    if step.part == "prepare":
        return job.prepare()
    if step.part == "all":
        summary = job.prepare()
        names = job.manifest()["inputs"]
        summary.update(job.fill(Shard(), names))
        summary.update(job.finalise(names))
        _tidy(job.work)
        return summary
    manifest = job.manifest()
    if manifest["key"] != job.key:
        raise DataError(f"{job.work}: prepared for other settings or another model; run map with --prepare again")
    names = manifest["inputs"]
    if step.part == "shard":
        summary = job.fill(step.shard, names)
        write_marker(step.marker, step.shard, manifest["partial_id"], summary["blocks"], summary)
        return {"shard": str(step.shard), **summary}
    markers = read_markers(step.markers, manifest["partial_id"])
    summary = job.finalise(names)
    _tidy(job.work)
    return {"shards": len(markers), **summary}


def _tidy(work: Path) -> None:
    """Remove the work folder once nothing is left in it but its manifest."""
    left = [p for p in work.iterdir() if p.name != "manifest.json"] if work.exists() else []
    if not left:
        shutil.rmtree(work, ignore_errors=True)
