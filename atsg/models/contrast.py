"""The classifier as trained with class-token contrast: CAM classifier + projection head + EMA teacher (of the
head alone, as published, or of backbone and head)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from .classifier import CAMClassifier
from .projection import EMATeacher, ProjectionHead


class ContrastiveClassifier(nn.Module):
    """Wraps a CAMClassifier; ``forward`` is the classifier's, so validation sees a plain classifier.

    ``projection`` (None: no class-token contrast) is the contrast's projection head; its EMA teacher follows
    the head alone (``head_only_teacher``, published) or backbone and head. Only ``classifier`` weights make
    the trained model file; the rest is training state.
    """

    def __init__(
        self, classifier: CAMClassifier, projection: ProjectionHead | None = None, head_only_teacher: bool = True
    ):
        super().__init__()
        self.classifier = classifier
        self.projection = projection
        self.head_only_teacher = bool(head_only_teacher)
        self.teacher = None
        if projection is not None:
            self.teacher = EMATeacher(None if self.head_only_teacher else classifier.backbone, projection)

    def head_parameters(self):
        heads = self.classifier.head_parameters()
        if self.projection is not None:
            heads += [p for p in self.projection.parameters() if p.requires_grad]
        return heads

    def forward(self, images: torch.Tensor, **kwargs) -> dict[str, torch.Tensor]:
        return self.classifier(images, **kwargs)

    def update_teacher(self, momentum: float) -> None:
        self.teacher.update(None if self.head_only_teacher else self.classifier.backbone, self.projection, momentum)

    def classifier_state(self, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The classifier's own entries of a state dict of this module."""
        return {k[len("classifier.") :]: v for k, v in state.items() if k.startswith("classifier.")}
