"""SAM through the official segment_anything modules, by model type and checkpoint.

``vit_h``, ``vit_l`` and ``vit_b`` are the published architectures (1024 px
input). ``vit_tiny`` is a small architecture built from the same modules, so
tests can run the whole automatic-mask-generator path from a randomly
initialised checkpoint written on the spot.
"""

from __future__ import annotations

from functools import partial

import torch
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

from ..errors import ConfigError
from .backbone import load_state_dict

# model type -> (encoder embed dim, depth, heads, global attention blocks, image size, prompt dim, decoder mlp/heads)
ARCHITECTURES = {
    "vit_h": dict(
        embed_dim=1280,
        depth=32,
        heads=16,
        global_attn=(7, 15, 23, 31),
        image=1024,
        prompt=256,
        mlp=2048,
        dec_heads=8,
        window=14,
    ),
    "vit_l": dict(
        embed_dim=1024,
        depth=24,
        heads=16,
        global_attn=(5, 11, 17, 23),
        image=1024,
        prompt=256,
        mlp=2048,
        dec_heads=8,
        window=14,
    ),
    "vit_b": dict(
        embed_dim=768,
        depth=12,
        heads=12,
        global_attn=(2, 5, 8, 11),
        image=1024,
        prompt=256,
        mlp=2048,
        dec_heads=8,
        window=14,
    ),
    "vit_tiny": dict(
        embed_dim=32, depth=2, heads=2, global_attn=(1,), image=256, prompt=32, mlp=64, dec_heads=2, window=4
    ),
}


def build_sam_model(model_type: str) -> Sam:
    """An untrained SAM of ``model_type`` (what segment_anything's build_sam builds before loading)."""
    if model_type not in ARCHITECTURES:
        raise ConfigError(
            f"config key masks.sam_model_type: unknown SAM type {model_type!r}; "
            f"choose one of {', '.join(ARCHITECTURES)}"
        )
    a = ARCHITECTURES[model_type]
    patch = 16
    grid = a["image"] // patch
    return Sam(
        image_encoder=ImageEncoderViT(
            depth=a["depth"],
            embed_dim=a["embed_dim"],
            img_size=a["image"],
            mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=a["heads"],
            patch_size=patch,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=a["global_attn"],
            window_size=a["window"],
            out_chans=a["prompt"],
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=a["prompt"],
            image_embedding_size=(grid, grid),
            input_image_size=(a["image"], a["image"]),
            mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=2, embedding_dim=a["prompt"], mlp_dim=a["mlp"], num_heads=a["dec_heads"]
            ),
            transformer_dim=a["prompt"],
            iou_head_depth=3,
            iou_head_hidden_dim=a["prompt"],
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )


def load_sam(model_type: str, checkpoint: str | None, device: torch.device) -> Sam:
    """SAM with the weights of ``checkpoint`` (required: SAM is never run from random weights here)."""
    if not checkpoint:
        raise ConfigError(
            "config key masks.sam_checkpoint: masks.generator is sam but no checkpoint is set; "
            "download e.g. sam_vit_h_4b8939.pth and give its path, or use masks.generator: felzenszwalb"
        )
    sam = build_sam_model(model_type)
    state = load_state_dict(checkpoint, "masks.sam_checkpoint")
    try:
        sam.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1] if len(str(exc).splitlines()) > 1 else str(exc)
        raise ConfigError(
            f"config key masks.sam_model_type: {checkpoint} does not fit SAM {model_type} "
            f"({first.strip()}); set the model type the checkpoint was trained as"
        ) from None
    return sam.to(device).eval()
