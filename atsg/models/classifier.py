"""The CAM classifier of METHOD.md: ViT tokens -> bias-free 1x1 heads -> global max pooling."""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .backbone import ViTBackbone, pad_to_patch


class CAMClassifier(nn.Module):
    """Final-block and auxiliary-block heads; logits by global max pooling of the class maps."""

    def __init__(self, cfg: Mapping, in_chans: int, n_targets: int, section: str = "classifier"):
        super().__init__()
        self.backbone = ViTBackbone(cfg["backbone"], in_chans, cfg, section)
        self.aux_layer = self.backbone.block_index(cfg["aux_layer"])
        dim = self.backbone.embed_dim
        self.head = nn.Conv2d(dim, n_targets, 1, bias=False)
        self.head_aux = nn.Conv2d(dim, n_targets, 1, bias=False)
        self.n_targets = n_targets

    def head_parameters(self):
        return list(self.head.parameters()) + list(self.head_aux.parameters())

    def tokens(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(final, auxiliary) token maps of a uint8/float image batch (B, bands, H, W)."""
        x = pad_to_patch(self.backbone.normalize(images), self.backbone.patch_size)
        final, aux = self.backbone(x, [self.backbone.depth - 1, self.aux_layer])
        return final, aux

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        final, aux = self.tokens(images)
        maps, maps_aux = self.head(final), self.head_aux(aux)
        return {
            "logits": F.adaptive_max_pool2d(maps, 1).flatten(1),
            "logits_aux": F.adaptive_max_pool2d(maps_aux, 1).flatten(1),
            "maps": maps, "maps_aux": maps_aux, "tokens": final,
        }

    @torch.no_grad()
    def cams(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """ReLU class maps (final, auxiliary) at token resolution, and the final tokens."""
        out = self.forward(images)
        return F.relu(out["maps"]), F.relu(out["maps_aux"]), out["tokens"]
