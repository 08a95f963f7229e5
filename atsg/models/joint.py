"""Paper mode: one network trained in one stage, as the published code does.

The CAM classifier (with its contrast heads) and the segmentation decoders share
the classifier's ViT: a LargeFOV decoder (and, for the joint loss, a foreground
decoder) reads the final token map the CAM heads read.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from .classifier import CAMClassifier
from .contrast import ContrastiveClassifier
from .projection import ProjectionHead
from .segmenter import LargeFOV, upsample_logits


class JointModel(ContrastiveClassifier):
    """ContrastiveClassifier + segmentation decoder(s) on the final tokens; ``forward`` stays the classifier's."""

    def __init__(
        self,
        classifier: CAMClassifier,
        projection: ProjectionHead | None,
        head_only_teacher: bool,
        decoder: LargeFOV,
        foreground: LargeFOV | None = None,
    ):
        super().__init__(classifier, projection, head_only_teacher)
        self.decoder = decoder
        self.foreground = foreground

    def head_parameters(self):
        heads = super().head_parameters() + list(self.decoder.parameters())
        if self.foreground is not None:
            heads += list(self.foreground.parameters())
        return heads

    def segment(self, tokens: torch.Tensor, size) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(logits (B, classes, *size), foreground decoder's logits or None) of final tokens (B, D, h, w)."""
        p = self.classifier.backbone.patch_size
        padded = (tokens.shape[-2] * p, tokens.shape[-1] * p)
        logits = upsample_logits(self.decoder(tokens), padded, size)
        fg = upsample_logits(self.foreground(tokens), padded, size) if self.foreground is not None else None
        return logits, fg

    @staticmethod
    def segmenter_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The entries of a state dict of this module that make a :class:`~atsg.models.segmenter.Segmenter`
        (shared backbone and class decoder; the foreground decoder only trains)."""
        out = {k[len("classifier.") :]: v for k, v in state.items() if k.startswith("classifier.backbone.")}
        out.update({k: v for k, v in state.items() if k.startswith("decoder.")})
        return out
