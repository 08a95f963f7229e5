"""SAM from segment_anything's own ``sam_model_registry`` (vit_h, vit_l, vit_b: the published architectures,
1024 px input), plus ``vit_tiny``: a small architecture built from the same segment_anything modules, so tests
can run the whole automatic-mask-generator path from a randomly initialised checkpoint written on the spot.
:func:`atsg.factory.sam` gives the model its checkpoint.
"""

from __future__ import annotations

from functools import partial

import torch
from segment_anything import sam_model_registry
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

TINY = "vit_tiny"
TINY_IMAGE = 256
REGISTRY_IMAGE = 1024
"""Input sides: segment_anything's builders make 1024 px models; the tiny test model takes 256 px."""


def image_size(model_type: str) -> int:
    """The side of the square image a SAM of ``model_type`` encodes."""
    return TINY_IMAGE if model_type == TINY else REGISTRY_IMAGE


def model_types() -> list[str]:
    """Every SAM type :func:`build_sam_model` builds: segment_anything's registry, then the tiny test model."""
    return [*sam_model_registry, TINY]


def build_sam_model(model_type: str) -> Sam:
    """An untrained SAM of ``model_type`` (what segment_anything's builders make before loading weights)."""
    if model_type in sam_model_registry:
        return sam_model_registry[model_type](checkpoint=None)
    if model_type != TINY:
        raise ValueError(f"unknown SAM type {model_type!r}; one of {', '.join(model_types())}")
    return _tiny_sam()


def _tiny_sam(embed_dim: int = 32, prompt: int = 32, image: int = TINY_IMAGE, patch: int = 16) -> Sam:
    """segment_anything's architecture at test size: a 2-block encoder (one global-attention block, windows of
    4 tokens), 32-dimensional prompts and decoder, 256 px input."""
    grid = image // patch
    return Sam(
        image_encoder=ImageEncoderViT(
            depth=2,
            embed_dim=embed_dim,
            img_size=image,
            mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=2,
            patch_size=patch,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=(1,),
            window_size=4,
            out_chans=prompt,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=prompt,
            image_embedding_size=(grid, grid),
            input_image_size=(image, image),
            mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=prompt, mlp_dim=64, num_heads=2),
            transformer_dim=prompt,
            iou_head_depth=3,
            iou_head_hidden_dim=prompt,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
