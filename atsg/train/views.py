"""Photometric augmentation and the class-token contrast's extra views, drawn from a seeded numpy generator.

The published views (datasets/potsdam.py of the official code, torchvision on PIL images):
- main view: colour jitter (brightness 0.4, contrast 0.4, saturation 0.2, hue 0.1; probability 0.8, the four
  in random order), random greyscale (0.2), Gaussian blur (probability 1, sigma 0.1-2);
- second global view: RandomResizedCrop of the whole tile to the crop size (area 0.4-1, aspect 3/4-4/3,
  bicubic), flip, the same jitter and greyscale, blur (0.1), solarize (0.2);
- local view (the CTC crops are cut from it): the training crop, jitter, greyscale, blur (0.5).
Here the same operations run on float tensors (C, H, W) with 0-255 values (torchvision's tensor kernels), so
they work in the DataLoader's workers and every draw comes from the sample's own generator. Saturation, hue
and greyscale need three bands; other band counts get brightness, contrast (against the bands' mean) and blur.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF


def _gray(x: torch.Tensor) -> torch.Tensor:
    if x.shape[0] == 3:
        return (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2])[None]
    return x.mean(0, keepdim=True)


def color_jitter(x: torch.Tensor, rng: np.random.Generator, aug: Mapping) -> torch.Tensor:
    """ColorJitter of an image in [0, 1]: each factor drawn uniformly around 1, the four applied in random order."""
    factors = {
        "brightness": aug["brightness"],
        "contrast": aug["contrast"],
        "saturation": aug["saturation"],
        "hue": aug["hue"],
    }
    draws = {
        k: (float(rng.uniform(max(0.0, 1 - v), 1 + v)) if k != "hue" else float(rng.uniform(-v, v)))
        for k, v in factors.items()
    }
    rgb = x.shape[0] == 3
    for k in np.asarray(list(factors))[rng.permutation(4)]:
        f = draws[k]
        if k == "brightness":
            x = (x * f).clamp(0, 1)
        elif k == "contrast":
            x = ((x - _gray(x).mean()) * f + _gray(x).mean()).clamp(0, 1)
        elif k == "saturation" and rgb:
            x = ((x - _gray(x)) * f + _gray(x)).clamp(0, 1)
        elif k == "hue" and rgb and f != 0.0:
            x = TF.adjust_hue(x, f)
    return x


def gaussian_blur(x: torch.Tensor, rng: np.random.Generator, sigma_range) -> torch.Tensor:
    sigma = float(rng.uniform(*sigma_range))
    k = 2 * math.ceil(3 * sigma) + 1
    k = min(k, 2 * ((min(x.shape[-2:]) - 1) // 2) + 1)
    return TF.gaussian_blur(x, [k, k], [sigma, sigma]) if k >= 3 else x


def photometric(
    image: torch.Tensor, rng: np.random.Generator, aug: Mapping, blur: float, solarize: float = 0.0
) -> torch.Tensor:
    """Jitter (probability ``aug['color_jitter']``), greyscale (``aug['grayscale']``), blur (``blur``), solarize
    (``solarize``) of an image (C, H, W) with 0-255 values; every draw from ``rng`` in a fixed order."""
    x = image / 255.0
    if rng.random() < aug["color_jitter"]:
        x = color_jitter(x, rng, aug)
    if rng.random() < aug["grayscale"] and x.shape[0] == 3:
        x = _gray(x).expand(3, -1, -1).clone()
    if rng.random() <= blur:
        x = gaussian_blur(x, rng, aug["blur_sigma"])
    if rng.random() < solarize:
        x = torch.where(x >= 128 / 255, 1.0 - x, x)  # PIL ImageOps.solarize: pixels from 128 up inverted
    return x * 255.0


def augment_main(image: torch.Tensor, rng: np.random.Generator, aug: Mapping) -> torch.Tensor:
    """The published main-view augmentation (after rescale, crop and flip)."""
    if not aug["enabled"]:
        return image
    return photometric(image, rng, aug, aug["blur"])


def random_resized_crop(
    image: torch.Tensor, rng: np.random.Generator, size: int, scale, ratio=(3 / 4, 4 / 3)
) -> torch.Tensor:
    """torchvision's RandomResizedCrop (10 tries, then the central crop), bicubic, to ``size`` x ``size``."""
    h, w = image.shape[-2:]
    area = h * w
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    box = None
    for _ in range(10):
        target = area * float(rng.uniform(*scale))
        aspect = math.exp(float(rng.uniform(*log_ratio)))
        cw, ch = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            box = (int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1)), ch, cw)
            break
    if box is None:
        ch, cw = h, w
        if w / h < ratio[0]:
            ch = int(round(w / ratio[0]))
        elif w / h > ratio[1]:
            cw = int(round(h * ratio[1]))
        box = ((h - ch) // 2, (w - cw) // 2, ch, cw)
    top, left, ch, cw = box
    out = TF.resized_crop(
        image, top, left, ch, cw, [size, size], interpolation=TF.InterpolationMode.BICUBIC, antialias=True
    )
    return out.clamp(0, 255)


def second_global_view(
    tile: torch.Tensor, rng: np.random.Generator, crop: int, aug: Mapping, ctc: Mapping
) -> torch.Tensor:
    """The CTC's second global view of a whole tile (C, H, W), 0-255 values."""
    view = random_resized_crop(tile, rng, crop, ctc["global_scale"])
    if rng.random() < 0.5:
        view = view.flip(-1)
    return photometric(view, rng, aug, ctc["global_blur"], ctc["global_solarize"])


def local_view(image: torch.Tensor, rng: np.random.Generator, aug: Mapping, ctc: Mapping) -> torch.Tensor:
    """The image the CTC's local crops are cut from: the training crop, its own jitter, greyscale and blur
    (the published local view also flips it again, away from the CAM that places the crops: not copied)."""
    return photometric(image, rng, aug, ctc["local_blur"])
