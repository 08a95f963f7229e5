"""What every stage needs: the tile store, model files and their records, batched tile loops.

torch is imported where a model or tensor is made, so that the bookkeeping steps of sharded stages
(preparing and finalising stores) start in a fraction of a second.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import zarr
from tqdm.auto import tqdm

from .. import __version__
from ..errors import DataError
from ..store import SPLITS, TileReader, open_store, write_json

if TYPE_CHECKING:  # annotations only: torch is imported where a tensor is made
    import torch

    from ..train.engine import FitResult


@dataclass
class Tiles:
    """tiles.zarr opened and checked, with its class layout."""

    path: Path
    group: zarr.Group

    @classmethod
    def open(cls, path: str | Path) -> Tiles:
        return cls(Path(path), open_store(path, "tiles"))

    @property
    def attrs(self) -> Mapping:
        return self.group.attrs

    @property
    def n(self) -> int:
        return self.group["images"].shape[0]

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.group["images"].shape[-2:])

    @property
    def bands(self) -> int:
        return self.group["images"].shape[1]

    @property
    def classes(self) -> list[str]:
        return list(self.attrs["classes"])

    @property
    def background(self) -> bool:
        return bool(self.attrs["background"])

    @property
    def n_targets(self) -> int:
        return self.group["cls_labels"].shape[1]

    def split_codes(self) -> np.ndarray:
        return self.group["split"][:]

    def indices(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.split_codes() == SPLITS.index(split))

    def require(self, split: str, purpose: str) -> np.ndarray:
        idx = self.indices(split)
        if len(idx) == 0:
            raise DataError(
                f"{self.path}: the {split} split holds no tiles, but {purpose} needs them; "
                "check the split section of the config"
            )
        return idx


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class _RecordUnpickler(pickle.Unpickler):
    """Reads a model file's pickled dict without torch: every torch object (tensors, sizes) becomes None."""

    def find_class(self, module: str, name: str):
        if module == "torch" or module.startswith("torch."):
            return lambda *args, **kwargs: None
        if module in ("collections", "builtins") and name in ("OrderedDict", "set", "frozenset", "slice"):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in an atsg model file")

    def persistent_load(self, pid):
        return None


def model_record(path: str | Path) -> dict:
    """The record of a model file (artifact, artifact_key, inputs, kind, classes) without loading torch, so
    that preparing a sharded store stays quick."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            name = next(n for n in archive.namelist() if n.endswith("/data.pkl"))
            data = _RecordUnpickler(io.BytesIO(archive.read(name))).load()
    except (OSError, StopIteration, zipfile.BadZipFile, pickle.UnpicklingError, EOFError) as exc:
        raise DataError(f"{path}: not a readable model file ({exc}); delete it and retrain") from None
    if not isinstance(data, dict) or "atsg_model" not in data:
        raise DataError(f"{path}: not an atsg model file")
    return {
        k: data.get(k)
        for k in ("atsg_model", "atsg_version", "artifact", "artifact_key", "inputs", "classes", "imagery")
    }


def save_model_file(path: Path, state: dict, kind: str, section: Mapping, record: Mapping, **meta) -> None:
    """A trained model: its weights, the section it is built from and its record (artifact key, inputs)."""
    from ..train.engine import save_atomic

    save_atomic(
        {
            **dict(record),
            "atsg_model": kind,
            "atsg_version": __version__,
            "config": dict(section),
            "state_dict": state,
            **meta,
        },
        Path(path),
    )


def load_model_file(path: str | Path, kind: str) -> dict:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no {kind} model; run the stage that trains it first")
    import torch

    try:
        ck = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise DataError(f"{path}: not a readable model file ({exc}); delete it and retrain") from None
    if not isinstance(ck, dict) or ck.get("atsg_model") != kind:
        raise DataError(f"{path}: not an atsg {kind} model file")
    return ck


CURVES = ("history", "losses")
"""The per-step lists of a training's metrics.json: validations and the loss curve."""


