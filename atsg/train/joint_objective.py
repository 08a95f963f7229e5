"""Paper mode's loss (classifier.joint_segmentation): the classifier's loss, then after the warm-up the
segmentation losses of the decoders on pseudo-labels made on the fly.

The pseudo-labels are those of the published single-stage code: the detached multi-scale CAM of the
current weights (settings of section ``cams``), refined by PAR with the uncertain band (section
``refine``; the affinity walk and mask voting belong to the staged pipeline and are not used here).
"""

from __future__ import annotations

from typing import Mapping

import torch

from ..cam import multiscale_cams
from ..models.joint import JointModel
from ..refine.pseudo import Refiner
from ..store import IGNORE
from .classifier_objective import ClassifierObjective
from .segmentation_objective import SegmentationObjective


class JointObjective:
    """(model, batch, step) -> (loss, parts) for the engine, on a :class:`~atsg.models.joint.JointModel`."""

    def __init__(self, cfg: Mapping, background: bool, in_chans: int, n_classes: int):
        self.classification = ClassifierObjective(cfg["classifier"], background, in_chans)
        self.segmentation = SegmentationObjective(cfg["segmentation"], background, supervised=False)
        self.refiner = Refiner({**cfg["refine"], "affinity": False, "mask_voting": False}, background, n_classes)
        self.scales, self.flip = cfg["cams"]["scales"], cfg["cams"]["flip"]
        self.warmup = cfg["segmentation"]["loss_warmup_iterations"]

    @property
    def needs_masks(self) -> bool:
        return self.segmentation.needs_masks

    def to(self, device) -> "JointObjective":
        self.classification.to(device)
        self.refiner.to(device)
        return self

    @torch.no_grad()
    def pseudo_labels(self, model: JointModel, images: torch.Tensor, cls: torch.Tensor,
                      valid: torch.Tensor) -> torch.Tensor:
        """Labels (B, H, W) of a training batch from the current classifier (no gradient)."""
        cam, _ = multiscale_cams(model.classifier, images, self.scales, self.flip, tuple(images.shape[-2:]),
                                 valid=valid)
        label = self.refiner.cam_labels(images, cam, cls)
        label[~valid] = IGNORE  # crop padding and nodata
        return label

    def __call__(self, model: JointModel, batch: dict, step: int) -> tuple[torch.Tensor, dict]:
        total, parts, out = self.classification.compute(model, batch, step)
        if step < self.warmup:  # as published: the segmentation branch starts after the warm-up
            return total, {**parts, **{name: 0.0 for name in self.segmentation.term_names}}
        images = batch["image"]
        labels = self.pseudo_labels(model, images, batch["cls"], batch["valid"])
        logits, fg = model.segment(out["tokens"], tuple(images.shape[-2:]))
        seg, seg_parts = self.segmentation.loss(logits, fg, batch, labels, step)
        return total + seg, {**parts, **seg_parts}
