"""Class-agnostic mask generators: SAM's automatic mask generator or scikit-image superpixels.

Each maps a tile to its object and boundary maps (METHOD.md): SAM through
``maps.object_and_boundary_maps`` on its masks, superpixels through the
equivalent vectorised ``maps.partition_maps``.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
from skimage.segmentation import felzenszwalb, slic

from ..errors import ConfigError
from .maps import object_and_boundary_maps, partition_maps


def _rgb(image_chw: np.ndarray) -> np.ndarray:
    """(bands, H, W) uint8 -> (H, W, 3) uint8 (first three bands; a single band is repeated)."""
    img = np.moveaxis(image_chw, 0, -1)
    if img.shape[-1] >= 3:
        return np.ascontiguousarray(img[..., :3])
    return np.ascontiguousarray(np.repeat(img[..., :1], 3, -1))


class SuperpixelGenerator:
    def __init__(self, name: str, params: Mapping):
        self.name, self.params = name, dict(params)
        fn = {"felzenszwalb": felzenszwalb, "slic": slic}[name]
        try:
            fn(np.zeros((8, 8, 3), np.uint8), **self.params)
        except TypeError as exc:
            raise ConfigError(f"config key masks.{name}: {exc}") from None
        self.fn = fn

    def __call__(self, image_chw: np.ndarray, min_area: int, max_objects: int) -> tuple[np.ndarray, np.ndarray]:
        """(objects, boundaries) of one tile."""
        return partition_maps(self.fn(_rgb(image_chw), **self.params), min_area, max_objects)


class SamGenerator:
    """The official segment_anything automatic mask generator with the METHOD.md settings."""

    def __init__(self, cfg: Mapping, device):
        from segment_anything import SamAutomaticMaskGenerator

        from ..models.sam import load_sam

        self.sam = load_sam(cfg["sam_model_type"], cfg["sam_checkpoint"], device)
        self.generator = SamAutomaticMaskGenerator(
            self.sam, points_per_side=cfg["points_per_side"], points_per_batch=cfg["points_per_batch"],
            pred_iou_thresh=cfg["pred_iou_thresh"], stability_score_thresh=cfg["stability_score_thresh"],
            box_nms_thresh=cfg["box_nms_thresh"], crop_n_layers=cfg["crop_n_layers"],
            crop_nms_thresh=cfg["crop_nms_thresh"], output_mode="binary_mask")

    def __call__(self, image_chw: np.ndarray, min_area: int, max_objects: int) -> tuple[np.ndarray, np.ndarray]:
        """(objects, boundaries) of one tile."""
        masks = [r["segmentation"] for r in self.generator.generate(_rgb(image_chw))]
        return object_and_boundary_maps(masks, image_chw.shape[-2:], min_area, max_objects)


def build_generator(cfg: Mapping, device):
    if cfg["generator"] == "sam":
        return SamGenerator(cfg, device)
    return SuperpixelGenerator(cfg["generator"], cfg[cfg["generator"]])
