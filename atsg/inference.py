"""Segmentation inference on tile batches: optional multi-scale and flip, probabilities averaged, optional dense CRF."""

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


def input_scale(input_size: int | str | None, side: int, crop_size: int | None) -> float:
    """The factor that brings a tile of ``side`` px to an ``input_size`` setting: pixels, ``crop`` (the model's
    training crop, ``crop_size``) or None (the tile's own size)."""
    if input_size is None:
        return 1.0
    if input_size == "crop":
        if crop_size is None:
            raise ValueError("input_size: crop needs the model's training crop size")
        input_size = crop_size
    return int(input_size) / side


@torch.no_grad()
def segment_probs(
    model, images: torch.Tensor, settings, valid: torch.Tensor | None = None, crop_size: int | None = None
) -> torch.Tensor:
    """(B, classes, H, W) probabilities of square tiles as a prediction section (``predict`` or ``map``) says:
    the model's softmax with the tiles resized to ``input_size`` (``crop``: ``crop_size``, the model's training
    crop) times each of ``scales`` (with ``flip``), back at the tiles' size; then the dense CRF of ``crf`` when
    it is on."""
    base = input_scale(settings["input_size"], images.shape[-1], crop_size)
    probs = predict_probs(model, images, [s * base for s in settings["scales"]], settings["flip"])
    if settings["crf"]["enabled"]:
        from .crf import dense_crf

        probs = dense_crf(images, probs, settings["crf"], valid)
    return probs
