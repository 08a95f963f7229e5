"""Paper mode's loss (classifier.joint_segmentation): the classifier's loss, then after the warm-up the
segmentation losses of the decoders on pseudo-labels made on the fly.

The pseudo-labels are those of the published single-stage code: the detached multi-scale CAM of the
current weights (``classifier.cam_scales``, with flips), refined by PAR with the uncertain band (section
``refine``; the affinity walk and mask voting belong to the staged pipeline and are not used here).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..models.joint import JointModel
from ..refine.pseudo import Refiner
from ..store import IGNORE
from .classifier_objective import ClassifierObjective
from .segmentation_objective import SegmentationObjective, warmed_up


class JointObjective:
    """(model, batch, step) -> (loss, parts) for the engine, on a :class:`~atsg.models.joint.JointModel`."""

    def __init__(self, cfg: Mapping, background: bool, in_chans: int, n_classes: int):
        self.classification = ClassifierObjective(cfg["classifier"], background, in_chans)
        self.segmentation = SegmentationObjective(cfg["segmentation"], background, supervised=False)
        # the training step's pseudo-labels are the published PAR ones: no walk, voting or CRF
        self.refiner = Refiner(
            {
                **cfg["refine"],
                "affinity": False,
                "mask_voting": False,
                "crf": {**cfg["refine"]["crf"], "enabled": False},
            },
            background,
            n_classes,
        )
        self.warmup = cfg["segmentation"]["loss_warmup_iterations"]

    @property
    def needs_masks(self) -> bool:
        return self.segmentation.needs_masks

    def to(self, device) -> JointObjective:
        self.classification.to(device)
        self.refiner.to(device)
        return self

    @torch.no_grad()
    def pseudo_labels(
        self, cam: torch.Tensor, images: torch.Tensor, cls: torch.Tensor, valid: torch.Tensor
    ) -> torch.Tensor:
        """Labels (B, H, W) of a training batch from the step's multi-scale CAM of the current classifier."""
        label = self.refiner.cam_labels(images, cam, cls)
        label[~valid] = IGNORE  # crop padding and nodata
        return label

    def __call__(self, model: JointModel, batch: dict, step: int) -> tuple[torch.Tensor, dict]:
        # As published: one multi-scale CAM per step feeds PTC's token labels and the pseudo-labels; the object
        # and boundary losses count from step 0, the cross-entropy, energy and joint losses after the warm-up.
        started = warmed_up(step, self.warmup)
        cams = self.classification.step_cams(model, batch) if started or self.classification.multiscale_band else None
        total, parts, out = self.classification.compute(model, batch, step, cams)
        images = batch["image"]
        labels = None
        if started:
            labels = self.pseudo_labels(cams[0], images, batch["cls"], batch["valid"])
        logits, fg = model.segment(out["tokens"], tuple(images.shape[-2:]))
        seg, seg_parts = self.segmentation.loss(logits, fg, batch, labels, step, gate_seg=True)
        return total + seg, {**parts, **seg_parts}
