"""The CAM classifier of METHOD.md: ViT tokens -> bias-free 1x1 heads -> global max pooling."""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .backbone import ViTBackbone


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
        x = self.backbone.prepare(images)
        final, aux = self.backbone(x, [self.backbone.depth - 1, self.aux_layer])
        return final, aux

    def forward(self, images: torch.Tensor, link_block: int | None = None,
                class_token: bool = False) -> dict[str, torch.Tensor]:
        """Logits, class maps and final tokens; with ``link_block`` also that block's tokens (detached,
        "link_tokens"), with ``class_token`` the normalised final class token ("class_token")."""
        x = self.backbone.prepare(images)
        blocks = [self.backbone.depth - 1, self.aux_layer] + ([link_block] if link_block is not None else [])
        if class_token:
            feats, cls = self.backbone.forward_with_class_token(x, blocks)
        else:
            feats, cls = self.backbone(x, blocks), None
        final, aux = feats[0], feats[1]
        maps, maps_aux = self.head(final), self.head_aux(aux)
        out = {
            "logits": F.adaptive_max_pool2d(maps, 1).flatten(1),
            "logits_aux": F.adaptive_max_pool2d(maps_aux, 1).flatten(1),
            "maps": maps, "maps_aux": maps_aux, "tokens": final,
        }
        if link_block is not None:
            out["link_tokens"] = feats[2].detach()
        if cls is not None:
            out["class_token"] = cls
        return out

    def class_token(self, images: torch.Tensor) -> torch.Tensor:
        """The normalised final class token (B, D) of an image batch of any size."""
        x = self.backbone.prepare(images)
        return self.backbone.forward_with_class_token(x, [self.backbone.depth - 1])[1]

    @torch.no_grad()
    def cams(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """ReLU class maps (final, auxiliary) at token resolution, and the final tokens."""
        out = self.forward(images)
        return F.relu(out["maps"]), F.relu(out["maps_aux"]), out["tokens"]
