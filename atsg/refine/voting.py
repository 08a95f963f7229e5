"""Mask voting: each object of the class-agnostic object map takes the majority class of its labelled
pixels when the vote is confident; other pixels keep their label."""

from __future__ import annotations

import torch

from ..store import IGNORE


def vote(
    labels: torch.Tensor, objects: torch.Tensor, n_classes: int, threshold: float, min_labelled: float
) -> torch.Tensor:
    """labels (B, H, W) long with IGNORE, objects (B, H, W) ids (0 = none) -> voted labels.

    An object votes when at least ``min_labelled`` of its pixels carry a label and
    the winning class holds at least ``threshold`` of those; then all its pixels
    (ignored ones included) take the winner. One bincount for the whole batch.
    """
    b = labels.shape[0]
    objects = objects.long()
    n_ids = int(objects.max().item()) + 1 if objects.numel() else 1
    region = objects + torch.arange(b, device=labels.device).view(b, 1, 1) * n_ids  # unique per tile
    n_regions = b * n_ids
    labelled = labels != IGNORE
    keys = region[labelled] * n_classes + labels[labelled]
    counts = torch.bincount(keys, minlength=n_regions * n_classes).view(n_regions, n_classes)
    size = torch.bincount(region.flatten(), minlength=n_regions)
    n_lab = counts.sum(1)
    top, winner = counts.max(1)
    confident = (n_lab >= min_labelled * size.clamp_min(1)) & (n_lab > 0) & (top >= threshold * n_lab.clamp_min(1))
    confident = confident.view(b, n_ids)
    confident[:, 0] = False  # id 0: boundaries and pixels outside every object
    take = confident.flatten()[region]
    out = labels.clone()
    out[take] = winner[region][take]
    return out
