"""Local crops for the class-token contrast, drawn where the auxiliary CAM is uncertain."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def uncertain_crops(images: torch.Tensor, uncertain: torch.Tensor, n: int, size: int,
                    min_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` crops of ``size`` px per image, centred on uncertain pixels (anywhere if there are none).

    images (B, C, H, W), uncertain (B, H, W) bool -> crops (n, B, C, size, size) (images smaller
    than ``size`` are zero-padded), flags (B, n) bool: the crop is at least ``min_fraction`` uncertain
    (a positive view; the others are the image's negatives). Draws from torch's global generator.
    """
    b, c, h, w = images.shape
    ph, pw = max(size - h, 0), max(size - w, 0)
    if ph or pw:
        images = F.pad(images, (0, pw, 0, ph))
        uncertain = F.pad(uncertain, (0, pw, 0, ph))
        h, w = h + ph, w + pw
    crops = images.new_empty(n, b, c, size, size)
    flags = torch.zeros(b, n, dtype=torch.bool, device=images.device)
    for i in range(b):
        where = uncertain[i].flatten().nonzero()[:, 0]
        pool = where if len(where) else torch.arange(h * w, device=images.device)
        centres = pool[torch.randint(len(pool), (n,), device="cpu").to(pool.device)]
        ys = (centres // w - size // 2).clamp(0, h - size).tolist()
        xs = (centres % w - size // 2).clamp(0, w - size).tolist()
        for j, (y, x) in enumerate(zip(ys, xs)):
            crops[j, i] = images[i, :, y:y + size, x:x + size]
            flags[i, j] = uncertain[i, y:y + size, x:x + size].float().mean() >= min_fraction
    return crops, flags
