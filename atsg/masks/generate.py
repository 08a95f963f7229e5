"""Class-agnostic mask generators: SAM's automatic masks or scikit-image superpixels.

Each maps tiles to their object and boundary maps (METHOD.md): SAM masks through
``maps.object_and_boundary_maps``, superpixels through the equivalent
``maps.partition_maps``. SAM can also run once per scene window at native
resolution (``masks.scene_windows``), each tile taking the window's masks cut to it.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from skimage.segmentation import felzenszwalb, slic

from ..errors import ConfigError
from .maps import object_and_boundary_maps, partition_maps
from .windows import Window, cut, paste

Maps = tuple[np.ndarray, np.ndarray]


def _rgb(image_chw: np.ndarray) -> np.ndarray:
    """(bands, H, W) uint8 -> (H, W, 3) uint8 (first three bands; a single band is repeated)."""
    img = np.moveaxis(image_chw, 0, -1)
    if img.shape[-1] >= 3:
        return np.ascontiguousarray(img[..., :3])
    return np.ascontiguousarray(np.repeat(img[..., :1], 3, -1))


class SuperpixelGenerator:
    model_seconds = None

    def __init__(self, cfg: Mapping):
        name = cfg["generator"]
        self.name, self.params = name, dict(cfg[name])
        self.min_area, self.max_objects = cfg["min_area"], cfg["max_objects"]
        self.painted_only = cfg["boundaries"] == "painted"
        fn = {"felzenszwalb": felzenszwalb, "slic": slic}[name]
        try:
            fn(np.zeros((8, 8, 3), np.uint8), **self.params)
        except TypeError as exc:
            raise ConfigError(f"config key masks.{name}: {exc}") from None
        self.fn = fn

    def maps(self, images: np.ndarray) -> list[Maps]:
        """(objects, boundaries) of each of (B, bands, H, W) tiles."""
        return [
            partition_maps(self.fn(_rgb(image), **self.params), self.min_area, self.max_objects, self.painted_only)
            for image in images
        ]


class SamGenerator:
    """SAM with the METHOD.md settings: ``GridMaskGenerator`` (the official generator's masks without its
    overhead), or the official ``SamAutomaticMaskGenerator`` itself when crop layers are asked for."""

    def __init__(self, cfg: Mapping, device, timed: bool = False):
        from ..factory import sam
        from .sam_auto import GridMaskGenerator

        self.min_area, self.max_objects = cfg["min_area"], cfg["max_objects"]
        self.painted_only = cfg["boundaries"] == "painted"
        self.sam = sam(cfg["sam_model_type"], cfg["sam_checkpoint"], device)
        self.grid = self.official = None
        if cfg["crop_n_layers"] == 0:
            self.grid = GridMaskGenerator(self.sam, cfg, timed)
        elif cfg["scene_windows"]:
            raise ConfigError("config key masks.scene_windows: scene windows need masks.crop_n_layers: 0")
        else:
            from segment_anything import SamAutomaticMaskGenerator

            self.official = SamAutomaticMaskGenerator(
                self.sam,
                points_per_side=cfg["points_per_side"],
                points_per_batch=cfg["points_per_batch"],
                pred_iou_thresh=cfg["pred_iou_thresh"],
                stability_score_thresh=cfg["stability_score_thresh"],
                stability_score_offset=cfg["stability_score_offset"],
                box_nms_thresh=cfg["box_nms_thresh"],
                crop_n_layers=cfg["crop_n_layers"],
                crop_nms_thresh=cfg["crop_nms_thresh"],
                output_mode="binary_mask",
            )

    @property
    def model_seconds(self) -> float | None:
        """Seconds inside the SAM modules so far (when timed; None for the official generator)."""
        return self.grid.model_seconds if self.grid is not None and self.grid.timed else None

    def mask_stacks(self, images: list[np.ndarray], native: bool = False) -> list[np.ndarray]:
        """(K, H, W) bool masks of each (H, W, 3) uint8 image, in the official generator's order."""
        if self.grid is not None:
            return self.grid.generate(images, native)
        out = []
        for image in images:
            masks = [r["segmentation"] for r in self.official.generate(image)]
            out.append(np.stack(masks) if masks else np.zeros((0, *image.shape[:2]), bool))
        return out

    def maps(self, images: np.ndarray) -> list[Maps]:
        """(objects, boundaries) of each of (B, bands, H, W) tiles, each tile resized to SAM's input."""
        stacks = self.mask_stacks([_rgb(image) for image in images])
        return [
            object_and_boundary_maps(m, images.shape[-2:], self.min_area, self.max_objects, self.painted_only)
            for m in stacks
        ]

    def window_maps(self, window: Window, images: np.ndarray) -> list[Maps]:
        """(objects, boundaries) of each tile of ``window`` from (n, bands, h, w) tile images, with SAM run
        once on the window at native resolution."""
        (stack,) = self.mask_stacks([_rgb(paste(window, images))], native=True)
        size = images.shape[-2:]
        return [
            object_and_boundary_maps(cut(stack, offset, size), size, self.min_area, self.max_objects, self.painted_only)
            for offset in window.offsets
        ]


def build_generator(cfg: Mapping, device, timed: bool = False):
    if cfg["generator"] == "sam":
        return SamGenerator(cfg, device, timed)
    return SuperpixelGenerator(cfg)
