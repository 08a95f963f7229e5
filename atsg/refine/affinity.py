"""Affinity propagation: a random walk of the CAMs over the classifier's patch-token affinities.

As in AffinityNet / ToCo-style refinement: the affinity of two tokens is
ReLU(cosine similarity) ** beta, rows are normalised into a transition matrix,
and the CAM (at token resolution) is multiplied by it ``iterations`` times.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..cam import minmax_normalise


def transition_matrix(tokens: torch.Tensor, beta: float) -> torch.Tensor:
    """(B, D, h, w) tokens -> (B, N, N) row-stochastic transition matrix, N = h * w."""
    t = F.normalize(tokens.flatten(2).float(), dim=1)
    aff = torch.relu(t.transpose(1, 2) @ t) ** beta
    return aff / aff.sum(-1, keepdim=True).clamp_min(1e-8)


def random_walk(cams: torch.Tensor, tokens: torch.Tensor, beta: float, iterations: int, mix: float) -> torch.Tensor:
    """Walk ``cams`` (B, K, H, W) over the token affinities; returns CAMs at the same size, in [0, 1]."""
    b, k, h, w = cams.shape
    th, tw = tokens.shape[-2:]
    trans = transition_matrix(tokens, beta)
    low = F.interpolate(cams, size=(th, tw), mode="bilinear", align_corners=False).flatten(2)
    for _ in range(iterations):
        low = low @ trans.transpose(1, 2)
    walked = F.interpolate(low.view(b, k, th, tw), size=(h, w), mode="bilinear", align_corners=False)
    walked = minmax_normalise(walked)
    return (1 - mix) * cams + mix * walked
