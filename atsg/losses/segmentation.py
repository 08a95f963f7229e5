"""Segmentation losses on pseudo-labels."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..store import IGNORE


def balanced_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, background: bool) -> torch.Tensor:
    """Mean of the cross-entropy over background pixels and over foreground pixels (METHOD.md).

    Without a background class (or when one of the two groups is empty) it is the
    plain cross-entropy over the labelled pixels. Pixels labelled IGNORE never count.
    """
    logits = logits.float()
    labelled = labels != IGNORE
    if not labelled.any():
        return logits.sum() * 0.0
    if not background:
        return F.cross_entropy(logits, labels, ignore_index=IGNORE)
    bg = labelled & (labels == 0)
    fg = labelled & (labels != 0)
    if not bg.any() or not fg.any():
        return F.cross_entropy(logits, labels, ignore_index=IGNORE)
    ce = F.cross_entropy(logits, labels.masked_fill(~labelled, 0), reduction="none")
    return 0.5 * (ce[bg].mean() + ce[fg].mean())
