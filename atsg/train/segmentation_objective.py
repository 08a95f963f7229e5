"""The segmentation model's training loss (config section ``segmentation``).

Weak mode: the balanced cross-entropy on the pseudo-labels (weight ``seg_weight``), the SAM object and
boundary losses (from step 0, as published, unless their ``after_warmup``), and after
``loss_warmup_iterations`` steps the dense CRF energy loss and the joint loss with the foreground decoder,
each switchable and each in its published form unless its ``form`` says otherwise. Supervised mode (the
upper bound): the cross-entropy on the ground truth alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial

import torch

from ..losses.segmentation import (
    balanced_cross_entropy,
    boundary_loss,
    boundary_loss_published,
    energy_loss,
    energy_loss_published,
    joint_loss,
    joint_loss_published,
    object_loss,
    object_loss_published,
)


def warmed_up(step: int, warmup: int) -> bool:
    """Whether a loss gated by the warm-up counts at (0-based) ``step``: the published ``n_iter <= W`` gate."""
    return step > warmup


class SegmentationObjective:
    def __init__(self, cfg: Mapping, background: bool, supervised: bool):
        self.cfg, self.background, self.weak = cfg, background, not supervised
        # balanced: background and foreground pixels weigh half each; plain: the background class is one of many
        self.balanced = background and cfg["cross_entropy"] == "balanced"
        on = {
            key: self.weak and cfg[key]["enabled"]
            for key in ("object_loss", "boundary_loss", "energy_loss", "joint_loss")
        }
        self.objects, self.boundaries, self.energy = on["object_loss"], on["boundary_loss"], on["energy_loss"]
        self.joint = on["joint_loss"] and background  # the foreground decoder splits background from the rest

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

    def _terms(self, logits, fg, batch, labels):
        """(name, config key, gated by the warm-up, thunk) of each switched-on weak loss."""
        c = self.cfg
        images, valid = batch["image"], batch["valid"]  # padding and nodata: neither object, boundary nor CRF pixel
        terms = []
        if self.objects:
            o = c["object_loss"]
            fn = (
                partial(object_loss_published, logits, batch["objects"] * valid, o["max_id"])
                if o["form"] == "published"
                else partial(object_loss, logits, batch["objects"] * valid)
            )
            terms.append(("object", "object_loss", o["after_warmup"], fn))
        if self.boundaries:
            b = c["boundary_loss"]
            fn = (
                partial(boundary_loss_published, logits, batch["boundaries"], b["kernel"], b["tolerance"])
                if b["form"] == "published"
                else partial(boundary_loss, logits, batch["boundaries"], b["kernel"], b["tolerance"], valid)
            )
            terms.append(("boundary", "boundary_loss", b["after_warmup"], fn))
        if self.energy:
            e = c["energy_loss"]
            fn = (
                partial(
                    energy_loss_published,
                    logits,
                    images,
                    labels,
                    e["sigma_rgb"],
                    e["sigma_xy"],
                    e["scale"],
                    e["kernel_weight"],
                    valid,
                )
                if e["form"] == "published"
                else partial(energy_loss, logits, images, e["sigma_rgb"], e["sigma_xy"], e["scale"], valid)
            )
            terms.append(("energy", "energy_loss", True, fn))
        if self.joint:
            fn = (
                partial(joint_loss_published, logits, fg, labels)
                if c["joint_loss"]["form"] == "published"
                else partial(joint_loss, logits, fg, labels)
            )
            terms.append(("joint", "joint_loss", True, fn))
        return terms

    def loss(
        self,
        logits: torch.Tensor,
        fg: torch.Tensor | None,
        batch: dict,
        labels: torch.Tensor | None,
        step: int,
        gate_seg: bool = False,
    ) -> tuple[torch.Tensor, dict]:
        """The loss of given logits (and foreground decoder logits) against ``labels`` (B, H, W).

        ``gate_seg``: the cross-entropy waits for the warm-up too (paper mode, as published); ``labels`` may be
        None while nothing that reads them counts yet.
        """
        c = self.cfg
        started = warmed_up(step, c["loss_warmup_iterations"])
        if not self.weak:
            seg = balanced_cross_entropy(logits, labels, self.balanced)
            return seg, {"seg": seg.item()}
        total, parts = logits.sum() * 0.0, {}
        if started or not gate_seg:
            seg = balanced_cross_entropy(logits, labels, self.balanced)
            total, parts["seg"] = total + c["seg_weight"] * seg, seg.item()
        else:
            parts["seg"] = 0.0
        for name, key, gated, term in self._terms(logits, fg, batch, labels):
            if gated and not started:
                parts[name] = 0.0
                continue
            value = term()
            total = total + c[key]["weight"] * value
            parts[name] = value.item()
        return total, parts
