"""Multi-label soft margin loss of the CAM classifier's two heads."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cam_classification_loss(
    logits: torch.Tensor, logits_aux: torch.Tensor, targets: torch.Tensor, aux_weight: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, final-head loss, auxiliary-head loss)."""
    main = F.multilabel_soft_margin_loss(logits.float(), targets)
    aux = F.multilabel_soft_margin_loss(logits_aux.float(), targets)
    return main + aux_weight * aux, main, aux


def multilabel_f1(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Mean over classes of the F1 of multi-hot predictions (classes with no positives and no predictions skipped)."""
    pred, target = pred.bool(), target.bool()
    tp = (pred & target).sum(0).float()
    fp = (pred & ~target).sum(0).float()
    fn = (~pred & target).sum(0).float()
    denom = 2 * tp + fp + fn
    valid = denom > 0
    if not valid.any():
        return float("nan")
    return float((2 * tp[valid] / denom[valid]).mean())
