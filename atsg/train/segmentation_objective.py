"""The segmentation model's training loss (config section ``segmentation``).

Weak mode: the balanced cross-entropy on the pseudo-labels (weight ``seg_weight``) plus, after
``loss_warmup_iterations`` steps, the SAM object loss, the (gradient-passing) boundary loss, the dense
CRF energy loss and the joint loss with the foreground decoder, each switchable. Supervised mode (the
upper bound): the cross-entropy on the ground truth alone.
"""

from __future__ import annotations

from typing import Mapping

import torch

from ..losses.segmentation import balanced_cross_entropy, boundary_loss, energy_loss, joint_loss, object_loss


class SegmentationObjective:
    def __init__(self, cfg: Mapping, background: bool, supervised: bool):
        self.cfg, self.background, self.weak = cfg, background, not supervised
        on = (lambda key: self.weak and cfg[key]["enabled"])
        self.objects, self.boundaries, self.energy = on("object_loss"), on("boundary_loss"), on("energy_loss")
        self.joint = on("joint_loss") and background  # the foreground decoder splits background from the rest

    @property
    def needs_masks(self) -> bool:
        return self.objects or self.boundaries

    @property
    def term_names(self) -> list[str]:
        """Names of the loss parts this objective reports."""
        on = [self.objects, self.boundaries, self.energy, self.joint]
        return ["seg"] + [n for n, flag in zip(("object", "boundary", "energy", "joint"), on) if flag]

    def __call__(self, model, batch: dict, step: int) -> tuple[torch.Tensor, dict]:
        images = batch["image"]
        if self.joint:
            logits, fg = model(images, with_foreground=True)
        else:
            logits, fg = model(images), None
        return self.loss(logits, fg, batch, batch["label"], step)

    def loss(self, logits: torch.Tensor, fg: torch.Tensor | None, batch: dict, labels: torch.Tensor,
             step: int) -> tuple[torch.Tensor, dict]:
        """The loss of given logits (and foreground logit) against ``labels`` (B, H, W)."""
        c = self.cfg
        images = batch["image"]
        seg = balanced_cross_entropy(logits, labels, self.background)
        if not self.weak:
            return seg, {"seg": seg.item()}
        total, parts = c["seg_weight"] * seg, {"seg": seg.item()}
        started = step >= c["loss_warmup_iterations"]
        valid = batch["valid"]  # padding and nodata are neither object, boundary nor CRF pixel
        terms = []
        if self.objects:
            terms.append(("object", "object_loss", lambda: object_loss(logits, batch["objects"] * valid)))
        if self.boundaries:
            b = c["boundary_loss"]
            terms.append(("boundary", "boundary_loss",
                          lambda: boundary_loss(logits, batch["boundaries"], b["kernel"], b["tolerance"], valid)))
        if self.energy:
            e = c["energy_loss"]
            terms.append(("energy", "energy_loss",
                          lambda: energy_loss(logits, images, e["sigma_rgb"], e["sigma_xy"], e["scale"], valid)))
        if self.joint:
            terms.append(("joint", "joint_loss", lambda: joint_loss(logits, fg, labels)))
        for name, key, term in terms:
            if not started:
                parts[name] = 0.0
                continue
            value = term()
            total = total + c[key]["weight"] * value
            parts[name] = value.item()
        return total, parts
