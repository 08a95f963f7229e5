"""A timm ViT as a token-map extractor, through ``forward_intermediates`` (never hooks).

Weights come from exactly one explicit source: timm's pretrained weights, a local
checkpoint file, or random initialisation asked for in config.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping, Sequence
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, DataError

ARCH_KEYS = ("img_size", "patch_size", "embed_dim", "depth", "num_heads")
"""Architecture settings that override the named timm model's own (null keeps them)."""


def _weights_source(cfg: Mapping, section: str) -> str:
    """The one source of a backbone's weights: ``weights`` when set, else the one of the switches pretrained,
    checkpoint and random_init that is on. ``weights: pretrain`` is resolved by the stage (the pretrain stage's
    backbone file becomes the checkpoint) before a model is built."""
    weights = cfg.get("weights")
    if weights == "pretrain":
        raise ConfigError(
            f"config key {section}.weights: pretrain needs the pretrain stage's backbone; run the "
            f"stage through the workflow, or give its folder with --pretrain DIR"
        )
    if weights == "checkpoint" and not cfg.get("checkpoint"):
        raise ConfigError(f"config key {section}.weights: checkpoint needs {section}.checkpoint (a local file)")
    if weights:
        return weights
    chosen = [k for k in ("pretrained", "checkpoint", "random_init") if cfg.get(k)]
    if len(chosen) != 1:
        raise ConfigError(
            f"config key {section}: choose exactly one weight source among {section}.pretrained, "
            f"{section}.checkpoint and {section}.random_init (found {chosen or 'none'}), or set {section}.weights"
        )
    return chosen[0]


def load_state_dict(path: str | Path, key: str) -> dict:
    """A state dict from a local file (plain, or under 'model' / 'state_dict'); clear error when missing."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config key {key}: checkpoint {path} does not exist; give the path of a local weights file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DataError(f"{path}: not a readable torch checkpoint ({exc})") from None
    for sub in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(sub), dict):
            state = state[sub]
    return state


def require_reachable_weights(name: str, section: str, timeout: float = 5.0) -> None:
    """A clear error at once when timm's weights for ``name`` are neither cached nor downloadable (offline
    clusters), instead of a minute of download retries and a raw hub traceback."""
    from urllib.parse import urlparse

    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except Exception:  # noqa: BLE001 - an unknown name: timm.create_model says so itself
        return
    if cfg is None:
        return
    host = None
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        files = (
            [cfg.hf_hub_filename]
            if cfg.hf_hub_filename
            else ["model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"]
        )
        if any(isinstance(try_to_load_from_cache(cfg.hf_hub_id, f), str) for f in files):
            return
        host = "huggingface.co"
    elif cfg.url:
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(cfg.url).path).name
        if cached.is_file():
            return
        host = urlparse(cfg.url).hostname
    if not host:
        return
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError as exc:
        raise ConfigError(
            f"config key {section}.pretrained: timm's weights for {name} are not in the local cache and {host} "
            f"cannot be reached ({exc}); set {section}.checkpoint to a local weights file (and "
            f"{section}.pretrained: false), or choose {section}.random_init explicitly"
        ) from None


class ViTBackbone(nn.Module):
    """Patch-token maps (B, D, h, w) of chosen blocks of a timm ViT, for any input size."""

    def __init__(self, name: str, in_chans: int, cfg: Mapping, section: str):
        super().__init__()
        source = _weights_source(cfg, section)
        kwargs = dict(cfg.get("model_kwargs") or {})
        kwargs.update({k: cfg[k] for k in ARCH_KEYS if cfg.get(k) is not None})
        kwargs.setdefault("dynamic_img_size", True)
        if source == "pretrained":
            require_reachable_weights(name, section)
        try:
            self.vit = timm.create_model(
                name, pretrained=source == "pretrained", num_classes=0, in_chans=in_chans, **kwargs
            )
        except Exception as exc:  # noqa: BLE001 - timm and huggingface_hub raise many types
            if source == "pretrained":
                raise ConfigError(
                    f"config key {section}.pretrained: could not load timm weights for {name} "
                    f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                    f"offline, set {section}.checkpoint to a local file"
                ) from None
            raise ConfigError(f"config key {section}.backbone: {name}: {exc}") from None
        if not hasattr(self.vit, "forward_intermediates") or not hasattr(self.vit, "blocks"):
            raise ConfigError(f"config key {section}.backbone: {name} is not a ViT with forward_intermediates")
        if source == "checkpoint":
            state = load_state_dict(cfg["checkpoint"], f"{section}.checkpoint")
            state = {k: v for k, v in state.items() if not k.startswith("head.")}
            missing, unexpected = self.vit.load_state_dict(state, strict=False)
            if missing:
                raise DataError(
                    f"{cfg['checkpoint']}: weights for {name} lack {len(missing)} tensors "
                    f"(e.g. {missing[0]}); is it a checkpoint of another model?"
                )
        data_cfg = timm.data.resolve_data_config({}, model=self.vit)
        mean, std = list(data_cfg["mean"]), list(data_cfg["std"])
        if len(mean) != in_chans:  # multispectral input: reuse the first band's statistics
            mean, std = [mean[0]] * in_chans, [std[0]] * in_chans
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1) * 255, persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1) * 255, persistent=False)
        self.depth = len(self.vit.blocks)
        self.embed_dim = self.vit.embed_dim
        # The token stride: the patch size, times the CNN stem's stride for hybrid ViTs.
        self.patch_size = int(self.vit.patch_embed.feat_ratio(as_scalar=True))
        self.pos_embed_resize = cfg.get("pos_embed_resize", "official")
        if self.pos_embed_resize != "timm" and not _plain_vit(self.vit):
            raise ConfigError(
                f"config key {section}.pos_embed_resize: {name} is not a plain ViT (one class token, "
                f"learned position embedding over it and the patches); set it to timm"
            )
        if cfg.get("freeze_pos_embed", False) and getattr(self.vit, "pos_embed", None) is not None:
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


def _plain_vit(vit: nn.Module) -> bool:
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
