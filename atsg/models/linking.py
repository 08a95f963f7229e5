"""Frozen self-supervised features for adaptive token linking (e.g. DINO ViT-B/16)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .backbone import ViTBackbone


class LinkingFeatures(nn.Module):
    """Final-block tokens of a frozen timm ViT (after its final norm, as the published DinoFeaturizer),
    resampled to the classifier's token grid when the grids differ."""

    def __init__(self, backbone: ViTBackbone, final_norm: bool = True):
        super().__init__()
        self.vit = backbone
        self.final_norm = bool(final_norm)
        self.vit.eval()
        for p in self.vit.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True) -> LinkingFeatures:
        return super().train(False)  # always frozen, never in training mode

    @torch.no_grad()
    def forward(self, images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """(B, D, *size) features of an image batch (0-255 values)."""
        x = self.vit.prepare(images)
        feats = self.vit(x, [self.vit.depth - 1], self.final_norm)[0].float()
        if tuple(feats.shape[-2:]) != tuple(size):
            feats = F.interpolate(feats, size=size, mode="bilinear", align_corners=False)
        return feats
