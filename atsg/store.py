"""The Zarr artifact schema shared by every stage (see DESIGN.md).

One chunk holds one tile of every per-tile raster array, so shards can write
disjoint chunks without locks; small per-tile vectors are stored whole. Stores
are written under a temporary name and renamed when complete, so a store that
exists is a finished store. Every store records its kind, the atsg version and
the config sections that made it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import ZstdCodec

from . import __version__
from .errors import DataError
from .integrity import check_whole, rule_of

IGNORE = 255
"""Label value of pixels without a label (padding, ignored colours, uncertain pseudo-labels)."""

SPLITS = ("train", "val", "test")
"""Split names; their index is the code stored in ``tiles.zarr/split``."""

# kind -> array name -> (dtype, ndim); the shape contract readers check.
SCHEMAS: dict[str, dict[str, tuple[str, int]]] = {
    "tiles": {
        "images": ("uint8", 4),
        "labels": ("uint8", 3),
        "valid": ("uint8", 3),
        "cls_labels": ("uint8", 2),
        "split": ("uint8", 1),
    },
    "cams": {"cams": ("float16", 4), "cams_aux": ("float16", 4), "scores": ("float16", 2)},
    "masks": {"objects": ("uint16", 3), "boundaries": ("uint8", 3)},
    "pseudo_labels": {"labels": ("uint8", 3)},
    "predictions": {"labels": ("uint8", 3)},
}

_TMP_MARK = ".tmp-"

CHUNK_KEYS = {"name": "default", "separator": "."}
"""Chunk files named ``c.<tile>.0.0.0`` side by side in the array's folder: zarr's nested default
(``c/<tile>/0/0/0``) makes three folders per tile, 12 KB of directory blocks for each tile of each array."""

# Every chunk is written, even one equal to the fill value, so an absent chunk file is always a tile no stage
# wrote (see atsg.integrity), never a tile of fill values.
zarr.config.set({"array.write_empty_chunks": True})

# Snakemake drops a .snakemake_timestamp file into directory outputs; zarr would warn about it on every open.
warnings.filterwarnings("ignore", message=r"Object at \.snakemake_timestamp is not recognized")


def split_code(name: str) -> int:
    return SPLITS.index(name)


def base_attrs(kind: str, record: Mapping | None = None) -> dict:
    """Attributes every store carries: its kind, the atsg version, and its record (see
    :func:`atsg.artifacts.record`: the settings that made it, its artifact key and the keys of its inputs)."""
    return {"atsg_store": kind, "atsg_version": __version__, "config": {}, **dict(record or {})}


def _full_disk(exc: BaseException | None) -> OSError | None:
    """The ENOSPC OSError behind ``exc`` (torch wraps it in a RuntimeError about file positions), if any."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


@contextlib.contextmanager
def naming_full_disk(path: str | Path) -> Iterator[None]:
    """A full disk met inside the block is reported as an OSError (ENOSPC) naming ``path`` (zarr's and torch's
    writes name no file, and torch reports it as a RuntimeError)."""
    try:
        yield
    except Exception as exc:
        full = _full_disk(exc)
        if full is not None and full.filename is None:
            raise OSError(errno.ENOSPC, full.strerror or os.strerror(errno.ENOSPC), str(path)) from exc
        raise


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a hidden temporary path beside ``path``, renamed to ``path`` only when the block succeeds: a reader
    never sees half a file, and a failed write (a full disk, a kill) leaves nothing behind and names ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with naming_full_disk(path):
            yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> None:
    """``text`` (UTF-8) to ``path``, atomically."""
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | Path, obj, indent: int = 1) -> None:
    """``obj`` as JSON to ``path``, atomically (metrics.json and the other small records of a stage)."""
    write_text(path, json.dumps(obj, indent=indent))


@contextlib.contextmanager
def atomic_store(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only if the block succeeds.

    Used for every artifact folder (stores, scene folders).

    A failure (or a kill) leaves no store at ``path``; the temporary folder of a
    failed attempt is removed, and stale ones of killed attempts are cleared first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}{_TMP_MARK}*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = path.parent / f".{path.name}{_TMP_MARK}{os.getpid()}"
    try:
        with naming_full_disk(path):
            yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)


