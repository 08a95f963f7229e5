"""Pixel-adaptive refinement (PAR) of class maps on the image, vectorised.

Same propagation as the published PAR: 8 neighbours at each dilation, colour
affinity softmax(-(|I_i - I_j| / std / w_rgb)^2) averaged over channels, plus
w_pos * softmax of the (constant) distance term, iterated. The published code
builds the neighbours with one convolution per dilation and repeats the centre
image and the position grid to the neighbour count; here neighbours are strided
views of one replicate-padded tensor, and the affinity and every propagation step
are accumulated view by view, so memory stays at the affinity tensor itself
(benchmarks/par.py measures both ways).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

_OFFSETS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


def views(x: torch.Tensor, dilations: Sequence[int]):
    """The neighbour views of ``x`` (B, C, H, W), one per (dilation, offset), of one replicate-padded copy."""
    h, w = x.shape[-2:]
    pad = max(dilations)
    padded = F.pad(x, (pad,) * 4, mode="replicate")
    for d in dilations:
        for dy, dx in _OFFSETS:
            yield padded[..., pad + dy * d : pad + dy * d + h, pad + dx * d : pad + dx * d + w]


class PAR(nn.Module):
    def __init__(self, dilations: Sequence[int], iterations: int, w_rgb: float = 0.3, w_pos: float = 0.01):
        super().__init__()
        self.dilations, self.iterations = list(dilations), iterations
        self.w_rgb, self.w_pos = w_rgb, w_pos
        dist = torch.tensor([d * math.hypot(dy, dx) for d in self.dilations for dy, dx in _OFFSETS])
        pos = -((dist / (dist.std() + 1e-8) / w_rgb) ** 2)
        self.register_buffer("pos_aff", F.softmax(pos, 0).view(1, 1, -1, 1, 1), persistent=False)

    def affinity(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 1, 8 * len(dilations), H, W) propagation weights of an image (B, C, H, W).

        The neighbours' standard deviation (two passes: mean, then squared deviations) and each neighbour's
        colour term are accumulated view by view, so no (B, C, 8D, H, W) tensor is ever made; the only
        large tensor is the result.
        """
        n = 8 * len(self.dilations)
        mean = torch.zeros_like(image)
        for view in views(image, self.dilations):
            mean += view
        mean /= n
        var = torch.zeros_like(image)
        for view in views(image, self.dilations):
            var.addcmul_(view - mean, view - mean)
        scale = (var / (n - 1)).sqrt_().add_(1e-8).mul_(self.w_rgb)  # unbiased std, as torch.std
        b, _, h, w = image.shape
        aff = image.new_empty(b, 1, n, h, w)
        for k, view in enumerate(views(image, self.dilations)):
            term = (view - image).abs_().div_(scale).square_()
            torch.mean(term, 1, keepdim=True, out=aff[:, :, k])
        aff.neg_()
        aff = torch.softmax(aff, 2)
        return aff.add_(self.w_pos * self.pos_aff)

    def constant_response(self, value: float) -> float:
        """What PAR makes of a constant map: the weights of every pixel sum to 1 + w_pos, and PAR is linear.

        So a constant background channel need not be propagated; it is ``value * (1 + w_pos) ** iterations``.
        """
        return value * (1.0 + self.w_pos) ** self.iterations

    def forward(self, image: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
        """Refine ``maps`` (B, K, h, w) on ``image`` (B, C, H, W); returns maps at the image size."""
        maps = F.interpolate(maps, size=image.shape[-2:], mode="bilinear", align_corners=True)
        aff = self.affinity(image)
        for _ in range(self.iterations):
            out = torch.zeros_like(maps)
            for k, view in enumerate(views(maps, self.dilations)):  # neighbour by neighbour: no (B, K, 8D, H, W) tensor
                out.addcmul_(view, aff[:, :, k])
            maps = out
        return maps
