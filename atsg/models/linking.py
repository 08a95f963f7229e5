"""Frozen self-supervised features for adaptive token linking (e.g. DINO ViT-B/16)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .backbone import ViTBackbone

SECTION = "classifier.linking"


class LinkingFeatures(nn.Module):
    """Final-block tokens of a frozen timm ViT (after its final norm, as the published DinoFeaturizer),
    resampled to the classifier's token grid when the grids differ."""

    def __init__(self, cfg: Mapping, in_chans: int):
        super().__init__()
        if not cfg.get("checkpoint") and not cfg.get("pretrained"):
            raise ConfigError(
                f"config key {SECTION}.checkpoint is not set: linking.features 'dino' needs the weights of "
                f"{cfg['backbone']} (a local file, e.g. DINO's dino_vitbase16_pretrain.pth; or "
                f"{SECTION}.pretrained: true when online), or set {SECTION}.features: self"
            )
        self.vit = ViTBackbone(cfg["backbone"], in_chans, {**cfg, "random_init": False}, SECTION)
        self.final_norm = bool(cfg.get("final_norm", True))
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
