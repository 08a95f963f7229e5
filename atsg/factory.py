"""The one place where config sections become models.

Every ``nn.Module`` of :mod:`atsg.models` takes explicit constructor arguments, as segment_anything's
``build_sam`` and timm's ``create_model`` do: a ViT, block indices, channel counts, switches. This module reads
the (schema-validated) config sections, decides where each backbone's weights come from (timm's pretrained
weights, a local checkpoint, or random initialisation asked for in config: never a fallback), builds the
modules in the order that fixes their random initialisation, and turns errors into messages that name the
config key. No config dict goes below it.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from pathlib import Path

import timm
import torch

from .errors import ConfigError, DataError
from .models.backbone import ViTBackbone, plain_vit
from .models.classifier import CAMClassifier
from .models.contrast import ContrastiveClassifier
from .models.joint import JointModel
from .models.linking import LinkingFeatures
from .models.pretrain import SelfDistillation
from .models.projection import ProjectionHead
from .models.segmenter import LargeFOV, Segmenter

ARCH_KEYS = ("img_size", "patch_size", "embed_dim", "depth", "num_heads")
"""Architecture settings that override the named timm model's own (null keeps them)."""

BACKBONE_KEYS = ("backbone", *ARCH_KEYS, "model_kwargs", "final_norm", "pos_embed_resize")
"""Settings that fix the ViT's architecture: paper mode's exported segmentation model takes them from the
classifier."""

LINKING = "classifier.linking"


# --- weights -------------------------------------------------------------------------------------------------


def weights_source(cfg: Mapping, section: str) -> str:
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


# --- models --------------------------------------------------------------------------------------------------


def backbone(cfg: Mapping, in_chans: int, section: str) -> ViTBackbone:
    """The timm ViT of a model section (``backbone`` and the architecture keys) with its weights, as a
    :class:`ViTBackbone`."""
    name = cfg["backbone"]
    source = weights_source(cfg, section)
    kwargs = dict(cfg.get("model_kwargs") or {})
    kwargs.update({k: cfg[k] for k in ARCH_KEYS if cfg.get(k) is not None})
    kwargs.setdefault("dynamic_img_size", True)
    if source == "pretrained":
        require_reachable_weights(name, section)
    try:
        vit = timm.create_model(name, pretrained=source == "pretrained", num_classes=0, in_chans=in_chans, **kwargs)
    except Exception as exc:  # noqa: BLE001 - timm and huggingface_hub raise many types
        if source == "pretrained":
            raise ConfigError(
                f"config key {section}.pretrained: could not load timm weights for {name} "
                f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                f"offline, set {section}.checkpoint to a local file"
            ) from None
        raise ConfigError(f"config key {section}.backbone: {name}: {exc}") from None
    if not hasattr(vit, "forward_intermediates") or not hasattr(vit, "blocks"):
        raise ConfigError(f"config key {section}.backbone: {name} is not a ViT with forward_intermediates")
    if source == "checkpoint":
        state = load_state_dict(cfg["checkpoint"], f"{section}.checkpoint")
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
        missing, _ = vit.load_state_dict(state, strict=False)
        if missing:
            raise DataError(
                f"{cfg['checkpoint']}: weights for {name} lack {len(missing)} tensors "
                f"(e.g. {missing[0]}); is it a checkpoint of another model?"
            )
    resize = cfg.get("pos_embed_resize", "official")
    if resize != "timm" and not plain_vit(vit):
        raise ConfigError(
            f"config key {section}.pos_embed_resize: {name} is not a plain ViT (one class token, "
            f"learned position embedding over it and the patches); set it to timm"
        )
    return ViTBackbone(vit, in_chans, resize, freeze_pos_embed=bool(cfg.get("freeze_pos_embed", False)))


def _blocks(vit: ViTBackbone, blocks, key: str) -> list[int]:
    try:
        return [vit.block_index(b) for b in blocks]
    except ConfigError as exc:
        raise ConfigError(f"config key {key}: {exc}") from None


def classifier(cfg: Mapping, in_chans: int, n_targets: int, section: str = "classifier") -> CAMClassifier:
    """The CAM classifier of a classifier section (auxiliary block fixed by ``aux_layer`` or chosen among
    ``aux_candidates``)."""
    vit = backbone(cfg, in_chans, section)
    adaptive = cfg["aux_layer"] == "adaptive"
    aux = _blocks(
        vit,
        cfg["aux_candidates"] if adaptive else [cfg["aux_layer"]],
        f"{section}.aux_candidates" if adaptive else f"{section}.aux_layer",
    )
    return CAMClassifier(
        vit,
        n_targets,
        aux_blocks=aux,
        final_norm=bool(cfg.get("final_norm", True)),
        pool_first=cfg.get("logits", "pool_then_classify") == "pool_then_classify",
        pooling=cfg.get("pooling", "max"),
        pool_topk=float(cfg.get("pool_topk", 0.25)),
    )


def decoder(cfg: Mapping, in_channels: int, n_out: int) -> LargeFOV:
    """The LargeFOV decoder of the ``decoder_*`` settings of a segmentation section."""
    return LargeFOV(
        in_channels,
        n_out,
        cfg["decoder_channels"],
        cfg["decoder_dilation"],
        dropout=cfg["decoder_dropout"],
        norm=cfg["decoder_norm"],
        bias=cfg["decoder_bias"],
    )


