"""Self-supervised pretraining of a ViT on unlabelled tiles: self-distillation with multi-crop (DINO), optionally
with masked patch-token distillation (iBOT).

The student is a timm ViT (the same :class:`~atsg.models.backbone.ViTBackbone` the classifier and the segmenter
use, so its weights load into them) with a DINO projection head; the teacher is an exponential moving average of
both. Centres of the teacher's outputs are buffers of this module, so they travel with the training checkpoints.
"""

from __future__ import annotations

import torch
from torch import nn

from .backbone import ViTBackbone
from .projection import EMATeacher, ProjectionHead


class SelfDistillation(nn.Module):
    """Student ViT + projection head, their EMA teacher, a mask token (method ibot) and the output centres."""

    def __init__(self, backbone: ViTBackbone, head: ProjectionHead, masked: bool = False):
        """``masked``: iBOT's masked patch-token distillation, with a learned mask token."""
        super().__init__()
        self.backbone = backbone
        self.head = head
        dim = backbone.embed_dim
        self.masked = bool(masked)
        self.mask_token = nn.Parameter(torch.zeros(dim)) if self.masked else None
        self.teacher = EMATeacher(self.backbone, self.head)
        out_dim = head.last.out_features
        self.register_buffer("center", torch.zeros(out_dim))
        self.register_buffer("center_patch", torch.zeros(out_dim))

    def head_parameters(self):
        return [p for p in self.head.parameters() if p.requires_grad]

    def update_teacher(self, momentum: float) -> None:
        self.teacher.update(self.backbone, self.head, momentum)

    def _project(
        self,
        backbone: ViTBackbone,
        head: nn.Module,
        images: torch.Tensor,
        mask: torch.Tensor | None,
        select: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = backbone.prepare(images)
        maps, cls = backbone.forward_with_class_token(x, [backbone.depth - 1], True, mask, self.mask_token)
        out = head(cls)
        if select is None:
            return out, None
        tokens = maps[0].flatten(2).transpose(1, 2)  # (B, N, D) after the final norm
        return out, head(tokens[select.flatten(1)])

    def forward(
        self, images: torch.Tensor, mask: torch.Tensor | None = None, select: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Student outputs for an image batch (0-255 values): class-token projections (B, K) and, with ``select``
        (B, h, w) bool, the projections (M, K) of the selected patch tokens in row-major order; ``mask`` (B, h, w)
        replaces those patches by the mask token."""
        return self._project(self.backbone, self.head, images, mask, select)

    @torch.no_grad()
    def teach(
        self, images: torch.Tensor, select: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The teacher's outputs for unmasked images (as :meth:`forward`)."""
        return self._project(self.teacher.backbone, self.teacher.head, images, None, select)

    def backbone_state(self, teacher: bool = False) -> dict[str, torch.Tensor]:
        """The timm state dict of the student's (or the teacher's) ViT, as classifier.checkpoint reads it."""
        vit = self.teacher.backbone.vit if teacher else self.backbone.vit
        return {k: v.detach().to("cpu", copy=True) for k, v in vit.state_dict().items()}
