"""Sharded stores: one job prepares the empty store, S shard jobs fill it, one job finalises it.

A sharded stage (extract_cams, generate_masks, predict) splits its work into
units (a batch of consecutive tiles, a tile, a scene); shard k of S takes units
k, k+S, k+2S, ... and writes only their chunks of the shared store, so shards
run at the same time without locks. Because a unit is processed the same way
whichever shard takes it, a sharded run and an unsharded run write identical
stores.

Life of a store ``X`` (the same in one process and as separate Snakemake jobs):

1. ``prepare``: the empty store (every array, every attribute) is written under
   the hidden name ``.X.partial``, marked ``complete: false``.
2. ``run_shard``: shard k writes its units into the partial store, then a small
   JSON marker that names the partial store it filled. A killed shard leaves no
   marker, so nothing about it looks complete; rerunning it rewrites its chunks.
3. ``finalise``: checks that one marker per shard exists for this partial store,
   marks the store complete and renames it to ``X``. Only then does ``X`` exist.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import zarr

from .errors import DataError
from .integrity import seal
from .store import atomic_store, naming_full_disk, write_json

log = logging.getLogger(__name__)

PARTIAL_SUFFIX = ".partial"


def partial_path(out: str | Path) -> Path:
    """Where the store (or folder) ``out`` is built before it is finalised: ``.{name}.partial`` beside it."""
    out = Path(out)
    return out.parent / f".{out.name}{PARTIAL_SUFFIX}"


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (0-based)."""

    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"K/S"`` -> Shard(K, S); anything else is an error that shows the expected form."""
        try:
            k, s = (int(part) for part in str(text).split("/"))
        except ValueError:
            raise DataError(f"--shard {text!r}: expected K/S, e.g. 0/4 for the first of four shards") from None
        if s < 1 or not 0 <= k < s:
            raise DataError(f"--shard {text!r}: K must be in 0..S-1 and S at least 1")
        return cls(k, s)

    def pick(self, units: Sequence) -> list:
        """This shard's units: k, k+S, k+2S, ..."""
        return list(units)[self.index :: self.count]

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def prepare(out: str | Path, create: Callable[[Path], None], folders: Sequence[str | Path] = ()) -> Path:
    """Write the empty store of ``out`` under its partial name (``create(path)`` makes arrays and attrs), and
    an empty partial folder for each of ``folders`` (files written beside the store, e.g. GeoTIFFs)."""
    partial = partial_path(out)
    with atomic_store(partial) as tmp:
        create(tmp)
        g = zarr.open_group(str(tmp), mode="r+")
        g.attrs.update({"complete": False, "partial_id": uuid.uuid4().hex})
    for folder in folders:
        with atomic_store(partial_path(folder)) as tmp:
            tmp.mkdir(parents=True)
    return partial


def open_partial(out: str | Path, kind: str) -> zarr.Group:
    """The partial store of ``out``, open for writing chunks (never attributes: shards share them)."""
    partial = partial_path(out)
    if not partial.exists():
        raise DataError(f"{partial}: no partial {kind} store; run the stage with --prepare first")
    g = zarr.open_group(str(partial), mode="r+")
    if g.attrs.get("atsg_store") != kind or g.attrs.get("complete") is not False:
        raise DataError(f"{partial}: not a partial {kind} store; delete it and run the stage with --prepare")
    return g


def write_marker(path: str | Path, shard: Shard, partial_id: str, units: int, summary: Mapping) -> None:
    """The proof that ``shard`` filled the partial store ``partial_id``: written last, atomically."""
    write_json(
        path,
        {
            "shard": shard.index,
            "shards": shard.count,
            "partial_id": partial_id,
            "units": units,
            "finished": time.time(),
            **summary,
        },
    )


def read_markers(paths: Sequence[str | Path], partial_id: str) -> list[dict]:
    """Markers of one complete set of shards of the partial store ``partial_id``, ordered by shard."""
    markers = []
    for path in paths:
        try:
            markers.append(json.loads(Path(path).read_text()))
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: unreadable shard marker ({exc}); rerun that shard") from None
    counts = {m["shards"] for m in markers}
    if len(counts) != 1:
        raise DataError(f"shard markers disagree on the shard count ({sorted(counts)}); rerun the stage")
    count = counts.pop()
    stale = [m["shard"] for m in markers if m["partial_id"] != partial_id]
    if stale:
        raise DataError(f"shard(s) {stale} filled an earlier partial store; rerun them")
    found = sorted(m["shard"] for m in markers)
    if found != list(range(count)):
        missing = sorted(set(range(count)) - set(found))
        raise DataError(f"shards {missing} of {count} have not finished; run them before finalising")
    return sorted(markers, key=lambda m: m["shard"])


