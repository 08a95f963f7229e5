"""Assigning scenes to the train/val/test splits (seeded ratios, official scene lists or folders)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError
from .layout import Scene

log = logging.getLogger(__name__)


def _seeded_order(ids: Sequence[str], seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    ids = sorted(ids)
    return [ids[i] for i in rng.permutation(len(ids))]


def _by_ratio(ids: list[str], ratios: Sequence[float], seed: int) -> dict[str, str]:
    order = _seeded_order(ids, seed)
    total = float(sum(ratios))
    n = len(order)
    n_train = int(round(n * ratios[0] / total))
    n_val = int(round(n * ratios[1] / total))
    # Every split with a positive ratio gets at least one scene when there are enough scenes.
    if ratios[1] > 0 and n_val == 0 and n - n_train > 0:
        n_val = 1
    if ratios[2] > 0 and n_train + n_val >= n and n >= 3:
        n_train = max(1, n - n_val - 1)
    assignment = {}
    for k, sid in enumerate(order):
        assignment[sid] = "train" if k < n_train else ("val" if k < n_train + n_val else "test")
    return assignment


def _carve_val(assignment: dict[str, str], fraction: float, seed: int) -> None:
    train = [s for s, split in assignment.items() if split == "train"]
    if fraction <= 0 or len(train) < 2 or any(v == "val" for v in assignment.values()):
        return
    n_val = max(1, int(round(len(train) * fraction)))
    for sid in _seeded_order(train, seed)[:n_val]:
        assignment[sid] = "val"


def assign_splits(scenes: Sequence[Scene], split: Mapping, root: Path | None) -> dict[str, str]:
    """Scene id -> 'train' | 'val' | 'test' for the scenes to tile (scenes left out are skipped)."""
    ids = [s.id for s in scenes]
    method = split["method"]
    if method == "ratio":
        return _by_ratio(ids, split["ratios"], split["seed"])

    assignment: dict[str, str] = {}
    if method == "scenes":
        lists = {name: set(map(str, split[name])) for name in ("train", "val", "test")}
        for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
            both = lists[a] & lists[b]
            if both:
                raise ConfigError(f"config keys split.{a} / split.{b}: scene(s) {sorted(both)[:3]} are in both")
        if not lists["train"] and not lists["test"]:
            raise ConfigError("config key split.train: method 'scenes' needs scene lists in split.train/val/test")
        for sid in ids:
            for name, members in lists.items():
                if sid in members:
                    assignment[sid] = name
        missing = sorted(set().union(*lists.values()) - set(ids))
        if missing:
            log.warning("%d listed scene(s) not found under the dataset root, e.g. %s", len(missing), missing[:3])
    elif method == "folders":
        if not split["folders"]:
            raise ConfigError("config key split.folders: method 'folders' needs a mapping folder name -> split")
        for scene in scenes:
            parts = scene.relative_parts(root) if root is not None else scene.image.parent.parts
            hits = {split["folders"][p] for p in parts if p in split["folders"]}
            if len(hits) > 1:
                raise DataError(f"{scene.image}: its path names folders of several splits {sorted(hits)}")
            if hits:
                assignment[scene.id] = hits.pop()

    unlisted = sorted(set(ids) - set(assignment))
    if unlisted:
        if split["unlisted"] == "error":
            raise DataError(
                f"{len(unlisted)} scene(s) are in no split, e.g. {unlisted[:3]}; list them in config key "
                f"split.{'train' if method == 'scenes' else 'folders'} or set split.unlisted: skip"
            )
        log.warning("skipping %d scene(s) that are in no split, e.g. %s", len(unlisted), unlisted[:3])
    _carve_val(assignment, split["val_fraction"], split["seed"])
    return assignment