def create_array(
    group: zarr.Group,
    name: str,
    shape: tuple,
    chunks: tuple,
    dtype: str,
    fill_value,
    dims: tuple[str, ...],
    level: int,
    serializer="auto",
) -> zarr.Array:
    return group.create_array(
        name=name,
        shape=shape,
        chunks=chunks,
        dtype=dtype,
        fill_value=fill_value,
        compressors=ZstdCodec(level=level),
        dimension_names=dims,
        serializer=serializer,
        chunk_key_encoding=CHUNK_KEYS,
    )


def image_serializer(size: int, n_bands: int, codec: str, levels: int, reference_band: int | None):
    """The array-to-bytes codec of ``tiles.zarr/images``: "zstd" stores raw pixels (zarr's default),
    "wavelet" the lossless wavelet of :mod:`atsg.imagecodec` (as many levels as the tile size allows)."""
    if codec == "zstd":
        return "auto"
    from .imagecodec import Wavelet53Codec, max_levels

    return Wavelet53Codec(levels=max_levels(size, size, levels), reference_band=reference_band if n_bands > 1 else None)


def create_tile_store(
    path: Path, n_tiles: int, n_bands: int, size: int, n_targets: int, level: int, serializer="auto"
) -> zarr.Group:
    """An empty ``tiles.zarr`` with the arrays of the schema (labels start as IGNORE; ``valid`` is 1 where a
    pixel holds data, 0 on padding and nodata); ``serializer`` encodes the images (see :func:`image_serializer`)."""
    g = zarr.open_group(str(path), mode="w")
    create_array(
        g,
        "images",
        (n_tiles, n_bands, size, size),
        (1, n_bands, size, size),
        "uint8",
        0,
        ("tile", "band", "y", "x"),
        level,
        serializer,
    )
    create_array(g, "labels", (n_tiles, size, size), (1, size, size), "uint8", IGNORE, ("tile", "y", "x"), level)
    create_array(g, "valid", (n_tiles, size, size), (1, size, size), "uint8", 0, ("tile", "y", "x"), level)
    create_array(
        g,
        "cls_labels",
        (n_tiles, n_targets),
        (max(n_tiles, 1), max(n_targets, 1)),
        "uint8",
        0,
        ("tile", "class"),
        level,
    )
    create_array(g, "split", (n_tiles,), (max(n_tiles, 1),), "uint8", 0, ("tile",), level)
    return g


def create_tile_arrays(
    path: Path,
    kind: str,
    shapes: Mapping[str, tuple],
    fill: Mapping[str, object],
    dims: Mapping[str, tuple],
    attrs: Mapping,
    level: int = 3,
) -> zarr.Group:
    """A store of ``kind`` whose arrays (named as in SCHEMAS, plus optional extras in ``shapes``) hold
    one tile per chunk."""
    g = zarr.open_group(str(path), mode="w")
    for name, shape in shapes.items():
        dtype = SCHEMAS[kind][name][0] if name in SCHEMAS.get(kind, {}) else "float16"
        create_array(g, name, tuple(shape), (1, *shape[1:]), dtype, fill.get(name, 0), dims[name], level)
    g.attrs.update(dict(attrs))
    return g


