"""Segmentation inference on tile batches: optional multi-scale and flip, probabilities averaged."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


@torch.no_grad()
def predict_probs(model, images: torch.Tensor, scales: Sequence[float] = (1.0,), flip: bool = False) -> torch.Tensor:
    """(B, classes, H, W) softmax probabilities of a uint8/float image batch."""
    h, w = images.shape[-2:]
    total = None
    for s in scales:
        x = images.float()
        if s != 1.0:
            x = F.interpolate(
                x, size=(max(1, round(h * s)), max(1, round(w * s))), mode="bilinear", align_corners=False
            )
        views = [x, x.flip(-1)] if flip else [x]
        for k, v in enumerate(views):
            logits = model(v).float()
            if k == 1:
                logits = logits.flip(-1)
            if logits.shape[-2:] != (h, w):
                logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
            p = logits.softmax(1)
            total = p if total is None else total + p
    return total / (len(scales) * (2 if flip else 1))
