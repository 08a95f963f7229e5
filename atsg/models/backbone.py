"""A timm ViT as a token-map extractor, through ``forward_intermediates`` (never hooks).

:class:`ViTBackbone` wraps a ViT made by ``timm.create_model`` (:func:`atsg.factory.backbone` makes it from a
config section and gives it its weights: timm's pretrained weights, a local checkpoint file, or random
initialisation asked for in config).
"""

from __future__ import annotations

from collections.abc import Sequence

import timm
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError


class ViTBackbone(nn.Module):
    """Patch-token maps (B, D, h, w) of chosen blocks of a timm ViT, for any input size."""

    def __init__(
        self, vit: nn.Module, in_chans: int, pos_embed_resize: str = "official", freeze_pos_embed: bool = False
    ):
        """``vit``: a timm ViT with ``forward_intermediates`` (made with ``dynamic_img_size``) for images of
        ``in_chans`` bands, normalised by the ViT's own mean and std (every band by those of its first band when
        the ViT's statistics are for another number of bands, as for multispectral input).
        ``pos_embed_resize``: how the position embedding follows the token grid, ``official`` (the published
        ViT's plain bicubic resize), ``dino`` (DINO's) or ``timm`` (timm's own; the others need a
        :func:`plain_vit`). ``freeze_pos_embed``: the position embedding never trains (published)."""
        super().__init__()
        if not hasattr(vit, "forward_intermediates") or not hasattr(vit, "blocks"):
            raise ValueError(f"{type(vit).__name__} is not a ViT with forward_intermediates")
        if pos_embed_resize not in ("official", "dino", "timm"):
            raise ValueError(f"pos_embed_resize {pos_embed_resize!r}: official, dino or timm")
        if pos_embed_resize != "timm" and not plain_vit(vit):
            raise ValueError(f"pos_embed_resize {pos_embed_resize} needs a plain ViT; use timm")
        self.vit = vit
        data_cfg = timm.data.resolve_data_config({}, model=self.vit)
        mean, std = list(data_cfg["mean"]), list(data_cfg["std"])
        if len(mean) != in_chans:  # multispectral input: the first band's statistics
            mean, std = [mean[0]] * in_chans, [std[0]] * in_chans
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1) * 255, persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1) * 255, persistent=False)
        self.depth = len(self.vit.blocks)
        self.embed_dim = self.vit.embed_dim
        # The token stride: the patch size, times the CNN stem's stride for hybrid ViTs.
        self.patch_size = int(self.vit.patch_embed.feat_ratio(as_scalar=True))
        self.pos_embed_resize = pos_embed_resize
        if freeze_pos_embed and getattr(self.vit, "pos_embed", None) is not None:
            self.vit.pos_embed.requires_grad_(False)  # as published: the position embedding never trains

    def normalize(self, images_uint8: torch.Tensor) -> torch.Tensor:
        return (images_uint8.float() - self.mean) / self.std

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """An image batch (0-255 values) normalised and padded to a multiple of the token stride."""
        return pad_to_patch(self.normalize(images), self.patch_size)

    def block_index(self, index: int) -> int:
        """A block index (negative counts from the end) as a non-negative index; checked."""
        idx = index if index >= 0 else self.depth + index
        if not 0 <= idx < self.depth:
            raise ConfigError(f"block {index} does not exist in a ViT with {self.depth} blocks")
        return idx

    def forward(self, x: torch.Tensor, blocks: Sequence[int], final_norm: bool = False) -> list[torch.Tensor]:
        """Token maps (B, D, h, w) of ``blocks`` for a normalised float image batch whose sides are multiples of
        the patch; with ``final_norm`` the last block's map is taken after the ViT's final LayerNorm."""
        return self.forward_with_class_token(x, blocks, final_norm)[0]

    def forward_with_class_token(
        self,
        x: torch.Tensor,
        blocks: Sequence[int],
        final_norm: bool = False,
        mask: torch.Tensor | None = None,
        mask_token: torch.Tensor | None = None,
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Token maps of ``blocks`` (as :meth:`forward`) and the normalised final class token (B, D), in one pass.

        A ViT without a class token gives the mean of its normalised final patch tokens instead. ``mask`` (B, h, w)
        bool replaces those patch embeddings by ``mask_token`` (D,) before the position embedding (masked image
        modelling); it needs the published position-embedding path.
        """
        idx = [self.block_index(b) for b in blocks]
        wanted = sorted(set(idx))
        if self.pos_embed_resize == "timm":
            if mask is not None:
                raise ConfigError("masked tokens need pos_embed_resize official or dino (not timm)")
            final, feats = self.vit.forward_intermediates(x, indices=wanted, norm=False, output_fmt="NLC")
        else:
            feats, final = self._blocks(x, wanted, mask, mask_token)
        prefix = self.vit.num_prefix_tokens
        cls = final[:, 0] if getattr(self.vit, "cls_token", None) is not None else final[:, prefix:].mean(1)
        h, w = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        last = self.depth - 1
        maps = {}
        for i, f in zip(wanted, feats):
            if final_norm and i == last:
                f = final[:, prefix:]
            maps[i] = f.reshape(f.shape[0], h, w, -1).permute(0, 3, 1, 2)
        return [maps[i] for i in idx], cls

    def _blocks(
        self,
        x: torch.Tensor,
        wanted: list[int],
        mask: torch.Tensor | None = None,
        mask_token: torch.Tensor | None = None,
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(patch tokens (B, N, D) of the ``wanted`` blocks before any norm, all tokens after the final norm),
        through timm's own modules with the position embedding resampled the published way."""
        vit = self.vit
        t = vit.patch_embed(x)  # (B, h, w, D): the model is made with dynamic_img_size
        if mask is not None:
            t = torch.where(mask[..., None], mask_token.to(t.dtype), t)
        b, h, w, d = t.shape
        t = torch.cat([vit.cls_token.expand(b, -1, -1), t.reshape(b, h * w, d)], 1) + self._pos_embed(h, w)
        t = vit.norm_pre(vit.patch_drop(vit.pos_drop(t)))
        feats = []
        for i, blk in enumerate(vit.blocks):
            t = blk(t)
            if i in wanted:
                feats.append(t[:, 1:])
        return feats, vit.norm(t)

    def _pos_embed(self, h: int, w: int) -> torch.Tensor:
        """The position embedding for an (h, w) token grid, resampled from the model's own grid: ``official``
        plain bicubic to the size (the published ViT's prepare_tokens), ``dino`` bicubic by the scale factor
        (grid + 0.1) / own grid (DINO's interpolate_pos_encoding, identity on a square grid of its own size)."""
        pos = self.vit.pos_embed
        gh, gw = self.vit.patch_embed.grid_size
        patch = pos[:, 1:].reshape(1, gh, gw, -1).permute(0, 3, 1, 2)
        if self.pos_embed_resize == "dino":
            if (h, w) != (gh, gw) or h != w:
                patch = F.interpolate(patch, scale_factor=((h + 0.1) / gh, (w + 0.1) / gw), mode="bicubic")
        else:
            patch = F.interpolate(patch, size=(h, w), mode="bicubic", align_corners=False)
        return torch.cat([pos[:, :1], patch.flatten(2).transpose(1, 2)], 1)


def plain_vit(vit: nn.Module) -> bool:
    """A ViT of the published kind: a plain patch embedding (no CNN stem), one class token, no register tokens,
    a learned position embedding that covers the class token and the patch grid."""
    return (
        getattr(vit, "cls_token", None) is not None
        and getattr(vit, "reg_token", None) is None
        and getattr(vit, "pos_embed", None) is not None
        and not getattr(vit, "no_embed_class", False)
        and vit.num_prefix_tokens == 1
        and hasattr(vit, "norm_pre")
        and hasattr(vit, "patch_drop")
        and isinstance(getattr(vit, "patch_embed", None), timm.layers.PatchEmbed)
    )


def pad_to_patch(x: torch.Tensor, patch: int, value: float = 0.0) -> torch.Tensor:
    """Pad right/bottom so both sides are multiples of the patch size."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % patch, (-w) % patch
    if ph or pw:
        x = nn.functional.pad(x, (0, pw, 0, ph), value=value)
    return x
