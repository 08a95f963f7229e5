"""Which config sections make each artifact of a run.

The key of an artifact is the canonical JSON of every section it and its
upstream artifacts read. Two configs that agree on an artifact's key make the
same artifact, so an ablation variant reuses the main run's file (or another
variant's) instead of computing it again.
"""

from __future__ import annotations

import hashlib
import json
from typing import Mapping

from .config import supervised_section

ARTIFACTS = ("tiles", "classifier", "cams", "masks", "pseudo_labels", "segmentation", "supervised",
             "predictions", "supervised_predictions", "eval")
"""Every artifact of a run, upstream first."""

TILE_SECTIONS = ("run", "results_dir", "dataset", "split", "tiling", "synthetic")
"""Sections that make tiles.zarr; every run and variant of one run shares them."""


def joint(cfg: Mapping) -> bool:
    """Paper mode: the classifier stage also trains the segmentation decoders (METHOD.md's single stage)."""
    return bool(cfg["classifier"]["joint_segmentation"])


def needs_masks(cfg: Mapping) -> bool:
    """Whether segmentation training reads masks.zarr (SAM object or boundary loss on)."""
    seg = cfg["segmentation"]
    return bool(seg["object_loss"]["enabled"] or seg["boundary_loss"]["enabled"])


def _own(cfg: Mapping, artifact: str) -> dict:
    """The sections an artifact's own rule reads."""
    if artifact == "tiles":
        return {s: cfg[s] for s in TILE_SECTIONS}
    if artifact == "classifier":
        own = {"classifier": cfg["classifier"]}
        if joint(cfg):  # decoders, their losses and the on-the-fly pseudo-labels
            own.update({s: cfg[s] for s in ("segmentation", "cams", "refine")})
        return own
    if artifact == "supervised":
        return {"segmentation": supervised_section(cfg["segmentation"])}
    if artifact == "pseudo_labels":
        return {"refine": cfg["refine"]}
    if artifact in ("predictions", "supervised_predictions"):
        return {"predict": cfg["predict"]}
    if artifact == "eval":
        return {"evaluate": cfg["evaluate"], "refine": cfg["refine"]}
    return {artifact: cfg[artifact]}


def upstream(cfg: Mapping, artifact: str) -> tuple[str, ...]:
    """The artifacts ``artifact`` is made from (paper mode: predictions come from the classifier stage)."""
    masks = needs_masks(cfg)
    if artifact == "tiles":
        return ()
    if artifact == "classifier":
        return ("tiles", "masks") if joint(cfg) and masks else ("tiles",)
    if artifact == "cams":
        return ("tiles", "classifier")
    if artifact == "pseudo_labels":
        ups = ["tiles", "cams"]
        if cfg["refine"]["mask_voting"]:
            ups.append("masks")
        if cfg["refine"]["affinity"]:
            ups.append("classifier")
        return tuple(ups)
    if artifact == "segmentation":
        return ("tiles", "pseudo_labels", "masks") if masks else ("tiles", "pseudo_labels")
    if artifact == "predictions":
        return ("tiles", "classifier" if joint(cfg) else "segmentation")
    if artifact == "supervised_predictions":
        return ("tiles", "supervised")
    if artifact == "eval":
        ups = ["tiles", "cams", "pseudo_labels", "predictions"]
        if cfg["evaluate"]["supervised_baseline"]:
            ups.append("supervised_predictions")
        return tuple(ups)
    if artifact in ("masks", "supervised"):
        return ("tiles",)
    raise KeyError(f"unknown artifact {artifact!r}; one of {ARTIFACTS}")


def artifact_key(cfg: Mapping, artifact: str) -> str:
    """A digest of everything that makes ``artifact`` (its sections and its upstream keys): equal keys, equal artifacts."""
    parts = {"self": _own(cfg, artifact), "from": {up: artifact_key(cfg, up) for up in upstream(cfg, artifact)}}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
