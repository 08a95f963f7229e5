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
from .segmenter import LargeFOV, foreground_channels, upsample_logits

BACKBONE_KEYS = (
    "backbone",
    "img_size",
    "patch_size",
    "embed_dim",
    "depth",
    "num_heads",
    "model_kwargs",
    "final_norm",
    "pos_embed_resize",
)
"""Settings that fix the ViT's architecture: the exported segmentation model takes them from the classifier."""


class JointModel(ContrastiveClassifier):
    """ContrastiveClassifier + segmentation decoder(s) on the final tokens; ``forward`` stays the classifier's."""

    def __init__(
        self, classifier: CAMClassifier, ctc: Mapping | None, segmentation: Mapping, n_classes: int, foreground: bool
    ):
        super().__init__(classifier, ctc)
        dim = classifier.backbone.embed_dim
        self.decoder = LargeFOV.from_config(dim, n_classes, segmentation)
        self.foreground = (
            LargeFOV.from_config(dim, foreground_channels(segmentation, n_classes), segmentation)
            if foreground
            else None
        )

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


def segmenter_config(classifier: Mapping, segmentation: Mapping) -> dict:
    """The settings a Segmenter is rebuilt from: the segmentation section with the classifier's ViT."""
    return {**segmentation, **{k: classifier[k] for k in BACKBONE_KEYS}}
