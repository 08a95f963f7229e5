"""The CAM classifier of METHOD.md: ViT tokens -> bias-free 1x1 heads; image logits by global max pooling
(published; or mean or top-k pooling).

Published form (the defaults; :func:`atsg.factory.classifier` reads them from the config): final tokens after
the ViT's final LayerNorm (``final_norm``), logits of the max-pooled token map (``pool_first``), and an adaptive
auxiliary block: at every forward pass, among the candidate ``aux_blocks`` the block whose mean activation is
closest to the candidates' mean.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from .backbone import ViTBackbone


def choose_block(maps: Sequence[torch.Tensor], groups: torch.Tensor | None = None) -> torch.Tensor:
    """The adaptive auxiliary token map: of candidate maps (each (B, D, h, w)), per group of images the one
    whose mean activation (over tokens and channels) is closest, in mean absolute difference over the
    group's images, to the mean over candidates and images; ties go to the earlier candidate.

    ``groups`` (B,) group ids; None: the whole batch is one group (the published code's choice).
    """
    if len(maps) == 1:
        return maps[0]
    with torch.no_grad():
        means = torch.stack([m.detach().float().mean(dim=(1, 2, 3)) for m in maps])  # (L, B)
        if groups is None:
            groups = torch.zeros(means.shape[1], dtype=torch.long, device=means.device)
        choice = torch.empty_like(groups)
        for g in torch.unique(groups):
            members = groups == g
            m = means[:, members]
            choice[members] = torch.argmin((m - m.mean()).abs().mean(1))
    if bool((choice == choice[0]).all()):
        return maps[int(choice[0])]
    stacked = torch.stack(list(maps))  # (L, B, D, h, w)
    return stacked[choice, torch.arange(len(choice), device=choice.device)]


def topk_pool(x: torch.Tensor, fraction: float) -> torch.Tensor:
    """Global top-k pooling of (B, C, h, w) maps to (B, C, 1, 1): per channel, the mean of its
    ``ceil(fraction * h * w)`` highest values (at least one). Between max pooling (one value) and mean
    pooling (fraction 1, every value)."""
    flat = x.flatten(2)
    k = max(1, min(flat.shape[2], math.ceil(fraction * flat.shape[2])))
    return flat.topk(k, dim=2).values.mean(2)[..., None, None]


# Global pooling by name: each entry makes the pooling function from the top-k share (used by topk only).
_POOLS = {
    "max": lambda share: partial(F.adaptive_max_pool2d, output_size=1),
    "mean": lambda share: partial(F.adaptive_avg_pool2d, output_size=1),
    "topk": lambda share: partial(topk_pool, fraction=share),
}


class CAMClassifier(nn.Module):
    """Final-block and auxiliary-block heads; logits by global max pooling (or mean or top-k pooling)."""

    def __init__(
        self,
        backbone: ViTBackbone,
        n_targets: int,
        aux_blocks: Sequence[int],
        final_norm: bool = True,
        pool_first: bool = True,
        pooling: str = "max",
        pool_topk: float = 0.25,
    ):
        """``aux_blocks``: the block of the auxiliary head (one index), or its candidates (several: chosen at every
        forward pass by :func:`choose_block`). ``final_norm``: final tokens after the ViT's final LayerNorm.
        ``pool_first``: logits of the pooled tokens (published), else the pool of the class maps. ``pooling``:
        global ``max`` (published), ``mean`` or ``topk`` pooling (the mean of the highest ``pool_topk`` share of
        each channel's values, :func:`topk_pool`)."""
        super().__init__()
        if pooling not in _POOLS:
            raise ValueError(f"pooling must be one of {sorted(_POOLS)}, not {pooling!r}")
        self.backbone = backbone
        self.aux_blocks = [backbone.block_index(b) for b in aux_blocks]
        self.final_norm = bool(final_norm)
        self.pool_first = bool(pool_first)
        if not 0 < pool_topk <= 1:
            raise ValueError(f"pool_topk must lie in (0, 1], not {pool_topk!r}")
        self.pool = _POOLS[pooling](float(pool_topk))
        dim = backbone.embed_dim
        self.head = nn.Conv2d(dim, n_targets, 1, bias=False)
        self.head_aux = nn.Conv2d(dim, n_targets, 1, bias=False)
        self.n_targets = n_targets

    def head_parameters(self):
        return list(self.head.parameters()) + list(self.head_aux.parameters())

    def _features(
        self,
        images: torch.Tensor,
        extra: Sequence[int] = (),
        class_token: bool = False,
        groups: torch.Tensor | None = None,
    ):
        """(final tokens, auxiliary tokens, tokens of ``extra`` blocks, class token or None)."""
        x = self.backbone.prepare(images)
        last = self.backbone.depth - 1
        blocks = [last, *self.aux_blocks, *extra]
        feats, cls = self.backbone.forward_with_class_token(x, blocks, self.final_norm)
        n = len(self.aux_blocks)
        aux = choose_block(feats[1 : 1 + n], groups)
        return feats[0], aux, feats[1 + n :], (cls if class_token else None)

    def _logits(self, tokens: torch.Tensor, maps: torch.Tensor, head: nn.Conv2d) -> torch.Tensor:
        if self.pool_first:  # as published: pool the tokens (by `pooling`), then the 1x1 classifier
            return head(self.pool(tokens)).flatten(1)
        return self.pool(maps).flatten(1)

    def image_logits(self, tokens: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
        """Image-level logits (B, K) from final tokens and their class maps, as ``forward``'s "logits"."""
        return self._logits(tokens, maps, self.head)

    def tokens(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(final, auxiliary) token maps of a uint8/float image batch (B, bands, H, W)."""
        final, aux, _, _ = self._features(images)
        return final, aux

    def forward(
        self, images: torch.Tensor, link_block: int | None = None, class_token: bool = False
    ) -> dict[str, torch.Tensor]:
        """Logits, class maps and final tokens; with ``link_block`` also that block's tokens (detached,
        "link_tokens"), with ``class_token`` the normalised final class token ("class_token")."""
        extra = [link_block] if link_block is not None else []
        final, aux, more, cls = self._features(images, extra, class_token)
        maps, maps_aux = self.head(final), self.head_aux(aux)
        out = {
            "logits": self._logits(final, maps, self.head),
            "logits_aux": self._logits(aux, maps_aux, self.head_aux),
            "maps": maps,
            "maps_aux": maps_aux,
            "tokens": final,
        }
        if link_block is not None:
            out["link_tokens"] = more[0].detach()
        if cls is not None:
            out["class_token"] = cls
        return out

    def class_token(self, images: torch.Tensor) -> torch.Tensor:
        """The normalised final class token (B, D) of an image batch of any size."""
        x = self.backbone.prepare(images)
        return self.backbone.forward_with_class_token(x, [self.backbone.depth - 1])[1]

    @torch.no_grad()
    def cams(
        self, images: torch.Tensor, groups: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Class maps (final, auxiliary) at token resolution, before any ReLU, and the final tokens; ``groups``
        as in :func:`choose_block` (None: the batch is one group)."""
        final, aux, _, _ = self._features(images, groups=groups)
        return self.head(final), self.head_aux(aux), final
