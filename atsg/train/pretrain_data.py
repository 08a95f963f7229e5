"""Multi-crop views of unlabelled tiles for self-supervised pretraining (DINO's augmentation), seeded per sample.

Sample ``i`` is fully determined by (seed, i), as the other training samples: two global views (random resized
crop of the tile to ``global_size``, flip, colour jitter, greyscale, blur; the second view rarely blurred and
sometimes solarized) and ``local_crops`` small views. No label is ever read.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
import zarr
from torch.utils.data import Dataset

from ..store import TileReader
from .datasets import float_image
from .views import photometric, random_resized_crop


def multicrop(tile: torch.Tensor, rng: np.random.Generator, cfg: Mapping) -> tuple[torch.Tensor, torch.Tensor]:
    """(global views (2, C, G, G), local views (L, C, l, l)) of a tile (C, H, W) with 0-255 values."""
    aug, v = cfg["augment"], cfg["views"]

    def view(size: int, scale, blur: float, solarize: float) -> torch.Tensor:
        out = random_resized_crop(tile, rng, size, scale)
        if cfg["flip"] and rng.random() < 0.5:
            out = out.flip(-1)
        if aug["enabled"]:
            out = photometric(out, rng, aug, blur, solarize)
        return out.contiguous()

    blur, solarize = v["global_blur"], v["global_solarize"]
    globals_ = torch.stack([view(v["global_size"], v["global_scale"], blur[i], solarize[i]) for i in range(2)])
    locals_ = torch.stack(
        [view(v["local_size"], v["local_scale"], v["local_blur"], 0.0) for _ in range(v["local_crops"])]
    )
    return globals_, locals_


class PretrainSamples(Dataset):
    """Item ``i`` (a global sample counter) -> the multi-crop views of a tile drawn by (seed, i)."""

    def __init__(self, tiles_path: Path, indices: np.ndarray, cfg: Mapping):
        self.tiles_path, self.indices, self.cfg = str(tiles_path), np.asarray(indices), cfg
        self._images = None

    def __len__(self) -> int:
        return 2**62

    def __getitem__(self, i: int) -> dict:
        if self._images is None:
            self._images = TileReader(zarr.open_group(self.tiles_path, mode="r")["images"])
        rng = np.random.default_rng([self.cfg["seed"], int(i)])
        tile = int(self.indices[rng.integers(len(self.indices))])
        globals_, locals_ = multicrop(float_image(self._images[tile]), rng, self.cfg)
        return {"global": globals_, "local": locals_, "tile": tile}
