"""Segmentation model: ViT token map -> DeepLab-LargeFOV style decoder -> per-pixel class logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .backbone import ViTBackbone


def upsample_logits(logits: torch.Tensor, padded, size) -> torch.Tensor:
    """Decoder logits at token resolution -> the padded input size, then cropped to the image ``size``."""
    logits = F.interpolate(logits, size=padded, mode="bilinear", align_corners=False)
    return logits[..., : size[0], : size[1]]


class LargeFOV(nn.Module):
    """DeepLab-LargeFOV: two dilated, bias-free 3x3 convolutions with ReLU and a 1x1 classifier (the published
    ``decoder.LargeFOV``: 512 channels, no BatchNorm, no dropout, no bias); BatchNorm, dropout and the
    classifier's bias are switches."""

    def __init__(
        self,
        in_channels: int,
        n_classes: int,
        channels: int,
        dilation: int,
        dropout: float = 0.0,
        norm: bool = False,
        bias: bool = False,
    ):
        super().__init__()

        def conv(cin: int) -> nn.Conv2d:
            return nn.Conv2d(cin, channels, 3, padding=dilation, dilation=dilation, bias=False)

        def after() -> nn.Sequential:
            return nn.Sequential(
                *([nn.BatchNorm2d(channels)] if norm else []),
                nn.ReLU(inplace=True),
                *([nn.Dropout2d(dropout)] if dropout else []),
            )

        self.conv6, self.act6 = conv(in_channels), after()
        self.conv7, self.act7 = conv(channels), after()
        self.conv8 = nn.Conv2d(channels, n_classes, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv8(self.act7(self.conv7(self.act6(self.conv6(x)))))


class Segmenter(nn.Module):
    """ViT + LargeFOV; with ``foreground`` a second LargeFOV decoder for the joint loss (METHOD.md)."""

    def __init__(
        self, backbone: ViTBackbone, decoder: LargeFOV, foreground: LargeFOV | None = None, final_norm: bool = True
    ):
        """``decoder`` reads the final tokens (after the ViT's final LayerNorm with ``final_norm``); ``foreground``
        is the joint loss's second decoder, trained only."""
        super().__init__()
        self.backbone = backbone
        self.decoder = decoder
        self.foreground = foreground
        self.n_classes = decoder.conv8.out_channels
        self.final_norm = bool(final_norm)

    def head_parameters(self):
        heads = list(self.decoder.parameters())
        if self.foreground is not None:
            heads += list(self.foreground.parameters())
        return heads

    def forward(self, images: torch.Tensor, with_foreground: bool = False):
        """Logits (B, classes, H, W) at the input size; with ``with_foreground`` also the foreground
        decoder's logits (B, classes or 1, H, W)."""
        size = images.shape[-2:]
        x = self.backbone.prepare(images)
        (tokens,) = self.backbone(x, [self.backbone.depth - 1], self.final_norm)
        logits = upsample_logits(self.decoder(tokens), x.shape[-2:], size)
        if not with_foreground:
            return logits
        return logits, upsample_logits(self.foreground(tokens), x.shape[-2:], size)