def chunk_decoder(codecs: Sequence[Mapping], shape: tuple[int, ...], dtype: np.dtype):
    """A function from the bytes of one chunk to its array, for the zarr v3 codec chain ``codecs`` (as the
    array's metadata lists them: one array-to-bytes codec, then bytes-to-bytes codecs), or None when the chain
    holds a codec it does not know.

    It decodes what zarr's specification defines each codec to be (``bytes``: the elements in the given byte
    order; ``zstd``: one zstd frame) with numpy and numcodecs, and ``atsg.wavelet53`` with
    :func:`atsg.imagecodec.decode_array`: no zarr internals.
    """
    if not codecs:
        return None
    serializer, compressors = codecs[0], list(codecs[1:])
    config = serializer.get("configuration") or {}
    if serializer["name"] == "bytes":
        order = {"little": "<", "big": ">"}[config.get("endian", "little")]
        element = np.dtype(dtype).newbyteorder(order) if np.dtype(dtype).itemsize > 1 else np.dtype(dtype)

        def deserialize(data):
            return np.frombuffer(data, element).reshape(shape).astype(dtype, copy=False)

    elif serializer["name"] == "atsg.wavelet53":
        from .imagecodec import decode_array

        def deserialize(data):
            return decode_array(data, shape, config.get("levels", 4), config.get("reference_band"))

    else:
        return None
    if any(c["name"] != "zstd" for c in compressors):
        return None
    from numcodecs import Zstd

    steps = [Zstd().decode for _ in compressors]

    def decode(data: bytes) -> np.ndarray:
        for step in reversed(steps):
            data = step(data)
        return deserialize(data)

    return decode


class TileReader:
    """Whole-tile reads of an array with one tile per chunk, checked against the store's seal.

    ``reader[i]`` equals ``array[i]``. On a local store it reads the chunk file, checks it against the seal of a
    finished store (:mod:`atsg.integrity`: a missing, truncated or corrupt chunk is a DataError naming the store,
    array, tile and rule to rerun) and decodes it in the calling thread (:func:`chunk_decoder`): zarr's general
    read path hands every chunk read through its event loop and thread pool, which costs more than decoding a
    small tile. Other stores (and codec chains :func:`chunk_decoder` does not know) take zarr's path, unchecked.
    """

    def __init__(self, array: zarr.Array):
        from zarr.storage import LocalStore

        from .integrity import seal_of

        self.array = array
        md = array.metadata
        whole_tiles = array.chunks[0] == 1 and tuple(array.chunks[1:]) == tuple(array.shape[1:])
        codecs = md.to_dict().get("codecs") if md.zarr_format == 3 else None
        self.decode = (
            chunk_decoder(codecs, (1, *array.shape[1:]), array.dtype)
            if isinstance(array.store, LocalStore) and whole_tiles and codecs
            else None
        )
        self.fast = self.decode is not None
        if self.fast:
            self.root = Path(array.store.root)
            self.folder = self.root / array.path
            self.name = array.path
            self.seal = seal_of(self.root)

    def __len__(self) -> int:
        return self.array.shape[0]

    def __getitem__(self, i: int) -> np.ndarray:
        if not self.fast:
            return self.array[i]
        i = int(i) + (len(self) if int(i) < 0 else 0)
        if not 0 <= i < len(self):
            raise IndexError(f"tile {i} of {len(self)}")
        path = self.folder / self.array.metadata.encode_chunk_key((i,) + (0,) * (self.array.ndim - 1))
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            data = None
        if self.seal is not None:
            self.seal.check(self.name, i, data, path)
        if data is None:  # an unsealed store being written: the fill value, as zarr returns it
            return np.full(self.array.shape[1:], self.array.fill_value, self.array.dtype)
        try:
            tile = self.decode(data)[0]
        except Exception as exc:  # noqa: BLE001 - codecs raise anything on bad bytes
            rule = self.seal.rule if self.seal is not None else "the stage that wrote it"
            raise DataError(
                f"{self.root}/{self.name}: tile {i} does not decode ({type(exc).__name__}: {exc}); "
                f"the store is corrupt: rerun {rule}"
            ) from None
        return tile if tile.flags.writeable else tile.copy()

    def read(self, idx) -> np.ndarray:
        """Tiles ``idx`` stacked along a new first axis."""
        idx = np.asarray(idx)
        if not len(idx):
            return np.zeros((0, *self.array.shape[1:]), self.array.dtype)
        return np.stack([self[int(i)] for i in idx])