def write_training_metrics(path: Path, result: FitResult, **fields) -> dict:
    """A training's metrics.json: ``fields`` (what the stage chose and trained on), how it ran (seconds, training
    steps per second, torch threads, CPU capability, autocast dtype, the step it resumed from) and its curves.
    Returns the same without the curves: the stage's summary."""
    import torch

    metrics = {
        **fields,
        "seconds": round(result.seconds, 1),
        "steps_per_second": round(result.steps_per_second, 3),
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "autocast": result.autocast,
        "resumed_from": result.resumed_from,
        "history": result.history,
        "losses": result.losses,
    }
    write_json(path, metrics)
    return {k: v for k, v in metrics.items() if k not in CURVES}


def check_classes(ck: Mapping, tiles: Tiles, path) -> None:
    if list(ck.get("classes", [])) != tiles.classes:
        raise DataError(
            f"{path}: trained for classes {ck.get('classes')}, but {tiles.path} holds {tiles.classes}; "
            "retrain it on these tiles"
        )


def load_trained(path: str | Path, kind: str, tiles: Tiles, build, device: torch.device):
    """(model in eval mode on ``device``, file dict) of a trained atsg model file; ``build(cfg)`` makes the
    architecture from the settings saved with it (its weights come from the file, never from timm)."""
    ck = load_model_file(path, kind)
    check_classes(ck, tiles, path)
    return build_trained(ck, build, device), ck


def build_trained(ck: Mapping, build, device: torch.device):
    """The network of a loaded model file in eval mode on ``device``: ``build(cfg)`` makes it from the settings
    saved with it, and its weights come from the file, never from timm."""
    model = build(dict(ck["config"], pretrained=False, checkpoint=None, random_init=True, weights=None))
    model.load_state_dict(ck["state_dict"])
    return model.to(device).eval()


def open_masks(path: str | Path | None, tiles: Tiles, purpose: str):
    """masks.zarr checked against the tiles; ``purpose`` names the settings that need it."""
    if path is None:
        raise DataError(f"{purpose} need(s) a masks store, but none was given (--masks)")
    masks = open_store(path, "masks")
    if masks["objects"].shape != (tiles.n, *tiles.size):
        raise DataError(
            f"{path}: masks of shape {masks['objects'].shape} do not match {tiles.path}; rerun generate_masks"
        )
    return masks


def batches(indices: Sequence[int], size: int, desc: str) -> Iterator[np.ndarray]:
    """Consecutive index batches with a progress bar."""
    indices = np.asarray(indices)
    return unit_progress([indices[start : start + size] for start in range(0, len(indices), size)], desc)


def consecutive_units(n: int, size: int) -> list[np.ndarray]:
    """Tiles 0..n-1 in runs of ``size`` consecutive indices (the units of a sharded stage)."""
    return [np.arange(start, min(start + size, n)) for start in range(0, n, size)]


def unit_progress(units: Sequence[np.ndarray], desc: str) -> Iterator[np.ndarray]:
    """The units of one shard with a progress bar counting tiles."""
    bar = tqdm(total=int(sum(len(u) for u in units)), desc=desc, unit="tile", mininterval=5, dynamic_ncols=True)
    for unit in units:
        yield unit
        bar.update(len(unit))
    bar.close()


def read_tiles(array, idx: np.ndarray) -> np.ndarray:
    """Rows ``idx`` of a per-tile zarr array, each chunk checked against the store's seal; single-chunk arrays
    (image-level labels, splits) through zarr."""
    idx = np.asarray(idx)
    if array.chunks[0] == 1:
        return TileReader(array).read(idx)
    if len(idx) and np.all(np.diff(idx) == 1):
        return array[int(idx[0]) : int(idx[-1]) + 1]
    return np.stack([array[int(i)] for i in idx]) if len(idx) else array[0:0]


def read_cams(cams, idx: np.ndarray, aux_weight: float) -> torch.Tensor:
    """CAMs (float32) of tiles ``idx`` from cams.zarr, the auxiliary head mixed in by ``aux_weight``."""
    import torch

    from ..cam import fuse_heads

    cam = torch.from_numpy(read_tiles(cams["cams"], idx).astype(np.float32))
    aux = torch.from_numpy(read_tiles(cams["cams_aux"], idx).astype(np.float32)) if aux_weight else None
    return fuse_heads(cam, aux, aux_weight)


def evenly_spaced(idx: np.ndarray, limit: int | None) -> np.ndarray:
    if limit is None or len(idx) <= limit:
        return idx
    return idx[np.linspace(0, len(idx) - 1, limit).round().astype(int)]
