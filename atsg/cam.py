"""Class activation maps: multi-scale + flip fusion, normalisation, CAM -> label rules (METHOD.md)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .store import IGNORE


def _resize(x: torch.Tensor, size, mode: str = "bilinear") -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode=mode, align_corners=False)


def minmax_normalise(cam: torch.Tensor, valid: torch.Tensor | None = None, eps: float = 1e-5) -> torch.Tensor:
    """Per tile and class, to [0, 1]. With ``valid`` (B, H, W) bool, the range is that of the valid pixels
    (padding and nodata count for nothing) and invalid pixels are 0."""
    flat = cam.flatten(2)
    if valid is None:
        lo = flat.min(-1).values[..., None, None]
        hi = flat.max(-1).values[..., None, None]
        return (cam - lo) / (hi - lo + eps)
    keep = valid.flatten(1)[:, None, :]
    lo = flat.masked_fill(~keep, float("inf")).min(-1).values[..., None, None]
    hi = flat.masked_fill(~keep, float("-inf")).max(-1).values[..., None, None]
    return ((cam - lo) / (hi - lo + eps)).masked_fill(~valid[:, None], 0.0)


def valid_at(valid: torch.Tensor | None, size) -> torch.Tensor | None:
    """A valid-pixel mask (B, H, W) at another resolution: a cell is valid if any pixel it covers is."""
    if valid is None or tuple(valid.shape[-2:]) == tuple(size):
        return valid
    return F.adaptive_max_pool2d(valid[:, None].float(), tuple(size))[:, 0] > 0


def fuse_heads(cam: torch.Tensor, cam_aux: torch.Tensor | None, aux_weight: float) -> torch.Tensor:
    """(1 - w) * final + w * auxiliary CAM, min-max normalised again; the final CAM alone when w == 0."""
    if not aux_weight:
        return cam
    return minmax_normalise((1.0 - aux_weight) * cam + aux_weight * cam_aux)


@torch.no_grad()
def multiscale_cams(
    model,
    images: torch.Tensor,
    scales: Sequence[float],
    flip: bool,
    out_size: tuple[int, int],
    clock=None,
    valid: torch.Tensor | None = None,
    relu: str = "after_merge",
    aux_groups: str = "image",
    logits: bool = False,
):
    """(final, auxiliary) CAMs (B, K, *out_size) in [0, 1] of a uint8/float image batch; with ``logits`` also
    the image-level logits (B, K) of the unflipped scale-1 pass (the model's ``image_logits`` of its final
    tokens and maps: what a plain forward gives, without a forward of its own), None when 1 is not a scale.

    For each scale (the image resized to int(scale * side)) the batch and its horizontal flip go through the
    model in one forward pass; each class map is resized to the scaled input, the two are merged by element-
    wise max and then ReLU'd (``relu`` "after_merge", as published; "before_resize": ReLU on the token-grid
    maps first), the scales are summed at ``out_size``, and each class is min-max normalised per tile over the
    ``valid`` pixels (B, H, W) of the images (all when None; invalid ones are 0).

    ``aux_groups``: the images among which an adaptive auxiliary block is chosen: "batch" (the whole forward
    pass, as the published training step does) or "image" (each image with its flip, so a tile's CAM does
    not depend on the tiles batched with it). ``clock`` (a ``timing.ModelClock``) times the forward passes.
    """
    b = images.shape[0]
    h, w = images.shape[-2:]
    total = total_aux = image_logits = None
    patch = model.backbone.patch_size
    for s in scales:
        x = _resize(images.float(), (max(1, int(h * s)), max(1, int(w * s))))
        if flip:
            x = torch.cat([x, x.flip(-1)], 0)
        groups = None
        if aux_groups == "image":
            groups = torch.arange(b, device=x.device).repeat(2 if flip else 1)
        cam, cam_aux, tokens = clock(model.cams, x, groups) if clock is not None else model.cams(x, groups)
        if logits and s == 1 and image_logits is None:
            with torch.no_grad():
                image_logits = model.image_logits(tokens[:b], cam[:b])
        hs, ws = x.shape[-2:]
        pieces = []
        for c in (cam, cam_aux):
            c = c.float()
            if relu == "before_resize":
                c = F.relu(c)
            if hs % patch or ws % patch:  # drop the padding of the patch grid at the scaled size first
                c = _resize(c, (hs + (-hs) % patch, ws + (-ws) % patch))[..., :hs, :ws]
            c = _resize(c, out_size)  # else straight from the token grid, as published
            if flip:
                c = torch.maximum(c[:b], c[b:].flip(-1))
            if relu == "after_merge":
                c = F.relu(c)
            pieces.append(c)
        total = pieces[0] if total is None else total + pieces[0]
        total_aux = pieces[1] if total_aux is None else total_aux + pieces[1]
    mask = valid_at(valid, out_size)
    if logits:
        return minmax_normalise(total, mask), minmax_normalise(total_aux, mask), image_logits
    return minmax_normalise(total, mask), minmax_normalise(total_aux, mask)


def class_argmax(x: torch.Tensor) -> torch.Tensor:
    """Index of the highest class (dim 1) per pixel, the first on ties, as ``x.argmax(1)``. ``max(1)`` reduces
    the class dimension of (B, C, H, W) maps about 10x faster than ``argmax(1)`` on the CPU (32 tiles of
    6 x 128 x 128: 5 ms against 50 ms), and refinement, the segmentation loss and validation take it per batch."""
    return x.max(1).indices


def restrict_to_labels(cam: torch.Tensor, cls_labels: torch.Tensor) -> torch.Tensor:
    """Zero the classes that the image-level label says are absent."""
    return cam * cls_labels[:, :, None, None].to(cam.dtype)


def cam_to_label(cam: torch.Tensor, cls_labels: torch.Tensor, bkg_thre: float, background: bool) -> torch.Tensor:
    """CAM -> label (B, H, W): argmax over the image's classes; max <= bkg_thre -> background 0.

    With a background class the foreground classes are 1..K; without one (e.g.
    DeepGlobe) the CAM classes are the label classes 0..K-1 and tiles without any
    image-level label are ignored.
    """
    cam = restrict_to_labels(cam, cls_labels)
    score, idx = cam.max(1)
    if background:
        label = idx + 1
        label[score <= bkg_thre] = 0
    else:
        label = idx.clone()
        label[(cls_labels.sum(1) == 0)[:, None, None].expand_as(label)] = IGNORE
    return label


def labels_at_size(
    cam: torch.Tensor, cls_labels: torch.Tensor, size, bkg_thre: float, background: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """CAM labels at ``size`` (the CAMs upsampled bilinearly, then :func:`cam_to_label`) and the highest CAM
    of the image's classes per pixel (B, H, W): how every CAM-label score of atsg is made."""
    cam = F.interpolate(cam.float(), size=tuple(size), mode="bilinear", align_corners=False)
    return cam_to_label(cam, cls_labels, bkg_thre, background), restrict_to_labels(cam, cls_labels).amax(1)


def cam_to_label_band(
    cam: torch.Tensor, cls_labels: torch.Tensor, high: float, low: float, background: bool
) -> torch.Tensor:
    """CAM -> label with the uncertain band: max <= high -> ignore, max <= low -> background."""
    cam = restrict_to_labels(cam, cls_labels)
    score, idx = cam.max(1)
    if not background:
        return cam_to_label(cam, cls_labels, 0.0, False)
    label = idx + 1
    label[score <= high] = IGNORE
    label[score <= low] = 0
    return label