def open_store(path: str | Path, kind: str) -> zarr.Group:
    """Open a finished store read-only and check it against the schema of ``kind``."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such {kind} store; run the stage that writes it first")
    try:
        g = zarr.open_group(str(path), mode="r")
    except Exception as exc:  # zarr raises several types for a folder that is not a group
        raise DataError(f"{path}: not a Zarr group ({exc}); delete it and rerun the stage that writes it") from None
    found = g.attrs.get("atsg_store")
    if found != kind:
        raise DataError(f"{path}: holds a {found or 'non-atsg'} store, expected a {kind} store")
    if g.attrs.get("complete") is False:
        raise DataError(
            f"{path}: an unfinished sharded {kind} store (shards still running or killed); rerun the stage to finish it"
        )
    n = None
    for name, (dtype, ndim) in SCHEMAS.get(kind, {}).items():
        if name not in g:
            raise DataError(
                f"{path}: array '{name}' is missing from the {kind} store (made by an older atsg?); "
                f"rerun {rule_of(g.attrs)}"
            )
        arr = g[name]
        if str(arr.dtype) != dtype or arr.ndim != ndim:
            raise DataError(
                f"{path}/{name}: {arr.dtype} with {arr.ndim} dims, the {kind} schema wants {dtype} with {ndim}; "
                f"rerun {rule_of(g.attrs)}"
            )
        if n is None:
            n = arr.shape[0]
        elif arr.shape[0] != n:
            raise DataError(f"{path}/{name}: {arr.shape[0]} tiles where the other arrays hold {n}")
    if "integrity" not in g.attrs:
        raise DataError(
            f"{path}: a {kind} store without a seal (written by an atsg that recorded no checksums, "
            f"or not finished); delete it and rerun {rule_of(g.attrs)}"
        )
    check_whole(path, g)
    return g


def _open_any(path: Path) -> zarr.Group:
    """A store of any kind, read-only, for describing and verifying it."""
    if not path.exists():
        raise DataError(f"{path}: no such store")
    try:
        return zarr.open_group(str(path), mode="r")
    except Exception as exc:  # noqa: BLE001 - zarr raises several types for a folder that is not a group
        raise DataError(f"{path}: not a Zarr group ({exc})") from None


def verify_store(path: str | Path) -> tuple[list[str], str]:
    """(defects, what was checked) of a store written by atsg, against the schema of its kind and its seal."""
    from .integrity import verify

    path = Path(path)
    g = _open_any(path)
    kind = g.attrs.get("atsg_store")
    defects = verify(path, SCHEMAS.get(kind, {}))
    seal = g.attrs.get("integrity") or {}
    return (
        defects,
        f"{seal.get('tiles', 0)} tiles x {len(seal.get('arrays', []))} arrays of a {kind} store, "
        "checksums and decoding",
    )


def describe(path: str | Path) -> str:
    """Human-readable summary of a store: arrays, shapes, dtypes, chunks and attributes."""
    path = Path(path)
    g = _open_any(path)
    lines = [f"{path}  ({g.attrs.get('atsg_store', 'zarr')} store, atsg {g.attrs.get('atsg_version', '?')})", "arrays:"]
    for name in sorted(g.array_keys()):
        a = g[name]
        codecs = ",".join(type(c).__name__.replace("Codec", "").lower() for c in a.compressors) or "none"
        if type(a.serializer).__name__ != "BytesCodec":
            codecs = f"{a.serializer.to_dict()['name']}+{codecs}"
        lines.append(
            f"  {name:<12} shape={tuple(a.shape)} dtype={a.dtype} chunks={tuple(a.chunks)} compressor={codecs}"
        )
    lines.append("attrs:")
    for key, value in sorted(g.attrs.items()):
        lines.append(f"  {key}: {_summarise(value)}")
    return "\n".join(lines)


def _summarise(value, limit: int = 160) -> str:
    if isinstance(value, dict):
        parts = [f"{k}={_summarise(v, 40)}" for k, v in value.items()]
        text = "{" + ", ".join(parts) + "}"
    elif isinstance(value, list) and len(value) > 8:
        text = f"[{len(value)} items: {_summarise(value[0], 60)}, ...]"
    else:
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