def foreground_channels(cfg: Mapping, n_classes: int) -> int:
    """Outputs of the joint loss's second decoder: one per class (published) or one foreground logit."""
    return n_classes if cfg["joint_loss"].get("form", "published") == "published" else 1


def segmenter(
    cfg: Mapping, in_chans: int, n_classes: int, section: str = "segmentation", foreground: bool = False
) -> Segmenter:
    """ViT + LargeFOV of a segmentation section; with ``foreground`` the joint loss's second decoder."""
    vit = backbone(cfg, in_chans, section)
    main = decoder(cfg, vit.embed_dim, n_classes)
    second = decoder(cfg, vit.embed_dim, foreground_channels(cfg, n_classes)) if foreground else None
    return Segmenter(vit, main, second, final_norm=bool(cfg.get("final_norm", True)))


def segmenter_config(classifier_cfg: Mapping, segmentation: Mapping) -> dict:
    """The settings a Segmenter is rebuilt from in paper mode: the segmentation section with the classifier's
    ViT and training crop (the one network trains on the classifier's crops; inference at ``input_size: crop``
    reads it)."""
    return {**segmentation, **{k: classifier_cfg[k] for k in (*BACKBONE_KEYS, "crop_size")}}


def projection(ctc: Mapping | None, in_dim: int) -> ProjectionHead | None:
    """The class-token contrast's projection head (``classifier.ctc``), None when it is off."""
    if not (ctc and ctc["enabled"]):
        return None
    return ProjectionHead(in_dim, ctc["hidden_dim"], ctc["bottleneck_dim"], ctc["out_dim"])


def _head_only(ctc: Mapping | None) -> bool:
    return bool(ctc) and ctc.get("form", "published") == "published"


def contrastive(model: CAMClassifier, ctc: Mapping | None) -> ContrastiveClassifier:
    """The classifier as trained with class-token contrast (``classifier.ctc``)."""
    return ContrastiveClassifier(model, projection(ctc, model.backbone.embed_dim), head_only_teacher=_head_only(ctc))


def joint(
    model: CAMClassifier, ctc: Mapping | None, segmentation: Mapping, n_classes: int, foreground: bool
) -> JointModel:
    """Paper mode's one network: the classifier with its contrast heads and the segmentation decoder(s) of the
    segmentation section on its final tokens."""
    dim = model.backbone.embed_dim
    head = projection(ctc, dim)
    main = decoder(segmentation, dim, n_classes)
    second = decoder(segmentation, dim, foreground_channels(segmentation, n_classes)) if foreground else None
    return JointModel(model, head, _head_only(ctc), main, second)


def linking_features(cfg: Mapping, in_chans: int) -> LinkingFeatures:
    """The frozen ViT whose tokens link tokens (``classifier.linking``: DINO or the pretrain stage's teacher)."""
    if not cfg.get("checkpoint") and not cfg.get("pretrained"):
        raise ConfigError(
            f"config key {LINKING}.checkpoint is not set: linking.features 'dino' needs the weights of "
            f"{cfg['backbone']} (a local file, e.g. DINO's dino_vitbase16_pretrain.pth; or "
            f"{LINKING}.pretrained: true when online), or set {LINKING}.features: self"
        )
    vit = backbone({**cfg, "random_init": False}, in_chans, LINKING)
    return LinkingFeatures(vit, final_norm=bool(cfg.get("final_norm", True)))


def self_distillation(cfg: Mapping, in_chans: int, section: str = "pretrain") -> SelfDistillation:
    """Student ViT and projection head of the pretrain section, with their EMA teacher."""
    vit = backbone(cfg, in_chans, section)
    h = cfg["head"]
    head = ProjectionHead(vit.embed_dim, h["hidden_dim"], h["bottleneck_dim"], h["out_dim"])
    return SelfDistillation(vit, head, masked=cfg["method"] == "ibot")


def sam(model_type: str, checkpoint: str | None, device: torch.device):
    """SAM of ``masks.sam_model_type`` (segment_anything's registry; vit_tiny for tests) with the weights of
    ``masks.sam_checkpoint`` (required: SAM never runs from random weights here)."""
    from .models.sam import build_sam_model, model_types

    if model_type not in model_types():
        raise ConfigError(
            f"config key masks.sam_model_type: unknown SAM type {model_type!r}; choose one of "
            f"{', '.join(model_types())}"
        )
    if not checkpoint:
        raise ConfigError(
            "config key masks.sam_checkpoint: masks.generator is sam but no checkpoint is set; "
            "download e.g. sam_vit_h_4b8939.pth and give its path, or use masks.generator: felzenszwalb"
        )
    state = load_state_dict(checkpoint, "masks.sam_checkpoint")
    model = build_sam_model(model_type)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1] if len(str(exc).splitlines()) > 1 else str(exc)
        raise ConfigError(
            f"config key masks.sam_model_type: {checkpoint} does not fit SAM {model_type} "
            f"({first.strip()}); set the model type the checkpoint was trained as"
        ) from None
    return model.to(device).eval()
