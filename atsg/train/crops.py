"""Local crops for the class-token contrast, placed by the auxiliary CAM: the published rule (``roi_map``,
``roi_crops``) and atsg's former one (``uncertain_crops``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _at_least(size: int, images: torch.Tensor, region: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(images (B, C, H, W), region map (B, H, W)) zero-padded right and bottom to at least ``size`` px."""
    ph, pw = max(size - images.shape[-2], 0), max(size - images.shape[-1], 0)
    if ph or pw:
        images, region = F.pad(images, (0, pw, 0, ph)), F.pad(region, (0, pw, 0, ph))
    return images, region


def uncertain_crops(
    images: torch.Tensor, uncertain: torch.Tensor, n: int, size: int, min_fraction: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` crops of ``size`` px per image, centred on uncertain pixels (anywhere if there are none).

    images (B, C, H, W), uncertain (B, H, W) bool -> crops (n, B, C, size, size) (images smaller
    than ``size`` are zero-padded), flags (B, n) bool: the crop is at least ``min_fraction`` uncertain
    (a positive view; the others are the image's negatives). Draws from torch's global generator.
    """
    images, uncertain = _at_least(size, images, uncertain)
    b, c, h, w = images.shape
    crops = images.new_empty(n, b, c, size, size)
    flags = torch.zeros(b, n, dtype=torch.bool, device=images.device)
    for i in range(b):
        where = uncertain[i].flatten().nonzero()[:, 0]
        pool = where if len(where) else torch.arange(h * w, device=images.device)
        centres = pool[torch.randint(len(pool), (n,), device="cpu").to(pool.device)]
        ys = (centres // w - size // 2).clamp(0, h - size).tolist()
        xs = (centres % w - size // 2).clamp(0, w - size).tolist()
        for j, (y, x) in enumerate(zip(ys, xs)):
            crops[j, i] = images[i, :, y : y + size, x : x + size]
            flags[i, j] = uncertain[i, y : y + size, x : x + size].float().mean() >= min_fraction
    return crops, flags


def roi_map(
    cam_aux: torch.Tensor, cls: torch.Tensor, low: float, high: float, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """The published ``cam_to_roi_mask2``: per pixel the image classes' max CAM value -> 0 at or under ``low``,
    2 at or over ``high``, 1 between (B, H, W) int; invalid pixels (padding, nodata) 0."""
    value = (cam_aux * cls[:, :, None, None].to(cam_aux.dtype)).amax(1)
    roi = torch.ones_like(value, dtype=torch.int16)
    roi[value <= low] = 0
    roi[value >= high] = 2
    if valid is not None:
        roi[~valid] = 0
    return roi


def roi_crops(
    images: torch.Tensor, roi: torch.Tensor, n: int, size: int, max_fraction: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The published ``crop_from_roi_neg``: ``n`` crops of ``size`` px per image, centred on pixels at least
    ``size // 2`` from the border whose roi is at most 1 (any such pixel when fewer than ``n``), drawn by one
    ``torch.randperm`` per image; a crop whose mean roi value is at most ``max_fraction`` is a negative.

    images (B, C, H, W), roi (B, H, W) -> crops (n, B, C, size, size), flags (B, n) bool (True: positive).
    Images smaller than ``size`` are zero-padded (roi 0) first.
    """
    images, roi = _at_least(size, images, roi)
    b, c, h, w = images.shape
    margin = size // 2
    crops = images.new_zeros(n, b, c, size, size)
    flags = torch.ones(b, n, dtype=torch.bool, device=images.device)
    for i in range(b):
        inner = roi[i, margin : h - margin, margin : w - margin]
        where = (inner <= 1).nonzero()
        if where.shape[0] < n:
            where = (inner >= 0).nonzero()
        if where.shape[0] == 0:  # a tile exactly one crop wide: the one crop there is
            where = torch.zeros(1, 2, dtype=torch.long, device=images.device)
        picks = where[torch.randperm(where.shape[0])[:n].to(where.device)]
        if len(picks) < n:  # a tile barely larger than a crop: repeat the few positions there are
            picks = picks[torch.arange(n, device=picks.device) % max(len(picks), 1)]
        for j, (y, x) in enumerate(picks.tolist()):
            crops[j, i] = images[i, :, y : y + size, x : x + size]
            flags[i, j] = roi[i, y : y + size, x : x + size].sum().item() / (size * size) > max_fraction
    return crops, flags
