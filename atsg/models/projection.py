"""Projection head of the class-token contrast (DINO style) and its EMA teacher."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm


class ProjectionHead(nn.Module):
    """3-layer MLP (GELU) to a bottleneck, L2 normalised, then a weight-normalised linear layer whose
    weight norms are fixed at 1 (as DINO's ``norm_last_layer``)."""

    def __init__(self, in_dim: int, hidden_dim: int, bottleneck_dim: int, out_dim: int):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, bottleneck_dim),
        )
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last = weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        with torch.no_grad():
            self.last.parametrizations.weight.original0.fill_(1.0)
        self.last.parametrizations.weight.original0.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last(F.normalize(self.mlp(x), dim=-1))


class EMATeacher(nn.Module):
    """A frozen copy of the projection head (and, with ``backbone``, of the backbone) that follows the student by
    exponential moving average. The published teacher is the head alone: its backbone is the student's."""

    def __init__(self, backbone: nn.Module | None, head: nn.Module):
        super().__init__()
        self.backbone = copy.deepcopy(backbone) if backbone is not None else None
        self.head = copy.deepcopy(head)
        for p in self.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, backbone: nn.Module | None, head: nn.Module, momentum: float) -> None:
        """teacher = momentum * teacher + (1 - momentum) * student, parameter by parameter."""
        pairs = [(self.head, head)] + ([(self.backbone, backbone)] if self.backbone is not None else [])
        for mine, theirs in pairs:
            for t, s in zip(mine.parameters(), theirs.parameters()):
                t.mul_(momentum).add_(s.detach(), alpha=1.0 - momentum)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Projection of the normalised final class token of an image batch (0-255 values, any size), through
        the teacher's own backbone."""
        x = self.backbone.prepare(images)
        _, cls = self.backbone.forward_with_class_token(x, [-1])
        return self.head(cls)
