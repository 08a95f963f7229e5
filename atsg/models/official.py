"""State dicts of the published ATSG ``network`` (model/model_seg_neg_fp.py) in atsg's names.

The official network holds a ViT (``encoder.*``, timm's own names), the two bias-free CAM heads
(``classifier``, ``aux_classifier``), the CTC projection head and its EMA copy (``proj_head``,
``proj_head_t``, weight-normalised last layers as ``weight_g`` / ``weight_v``) and two LargeFOV decoders
(``decoder``, ``foreground_decoder``: ``conv6``, ``conv7``, ``conv8``). atsg's paper-mode model
(:class:`~atsg.models.joint.JointModel`) holds the same tensors under other prefixes.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

_PREFIXES = (  # official prefix -> atsg prefix (first match wins)
    ("encoder.head.", None),  # the ImageNet classifier of the ViT: unused
    ("encoder.", "classifier.backbone.vit."),
    ("classifier.weight", "classifier.head.weight"),
    ("aux_classifier.weight", "classifier.head_aux.weight"),
    ("proj_head_t.", "teacher.head."),
    ("proj_head.", "projection."),
    ("foreground_decoder.", "foreground."),
    ("decoder.", "decoder."),
)
_WEIGHT_NORM = {
    "last_layer.weight_g": "last.parametrizations.weight.original0",
    "last_layer.weight_v": "last.parametrizations.weight.original1",
}


def official_key(key: str) -> str | None:
    """atsg's name of one tensor of the official network (None: a tensor atsg has no use for)."""
    for old, new in _PREFIXES:
        if key.startswith(old):
            if new is None:
                return None
            rest = key[len(old) :]
            for o, n in _WEIGHT_NORM.items():
                if rest == o:
                    rest = n
            return new + rest
    return key


def from_official(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An official state dict (``module.`` prefixes of DistributedDataParallel removed) in atsg's names."""
    out = {}
    for key, value in state.items():
        key = key[len("module.") :] if key.startswith("module.") else key
        new = official_key(key)
        if new is not None:
            out[new] = value
    return out
