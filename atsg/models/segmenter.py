"""Segmentation model: ViT token map -> DeepLab-LargeFOV style decoder -> per-pixel class logits."""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .backbone import ViTBackbone


def upsample_logits(logits: torch.Tensor, padded, size) -> torch.Tensor:
    """Decoder logits at token resolution -> the padded input size, then cropped to the image ``size``."""
    logits = F.interpolate(logits, size=padded, mode="bilinear", align_corners=False)
    return logits[..., :size[0], :size[1]]


class LargeFOV(nn.Module):
    """Two dilated 3x3 convolutions (large field of view) and a 1x1 classifier, as in DeepLab-LargeFOV."""

    def __init__(self, in_channels: int, n_classes: int, channels: int, dilation: int, dropout: float):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, padding=dilation, dilation=dilation, bias=False),
            nn.BatchNorm2d(channels), nn.ReLU(inplace=True), nn.Dropout2d(dropout),
            nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation, bias=False),
            nn.BatchNorm2d(channels), nn.ReLU(inplace=True), nn.Dropout2d(dropout),
        )
        self.classifier = nn.Conv2d(channels, n_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.body(x))

    @classmethod
    def from_config(cls, in_channels: int, n_out: int, cfg: Mapping) -> "LargeFOV":
        """The decoder of the ``decoder_*`` settings of a segmentation config section."""
        return cls(in_channels, n_out, cfg["decoder_channels"], cfg["decoder_dilation"], cfg["decoder_dropout"])


class Segmenter(nn.Module):
    """ViT + LargeFOV; with ``foreground`` a second LargeFOV decoder gives one foreground logit (the
    joint loss of METHOD.md)."""

    def __init__(self, cfg: Mapping, in_chans: int, n_classes: int, section: str = "segmentation",
                 foreground: bool = False):
        super().__init__()
        self.backbone = ViTBackbone(cfg["backbone"], in_chans, cfg, section)
        self.decoder = LargeFOV.from_config(self.backbone.embed_dim, n_classes, cfg)
        self.foreground = LargeFOV.from_config(self.backbone.embed_dim, 1, cfg) if foreground else None
        self.n_classes = n_classes

    def head_parameters(self):
        heads = list(self.decoder.parameters())
        if self.foreground is not None:
            heads += list(self.foreground.parameters())
        return heads

    def forward(self, images: torch.Tensor, with_foreground: bool = False):
        """Logits (B, classes, H, W) at the input size; with ``with_foreground`` also the foreground
        decoder's logit (B, 1, H, W)."""
        size = images.shape[-2:]
        x = self.backbone.prepare(images)
        (tokens,) = self.backbone(x, [self.backbone.depth - 1])
        logits = upsample_logits(self.decoder(tokens), x.shape[-2:], size)
        if not with_foreground:
            return logits
        return logits, upsample_logits(self.foreground(tokens), x.shape[-2:], size)
