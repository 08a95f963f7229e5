"""Segmentation model: ViT token map -> DeepLab-LargeFOV style decoder -> per-pixel class logits."""

from __future__ import annotations

from collections.abc import Mapping

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

    @classmethod
    def from_config(cls, in_channels: int, n_out: int, cfg: Mapping) -> LargeFOV:
        """The decoder of the ``decoder_*`` settings of a segmentation config section."""
        return cls(
            in_channels,
            n_out,
            cfg["decoder_channels"],
            cfg["decoder_dilation"],
            cfg["decoder_dropout"],
            cfg["decoder_norm"],
            cfg["decoder_bias"],
        )


def foreground_channels(cfg: Mapping, n_classes: int) -> int:
    """Outputs of the joint loss's second decoder: one per class (published) or one foreground logit."""
    return n_classes if cfg["joint_loss"].get("form", "published") == "published" else 1


class Segmenter(nn.Module):
    """ViT + LargeFOV; with ``foreground`` a second LargeFOV decoder for the joint loss (METHOD.md)."""

    def __init__(
        self, cfg: Mapping, in_chans: int, n_classes: int, section: str = "segmentation", foreground: bool = False
    ):
        super().__init__()
        self.backbone = ViTBackbone(cfg["backbone"], in_chans, cfg, section)
        self.decoder = LargeFOV.from_config(self.backbone.embed_dim, n_classes, cfg)
        self.foreground = (
            LargeFOV.from_config(self.backbone.embed_dim, foreground_channels(cfg, n_classes), cfg)
            if foreground
            else None
        )
        self.n_classes = n_classes
        self.final_norm = bool(cfg.get("final_norm", True))

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