def finalise(
    out: str | Path, kind: str, markers: Sequence[str | Path] | None, folders: Sequence[str | Path] = ()
) -> list[dict]:
    """Check the shards' markers, mark the store complete and move it (and ``folders``) into place.

    ``markers=None`` is the one-process path, where the caller has just filled every unit itself.
    """
    g = open_partial(out, kind)
    partial_id = g.attrs["partial_id"]
    found = read_markers(markers, partial_id) if markers is not None else []
    seal(partial_path(out))  # every tile written, or an error naming the tiles no shard wrote
    g = zarr.open_group(str(partial_path(out)), mode="r+")
    attrs = dict(g.attrs)
    attrs.pop("partial_id")
    attrs["complete"] = True
    g.attrs.put(attrs)
    for path in [Path(out), *map(Path, folders)]:
        _move_into_place(partial_path(path), path)
    return found


def _move_into_place(partial: Path, path: Path) -> None:
    if not partial.exists():
        raise DataError(f"{partial}: missing; rerun the stage with --prepare")
    if path.exists():
        shutil.rmtree(path)
    os.replace(partial, path)


class ShardedStage:
    """What a sharded stage provides: its units of work, its empty store, and how to fill units."""

    kind: str
    out: Path
    folders: Sequence[Path] = ()

    def units(self) -> list:
        raise NotImplementedError

    def create(self, path: Path) -> None:
        raise NotImplementedError

    def fill(self, group: zarr.Group, units: list, folders: list[Path]) -> dict:
        """Process ``units`` into ``group`` (and the partial ``folders``); a summary for the marker."""
        raise NotImplementedError


@dataclass(frozen=True)
class Step:
    """Which part of a sharded stage one call runs: everything (one process), prepare, one shard, finalise."""

    part: str = "all"
    shard: Shard | None = None
    marker: Path | None = None
    markers: tuple[Path, ...] = ()

    @classmethod
    def from_args(
        cls, prepare: bool, shard: str | None, marker: Path | None, finalise: bool, markers: Sequence[Path]
    ) -> Step:
        chosen = [name for name, on in (("--prepare", prepare), ("--shard", shard), ("--finalise", finalise)) if on]
        if len(chosen) > 1:
            raise DataError(f"{' and '.join(chosen)} cannot be combined: a call runs one part of the stage")
        if shard:
            if marker is None:
                raise DataError("--shard needs --marker FILE (written when the shard has finished)")
            return cls("shard", Shard.parse(shard), Path(marker))
        if finalise:
            if not markers:
                raise DataError("--finalise needs the --markers of every shard")
            return cls("finalise", markers=tuple(Path(m) for m in markers))
        return cls("prepare" if prepare else "all")


def run_sharded(stage: ShardedStage, step: Step) -> dict:
    """Run ``step`` of ``stage``; returns a summary for the log. Run whole (one process), a failure leaves no
    partial store behind; a failed shard leaves the partial store to the other shards and to its rerun."""
    try:
        with naming_full_disk(partial_path(stage.out)):
            return _run_step(stage, step)
    except BaseException:
        if step.part == "all":
            for path in (stage.out, *stage.folders):
                shutil.rmtree(partial_path(path), ignore_errors=True)
        raise


def _run_step(stage: ShardedStage, step: Step) -> dict:
    if step.part in ("all", "prepare"):
        prepare(stage.out, stage.create, stage.folders)
        if step.part == "prepare":
            return {"prepared": str(partial_path(stage.out)), "units": len(stage.units())}
    if step.part in ("all", "shard"):
        shard = step.shard or Shard()
        group = open_partial(stage.out, stage.kind)
        started = time.time()
        units = shard.pick(stage.units())
        log.info("%s: shard %s, %d units", stage.kind, shard, len(units))
        summary = stage.fill(group, units, [partial_path(f) for f in stage.folders])
        if step.part == "shard":
            summary = {**summary, "started": started, "visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
            write_marker(step.marker, shard, group.attrs["partial_id"], len(units), summary)
            return {"shard": str(shard), "units": len(units), **summary}
        finalise(stage.out, stage.kind, None, stage.folders)
        return summary
    markers = finalise(stage.out, stage.kind, step.markers, stage.folders)
    return {"shards": len(markers), "units": sum(m["units"] for m in markers)}
