"""Stores that are verifiably complete: which tiles were written, and whether what is read is what was written.

When a stage has written every tile of a store (before the store is renamed into place, or when a sharded
store is finalised) the store is *sealed*: the size and CRC-32 of every chunk file of every per-tile array go
into the array ``_chunks`` (tile, array, [bytes, crc32]), those of single-chunk arrays into the attribute
``integrity``. A chunk file that is absent at sealing time is an error: zarr writes every chunk, even one equal
to the fill value (``array.write_empty_chunks``), so an absent chunk is a tile no shard wrote.

Readers (:class:`atsg.store.TileReader`, and through it every per-tile read of the stages) check each chunk
they read against the seal, so a deleted, truncated or corrupted chunk is a one-line error naming the store,
the array, the tile and the rule to rerun, never a fill value or a codec's message. ``atsg info --verify``
checks a whole store.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import zarr

from .errors import DataError

CHUNKS = "_chunks"
"""The array of a sealed store that holds (bytes, crc32) of every chunk of every per-tile array."""


def per_tile_arrays(group: zarr.Group) -> list[str]:
    """Arrays of ``group`` with one tile per chunk (sorted; the seal's own array excluded)."""
    names = []
    for name in sorted(group.array_keys()):
        a = group[name]
        if name != CHUNKS and a.ndim >= 1 and a.chunks[0] == 1 and tuple(a.chunks[1:]) == tuple(a.shape[1:]):
            names.append(name)
    return names


def chunk_file(root: Path, array: zarr.Array, tile: int | None) -> Path:
    """The file of tile ``tile``'s chunk (``None``: the only chunk of a single-chunk array)."""
    index = (tile if tile is not None else 0,) + (0,) * (array.ndim - 1)
    return Path(root) / array.path / array.metadata.encode_chunk_key(index)


def _fingerprint(path: Path) -> tuple[int, int] | None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    return len(data), zlib.crc32(data)


def rule_of(attrs: Mapping) -> str:
    """The rule that writes a store (named in errors), from the artifact it records."""
    from .artifacts import RULES

    return RULES.get(attrs.get("artifact"), "the stage that wrote it")


def seal(path: str | Path) -> None:
    """Record the size and CRC-32 of every chunk of the store at ``path``; an unwritten tile is an error."""
    path = Path(path)
    group = zarr.open_group(str(path), mode="r+")
    names = per_tile_arrays(group)
    n = group[names[0]].shape[0] if names else 0
    table = np.zeros((n, len(names), 2), np.uint64)
    for k, name in enumerate(names):
        array = group[name]
        missing = []
        for i in range(n):
            found = _fingerprint(chunk_file(path, array, i))
            if found is None:
                missing.append(i)
            else:
                table[i, k] = found
        if missing:
            shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
            raise DataError(
                f"{path}/{name}: {len(missing)} of {n} tiles were never written ({shown}); rerun {rule_of(group.attrs)}"
            )
    whole = {}
    for name in sorted(set(group.array_keys()) - set(names) - {CHUNKS}):
        array = group[name]
        if all(c >= s for c, s in zip(array.chunks, array.shape)):
            found = _fingerprint(chunk_file(path, array, None))
            whole[name] = list(found) if found else None
    seal_array = group.create_array(
        CHUNKS,
        shape=table.shape,
        chunks=table.shape if n else (1, 1, 2),
        dtype="uint64",
        fill_value=0,
        overwrite=True,
        dimension_names=("tile", "array", "bytes_crc32"),
    )
    if n:
        seal_array[:] = table
    group.attrs["integrity"] = {"algorithm": "crc32", "arrays": names, "whole": whole, "tiles": int(n)}


class Seal:
    """The seal of one store, for checking the chunks read from it."""

    def __init__(self, root: Path, attrs: Mapping, table: np.ndarray):
        self.root, self.rule = Path(root), rule_of(attrs)
        self.columns = {name: k for k, name in enumerate(attrs["integrity"]["arrays"])}
        self.table = table

    def check(self, name: str, tile: int, data: bytes | None, path: Path) -> None:
        """Raise a DataError if ``data`` (None: the file is absent) is not the chunk that was sealed."""
        k = self.columns.get(name)
        if k is None:
            return
        where = f"{self.root}/{name}: tile {tile}"
        if data is None:
            raise DataError(
                f"{where} is missing (chunk file {path.name} is gone); the store is incomplete: rerun {self.rule}"
            )
        size, crc = (int(v) for v in self.table[tile, k])
        if len(data) != size or zlib.crc32(data) != crc:
            raise DataError(
                f"{where} is corrupt (chunk file {path.name}: {len(data)} bytes, sealed with {size}, "
                f"checksum differs); rerun {self.rule}"
            )


@functools.lru_cache(maxsize=64)
def _load(root: str, stamp: int) -> Seal | None:
    group = zarr.open_group(root, mode="r")
    if "integrity" not in group.attrs or CHUNKS not in group:
        return None
    return Seal(Path(root), dict(group.attrs), group[CHUNKS][:])


def seal_of(root: str | Path) -> Seal | None:
    """The seal of the store at ``root`` (None if unsealed: a store being written), cached while unchanged."""
    meta = Path(root) / "zarr.json"
    try:
        stamp = meta.stat().st_mtime_ns
    except FileNotFoundError:
        return None
    return _load(str(Path(root).resolve()), stamp)


def check_whole(root: Path, group: zarr.Group) -> None:
    """Check the single-chunk arrays of a sealed store (e.g. tiles.zarr's cls_labels and split)."""
    seal = group.attrs.get("integrity") or {}
    for name, recorded in (seal.get("whole") or {}).items():
        if recorded is None or name not in group:
            continue
        found = _fingerprint(chunk_file(root, group[name], None))
        if found is None:
            raise DataError(
                f"{root}/{name}: its chunk file is gone; the store is incomplete: rerun {rule_of(group.attrs)}"
            )
        if list(found) != list(recorded):
            raise DataError(f"{root}/{name}: corrupt (checksum differs from the seal); rerun {rule_of(group.attrs)}")


def verify(path: str | Path, schema: Mapping[str, tuple[str, int]] | None = None, limit: int = 20) -> list[str]:
    """Every defect of the store at ``path``: unsealed, missing, truncated or corrupt chunks, chunks that do
    not decode, arrays of the wrong dtype or dimensions (``schema``: name -> (dtype, ndim))."""
    from .store import TileReader

    path = Path(path)
    try:
        group = zarr.open_group(str(path), mode="r")
    except Exception as exc:  # noqa: BLE001 - zarr raises several types for a folder that is not a group
        return [f"{path}: not a Zarr group ({exc})"]
    defects = []
    for name, (dtype, ndim) in (schema or {}).items():
        if name not in group:
            defects.append(f"{path}/{name}: array missing")
        elif str(group[name].dtype) != dtype or group[name].ndim != ndim:
            defects.append(
                f"{path}/{name}: {group[name].dtype} with {group[name].ndim} dims, expected {dtype} with {ndim}"
            )
    if "integrity" not in group.attrs or CHUNKS not in group:
        return defects + [
            f"{path}: not sealed (unfinished, or written by an atsg that recorded no checksums); "
            f"rerun {rule_of(group.attrs)}"
        ]
    try:
        check_whole(path, group)
    except DataError as exc:
        defects.append(str(exc))
    seal = seal_of(path)
    for name in seal.columns:
        if name not in group:
            continue
        reader = TileReader(group[name])
        for i in range(group[name].shape[0]):
            try:
                reader[i]
            except DataError as exc:
                defects.append(str(exc))
            if len(defects) >= limit:
                return defects + [f"... (stopped after {limit} defects)"]
    return defects
