"""Segmentation losses on pseudo-labels."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..store import IGNORE


def balanced_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, background: bool) -> torch.Tensor:
    """Mean of the cross-entropy over background pixels and over foreground pixels (METHOD.md).

    Without a background class (or when one of the two groups is empty) it is the
    plain cross-entropy over the labelled pixels. Pixels labelled IGNORE never count.
    """
    logits = logits.float()
    labelled = labels != IGNORE
    if not labelled.any():
        return logits.sum() * 0.0
    if not background:
        return F.cross_entropy(logits, labels, ignore_index=IGNORE)
    bg = labelled & (labels == 0)
    fg = labelled & (labels != 0)
    if not bg.any() or not fg.any():
        return F.cross_entropy(logits, labels, ignore_index=IGNORE)
    ce = F.cross_entropy(logits, labels.masked_fill(~labelled, 0), reduction="none")
    return 0.5 * (ce[bg].mean() + ce[fg].mean())


def object_loss(logits: torch.Tensor, objects: torch.Tensor) -> torch.Tensor:
    """SAM object consistency: for every object, the mean squared difference between the logits of its
    pixels and their mean over the object; averaged over channels, pixels of an object, then objects.

    ``logits`` (B, C, H, W), ``objects`` (B, H, W) ids (0 = no object). No object: 0.
    """
    b, c = logits.shape[:2]
    x = logits.float().permute(0, 2, 3, 1).reshape(-1, c)
    ids = objects.reshape(b, -1).long()
    n_ids = int(ids.max()) + 1 if ids.numel() else 1
    key = (ids + n_ids * torch.arange(b, device=ids.device)[:, None]).reshape(-1)
    inside = key % n_ids != 0
    if not inside.any():
        return logits.sum() * 0.0
    key, x = key[inside], x[inside]
    count = torch.zeros(b * n_ids, device=x.device).index_add_(0, key, torch.ones_like(key, dtype=x.dtype))
    total = torch.zeros(b * n_ids, c, device=x.device).index_add_(0, key, x)
    mean = total / count.clamp(min=1)[:, None]
    sq = ((x - mean[key]) ** 2).mean(1)
    per_object = torch.zeros(b * n_ids, device=x.device).index_add_(0, key, sq) / count.clamp(min=1)
    return per_object[count > 0].mean()


def soft_boundaries(probs: torch.Tensor, kernel: int) -> torch.Tensor:
    """Class-agnostic soft boundary map (B, H, W) in [0, 1] of class probabilities (B, C, H, W): the
    largest morphological gradient (max-pooled minus own value of 1 - p) over classes; differentiable."""
    inv = 1.0 - probs
    grad = F.max_pool2d(inv, kernel, stride=1, padding=kernel // 2) - inv
    return grad.amax(1)


def boundary_loss(logits: torch.Tensor, boundaries: torch.Tensor, kernel: int, tolerance: int,
                  valid: torch.Tensor | None = None) -> torch.Tensor:
    """1 - boundary F1 between the soft boundaries of the class probabilities and the SAM boundary map,
    each matched within a ``tolerance`` px window (max pooling), per image then averaged; gradients
    reach the logits (the published version took boundaries of an argmax and passed none).

    ``boundaries`` (B, H, W) 0/1; ``valid`` (B, H, W) bool limits both maps (e.g. off padding).
    Images without any SAM boundary are skipped (0 when none has one).
    """
    pred = soft_boundaries(torch.softmax(logits.float(), 1), kernel)
    gt = boundaries.float()
    if valid is not None:
        pred, gt = pred * valid, gt * valid
    pad = tolerance // 2
    gt_ext = F.max_pool2d(gt[:, None], tolerance, stride=1, padding=pad)[:, 0]
    pred_ext = F.max_pool2d(pred[:, None], tolerance, stride=1, padding=pad)[:, 0]
    eps = 1e-7
    precision = (pred * gt_ext).sum((1, 2)) / (pred.sum((1, 2)) + eps)
    recall = (pred_ext * gt).sum((1, 2)) / (gt.sum((1, 2)) + eps)
    f1 = 2 * precision * recall / (precision + recall + eps)
    has = gt.sum((1, 2)) > 0
    if not has.any():
        return logits.sum() * 0.0
    return (1.0 - f1[has]).mean()


def _bilateral_filter(feats: torch.Tensor, s: torch.Tensor, budget: int = 1 << 24) -> torch.Tensor:
    """W s for the Gaussian kernel W_ij = exp(-|f_i - f_j|^2 / 2), in row chunks of about ``budget``
    kernel entries; W is never kept (no autograd through it)."""
    n = feats.shape[0]
    rows = max(1, budget // max(n, 1))
    out = torch.empty_like(s)
    for start in range(0, n, rows):
        kernel = torch.exp(-0.5 * torch.cdist(feats[start:start + rows], feats).pow(2))
        out[start:start + rows] = kernel @ s
    return out


def energy_loss(logits: torch.Tensor, images: torch.Tensor, sigma_rgb: float, sigma_xy: float, scale: float,
                valid: torch.Tensor | None = None) -> torch.Tensor:
    """Dense CRF energy ("regularized loss", Tang et al.) of the softmax, in PyTorch (no compiled lattice).

    At ``scale`` of the input, with the bilateral Gaussian kernel W_ij = exp(-|p_i - p_j|^2 / 2 sigma_xy^2
    - |I_i - I_j|^2 / 2 sigma_rgb^2) (positions in pixels of the input, colours 0-255):
    -sum_ij W_ij S_i . S_j over valid pixel pairs / (number of valid pixels)^2, averaged over images.
    Exact (no lattice approximation) and O(N^2) per image at the scaled size, in chunks; the gradient
    -2 W S / N^2 is formed from the filtered map, so memory stays O(N).
    """
    probs = torch.softmax(logits.float(), 1)
    size = [max(1, round(s * scale)) for s in logits.shape[-2:]]
    probs = F.interpolate(probs, size=size, mode="bilinear", align_corners=False)
    img = F.interpolate(images.float(), size=size, mode="bilinear", align_corners=False)
    if valid is not None:
        valid = F.interpolate(valid[:, None].float(), size=size, mode="nearest")[:, 0] > 0
    ys, xs = torch.meshgrid(torch.arange(size[0], device=logits.device, dtype=torch.float32),
                            torch.arange(size[1], device=logits.device, dtype=torch.float32), indexing="ij")
    pos = torch.stack([ys, xs], -1).reshape(-1, 2) / (sigma_xy * scale)
    total = probs.new_zeros(())
    for b in range(probs.shape[0]):
        feats = torch.cat([pos, img[b].flatten(1).T / sigma_rgb], 1)
        s = probs[b].flatten(1).T
        if valid is not None:
            keep = valid[b].flatten()
            feats, s = feats[keep], s[keep]
        n = s.shape[0]
        if n == 0:
            continue
        with torch.no_grad():
            ws = _bilateral_filter(feats, s.detach())
        value = (s.detach() * ws).sum()
        # value of sum_i S_i.(W S)_i with its exact gradient 2 W S (W is symmetric)
        energy = 2.0 * (s * ws).sum() - value
        total = total - energy / (n * n)
    return total / probs.shape[0]


def joint_loss(logits: torch.Tensor, fg_logit: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """NLL of the joint prediction on the pseudo-labels: the class softmax times the foreground decoder's
    sigmoid (foreground classes) or one minus it (background class 0), renormalised over classes."""
    probs = torch.softmax(logits.float(), 1)
    fg = torch.sigmoid(fg_logit.float())
    joint = torch.cat([probs[:, :1] * (1.0 - fg), probs[:, 1:] * fg], 1)
    joint = joint / joint.sum(1, keepdim=True).clamp(min=1e-8)
    labelled = labels != IGNORE
    if not labelled.any():
        return logits.sum() * 0.0
    return F.nll_loss(torch.log(joint.clamp(min=1e-8)), labels, ignore_index=IGNORE)
