"""Training samples from tiles.zarr: random rescale, crop and flip, seeded per (step, slot).

Sample ``i`` of the run is fully determined by (seed, i): a resumed run draws
exactly the batches an uninterrupted run would have drawn.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F
import zarr
from torch.utils.data import Dataset

from ..store import IGNORE


def rescale_crop_flip(image: torch.Tensor, label: torch.Tensor | None, rng: np.random.Generator,
                      crop: int, scale_range, flip: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """image (C, H, W) float, label (H, W) long or None -> a crop x crop sample (image padded 0, label IGNORE)."""
    scale = float(rng.uniform(*scale_range))
    h, w = image.shape[-2:]
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    image = F.interpolate(image[None], size=(nh, nw), mode="bilinear", align_corners=False)[0]
    if label is not None:
        label = F.interpolate(label[None, None].float(), size=(nh, nw), mode="nearest")[0, 0].long()
    ph, pw = max(crop - nh, 0), max(crop - nw, 0)
    if ph or pw:
        image = F.pad(image, (0, pw, 0, ph), value=0.0)
        if label is not None:
            label = F.pad(label, (0, pw, 0, ph), value=IGNORE)
    y = int(rng.integers(0, image.shape[-2] - crop + 1))
    x = int(rng.integers(0, image.shape[-1] - crop + 1))
    image = image[:, y:y + crop, x:x + crop]
    if label is not None:
        label = label[y:y + crop, x:x + crop]
    if flip and rng.random() < 0.5:
        image = image.flip(-1)
        if label is not None:
            label = label.flip(-1)
    return image, label


class TrainSamples(Dataset):
    """Item ``i`` (a global sample counter) -> augmented sample of a tile drawn by (seed, i).

    ``targets``: "cls" (image-level labels of tiles.zarr), "pseudo" (a pseudo-label
    store) or "truth" (the tiles' ground truth, for the supervised upper bound).
    """

    def __init__(self, tiles_path: Path, indices: np.ndarray, cfg: Mapping, targets: str,
                 labels_path: Path | None = None):
        self.tiles_path, self.labels_path = str(tiles_path), (str(labels_path) if labels_path else None)
        self.indices = np.asarray(indices)
        self.cfg, self.targets = cfg, targets
        self._tiles = self._labels = None

    def __len__(self) -> int:  # samples are addressed by a global counter; the sampler bounds it
        return 2 ** 62

    def _open(self):
        if self._tiles is None:
            self._tiles = zarr.open_group(self.tiles_path, mode="r")
            if self.labels_path:
                self._labels = zarr.open_group(self.labels_path, mode="r")

    def __getitem__(self, i: int) -> dict:
        self._open()
        rng = np.random.default_rng([self.cfg["seed"], int(i)])
        tile = int(self.indices[rng.integers(len(self.indices))])
        image = torch.from_numpy(self._tiles["images"][tile]).float()
        if self.targets == "cls":
            label = None
        elif self.targets == "truth":
            label = torch.from_numpy(self._tiles["labels"][tile]).long()
        else:
            label = torch.from_numpy(self._labels["labels"][tile]).long()
        image, label = rescale_crop_flip(image, label, rng, self.cfg["crop_size"], self.cfg["scale_range"],
                                         self.cfg["flip"])
        sample = {"image": image, "tile": tile}
        if label is not None:
            sample["label"] = label
        else:
            sample["cls"] = torch.from_numpy(self._tiles["cls_labels"][tile].astype(np.float32))
        return sample


class RangeSampler(torch.utils.data.Sampler):
    """Sample counters start..stop (start > 0 after a resume)."""

    def __init__(self, start: int, stop: int):
        self.start, self.stop = start, stop

    def __iter__(self):
        return iter(range(self.start, self.stop))

    def __len__(self) -> int:
        return self.stop - self.start
