"""Segmentation losses on pseudo-labels."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..cam import class_argmax
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


class _WeightedObjectVariance(torch.autograd.Function):
    """sum_i w[key_i] |x_i - mean of x over key_i|^2 for pixels x (P, C) grouped by ``key`` (P,), deterministic.

    Per-key sums are segment sums over the pixels sorted by key (index_add_ and the backward of a gather
    accumulate in an order that depends on thread timing on CPU, so two runs would differ in the last bits);
    the gradient is written out: 2 w[key_i] (x_i - mean), the mean's own term vanishing as deviations sum to 0.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, key: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        order = torch.argsort(key, stable=True)
        count = torch.bincount(key, minlength=weight.shape[0])
        sums = torch.segment_reduce(x[order], "sum", lengths=count, axis=0, unsafe=True)
        dev = x - (sums / count.clamp(min=1)[:, None].to(x.dtype))[key]
        w = weight[key]
        ctx.save_for_backward(dev, w)
        return (dev.pow(2).sum(1) * w).sum()

    @staticmethod
    def backward(ctx, grad):
        dev, w = ctx.saved_tensors
        return grad * 2.0 * w[:, None] * dev, None, None


def _objects_as_keys(objects: torch.Tensor, n_ids: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(key (B * H * W,) = image * n_ids + id, mask of pixels in an object) of an object map (B, H, W)."""
    b = objects.shape[0]
    ids = objects.reshape(b, -1).long()
    key = (ids + n_ids * torch.arange(b, device=ids.device)[:, None]).reshape(-1)
    return key, (ids.reshape(-1) > 0) & (ids.reshape(-1) < n_ids)


def object_loss(logits: torch.Tensor, objects: torch.Tensor) -> torch.Tensor:
    """SAM object consistency: for every object, the mean squared difference between the logits of its
    pixels and their mean over the object; averaged over channels, pixels of an object, then objects.

    ``logits`` (B, C, H, W), ``objects`` (B, H, W) ids (0 = no object). No object: 0.
    """
    c = logits.shape[1]
    n_ids = int(objects.max()) + 1 if objects.numel() else 1
    key, inside = _objects_as_keys(objects, n_ids)
    if not inside.any():
        return logits.sum() * 0.0
    key = key[inside]
    count = torch.bincount(key, minlength=objects.shape[0] * n_ids)
    present = count > 0
    # mean over an object's pixels and channels, then over objects: weight 1 / (C n_k N_objects)
    weight = 1.0 / (c * count.clamp(min=1) * present.sum()).float()
    x = logits.float().permute(0, 2, 3, 1).reshape(-1, c)[inside]
    return _WeightedObjectVariance.apply(x, key, weight)


def object_loss_published(logits: torch.Tensor, objects: torch.Tensor, max_id: int) -> torch.Tensor:
    """The published SAM object loss (``ObjectLoss``), vectorised.

    Each image's object ids are first renumbered 1..k in increasing order (the published dataset does this
    after cropping). For every id up to ``max_id`` and every image holding it (n pixels): the squared
    difference n/(n+1) (logit - the object's mean logit) over the object's pixels and all channels; the sum
    over images, channels, pixels and ids, divided by B*C*H*W (each id's MSE averages over every element).
    """
    b, c = logits.shape[:2]
    ids = torch.zeros_like(objects, dtype=torch.long)
    for i in range(b):  # renumber: the k-th smallest nonzero id present becomes k
        present, inverse = torch.unique(objects[i], return_inverse=True)
        rank = torch.arange(len(present), device=objects.device) + (0 if present[0] == 0 else 1)
        ids[i] = rank[inverse]
    key, inside = _objects_as_keys(ids, max_id + 1)
    if not inside.any():
        return logits.sum() * 0.0
    key = key[inside]
    count = torch.bincount(key, minlength=b * (max_id + 1)).float()
    weight = (count / (count + 1)).pow(2) / logits.numel()
    x = logits.float().permute(0, 2, 3, 1).reshape(-1, c)[inside]
    return _WeightedObjectVariance.apply(x, key, weight)


def boundary_loss_published(
    logits: torch.Tensor, boundaries: torch.Tensor, kernel: int = 3, tolerance: int = 5
) -> torch.Tensor:
    """The published boundary loss value (``BoundaryLoss``): boundaries of the argmax class map (class
    indices, not one-hot) and of the SAM boundary map by integer max pooling, each map split into two halves
    treated as two channels, 1 - boundary F1 averaged. The argmax passes no gradient: the loss never trains
    (METHOD.md); the result is a constant of the logits for the logs."""
    n = logits.shape[0]
    with torch.no_grad():
        pred = class_argmax(torch.softmax(logits.float(), 1))
        gt = boundaries.long()

        def edges(m):
            inv = 1 - m
            return F.max_pool2d(inv, kernel, stride=1, padding=(kernel - 1) // 2) - inv

        gt_b, pred_b = edges(gt), edges(pred)
        gt_ext = F.max_pool2d(gt_b, tolerance, stride=1, padding=(tolerance - 1) // 2)
        pred_ext = F.max_pool2d(pred_b, tolerance, stride=1, padding=(tolerance - 1) // 2)
        gt_b, pred_b = gt_b.reshape(n, 2, -1), pred_b.reshape(n, 2, -1)
        gt_ext, pred_ext = gt_ext.reshape(n, 2, -1), pred_ext.reshape(n, 2, -1)
        precision = (pred_b * gt_ext).sum(2) / (pred_b.sum(2) + 1e-7)
        recall = (pred_ext * gt_b).sum(2) / (gt_b.sum(2) + 1e-7)
        f1 = 2 * precision * recall / (precision + recall + 1e-7)
        value = (1 - f1).mean()
    return value + logits.sum() * 0.0


def soft_boundaries(probs: torch.Tensor, kernel: int) -> torch.Tensor:
    """Class-agnostic soft boundary map (B, H, W) in [0, 1] of class probabilities (B, C, H, W): the
    largest morphological gradient (max-pooled minus own value of 1 - p) over classes; differentiable."""
    inv = 1.0 - probs
    grad = F.max_pool2d(inv, kernel, stride=1, padding=kernel // 2) - inv
    return grad.amax(1)


def boundary_loss(
    logits: torch.Tensor, boundaries: torch.Tensor, kernel: int, tolerance: int, valid: torch.Tensor | None = None
) -> torch.Tensor:
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


# Squared kernel distances beyond which W_ij (< exp(-80), 2e-35) is taken as 0: exp is about 10x slower on
# the CPU where its result underflows (denormal or 0 in float32), which most pairs of a tile's pixels do.
_FAR = 160.0


def _bilateral_filter(feats: torch.Tensor, s: torch.Tensor, budget: int = 1 << 24) -> torch.Tensor:
    """W s for the Gaussian kernel W_ij = exp(-|f_i - f_j|^2 / 2), in row chunks of about ``budget``
    kernel entries; W is never kept (no autograd through it). Squared distances as |f_i|^2 + |f_j|^2 -
    2 f_i . f_j in one matrix product (clamped at 0; faster than ``cdist``, equal to float32 rounding, about
    1e-5 relative); W_ij < 2e-35 is 0 (``_FAR``)."""
    n = feats.shape[0]
    rows = max(1, budget // max(n, 1))
    feats = feats - feats.mean(0)  # centred: smaller norms, less float32 cancellation in the expansion
    sq = (feats * feats).sum(1)
    out = torch.empty_like(s)
    for start in range(0, n, rows):
        part = feats[start : start + rows]
        dist = torch.addmm(sq[start : start + rows, None] + sq[None, :], part, feats.T, alpha=-2.0)
        far = dist > _FAR
        kernel = dist.clamp_(0.0, _FAR).mul_(-0.5).exp_().masked_fill_(far, 0.0)
        out[start : start + rows] = kernel @ s
    return out


def energy_loss(
    logits: torch.Tensor,
    images: torch.Tensor,
    sigma_rgb: float,
    sigma_xy: float,
    scale: float,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
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
    ys, xs = torch.meshgrid(
        torch.arange(size[0], device=logits.device, dtype=torch.float32),
        torch.arange(size[1], device=logits.device, dtype=torch.float32),
        indexing="ij",
    )
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


def energy_loss_published(
    logits: torch.Tensor,
    images: torch.Tensor,
    labels: torch.Tensor,
    sigma_rgb: float,
    sigma_xy: float,
    scale: float,
    kernel_weight: float,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """The published dense-CRF energy loss (``get_energy_loss`` + ``DenseEnergyLoss``) with an exact kernel.

    At ``scale`` (image by nearest neighbour, probabilities bilinear, labels and ``valid`` by nearest), S =
    softmax x valid, gate = valid - max probability, 1 on pixels without pseudo-label, at least 0, and W
    the Gaussian kernel exp(-|p_i - p_j|^2 / 2 (sigma_xy scale)^2 - |I_i - I_j|^2 / 2 sigma_rgb^2) (the
    published permutohedral lattice only approximates it): value -kernel_weight sum_i S_i . gate_i (W S)_i
    / batch, gradient -2 kernel_weight gate W S / batch as the published backward.
    """
    probs = torch.softmax(logits.float(), 1)
    h, w = logits.shape[-2:]
    size = (max(1, int(h * scale)), max(1, int(w * scale)))
    if valid is None:
        valid = torch.ones_like(labels, dtype=torch.bool)
    img = F.interpolate(images.float(), size=size, mode="nearest")
    probs = F.interpolate(probs, size=size, mode="bilinear", align_corners=False)
    roi = F.interpolate(valid[:, None].float(), size=size, mode="nearest")[:, 0]
    unlabelled = F.interpolate(labels[:, None].float(), size=size, mode="nearest")[:, 0] == IGNORE
    gate = (roi - probs.max(1).values).masked_fill(unlabelled, 1.0).clamp(min=0.0)
    seg = probs * roi[:, None]
    ys, xs = torch.meshgrid(
        torch.arange(size[0], device=logits.device, dtype=torch.float32),
        torch.arange(size[1], device=logits.device, dtype=torch.float32),
        indexing="ij",
    )
    pos = torch.stack([ys, xs], -1).reshape(-1, 2) / (sigma_xy * scale)
    total = probs.new_zeros(())
    for b in range(probs.shape[0]):
        keep = roi[b].flatten() > 0  # S is 0 elsewhere: those pixels add nothing to any sum
        if not keep.any():
            continue
        feats = torch.cat([pos, img[b].flatten(1).T / sigma_rgb], 1)[keep]
        s = seg[b].flatten(1).T[keep]
        with torch.no_grad():
            a = _bilateral_filter(feats, s.detach()) * gate[b].flatten()[keep][:, None]
        total = total - (2.0 * (s * a).sum() - (s.detach() * a).sum())
    return kernel_weight * total / probs.shape[0]


def joint_loss_published(logits: torch.Tensor, fg_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The published joint loss (``JointLoss(foreground_seg, segs, label)``): the foreground decoder's softmax
    (one channel per class) times the sigmoid of the main logits, class by class, renormalised and clamped
    to [1e-7, 1 - 1e-7]; NLL summed over labelled pixels / their number."""
    fgp = torch.sigmoid(logits.float())
    joint = torch.softmax(fg_logits.float(), 1) * fgp
    prob = (joint / joint.sum(1, keepdim=True)).clamp(1e-7, 1 - 1e-7)
    labelled = labels != IGNORE
    if not labelled.any():
        return logits.sum() * 0.0
    losses = F.nll_loss(torch.log(prob), labels, ignore_index=IGNORE, reduction="none")
    return losses.sum() / labelled.sum()


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
