"""The classifier's training loss: classification on both heads, plus patch-token contrast with
adaptive token linking (PTC) and class-token contrast (CTC) when switched on (config section
``classifier``)."""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F

from ..cam import cam_to_label_band, minmax_normalise
from ..losses.classification import cam_classification_loss
from ..losses.contrast import ctc_loss, link_pairs, pair_targets, ptc_loss
from ..models.contrast import ContrastiveClassifier
from ..models.linking import LinkingFeatures
from ..store import IGNORE
from .crops import uncertain_crops


def aux_band_labels(maps_aux: torch.Tensor, cls: torch.Tensor, valid: torch.Tensor, high: float, low: float,
                    background: bool) -> torch.Tensor:
    """Token-resolution labels (B, h, w) of the detached auxiliary CAM with the uncertain band
    (IGNORE between ``low`` and ``high``); tokens without a valid pixel (padding, nodata) are IGNORE too."""
    content = F.adaptive_max_pool2d(valid[:, None].float(), maps_aux.shape[-2:])[:, 0] > 0
    cam = minmax_normalise(F.relu(maps_aux.detach().float()), content)
    label = cam_to_label_band(cam, cls, high, low, background)
    return label.masked_fill(~content, IGNORE)


class ClassifierObjective:
    """(model, batch, step) -> (loss, parts) for the engine."""

    def __init__(self, cfg: Mapping, background: bool, in_chans: int):
        self.cfg, self.background = cfg, background
        self.ptc, self.ctc, self.link = cfg["ptc"], cfg["ctc"], cfg["linking"]
        self.linker = None
        self.self_link = self.ptc["enabled"] and self.link["enabled"] and self.link["features"] == "self"
        if self.ptc["enabled"] and self.link["enabled"] and self.link["features"] == "dino":
            self.linker = LinkingFeatures(self.link, in_chans)

    def to(self, device) -> "ClassifierObjective":
        if self.linker is not None:
            self.linker.to(device)
        return self

    def __call__(self, model: ContrastiveClassifier, batch: dict, step: int) -> tuple[torch.Tensor, dict]:
        total, parts, _ = self.compute(model, batch, step)
        return total, parts

    def compute(self, model: ContrastiveClassifier, batch: dict, step: int) -> tuple[torch.Tensor, dict, dict]:
        """(loss, parts, the classifier's outputs): paper mode decodes the same final tokens."""
        c = self.cfg
        images, cls = batch["image"], batch["cls"]
        ctc_on = model.teacher is not None
        if ctc_on:  # the teacher follows the student before it is asked (as the published code does)
            model.update_teacher(self.ctc["momentum"])
        out = model(images, link_block=self.link["layer"] if self.self_link else None, class_token=ctc_on)
        total, main, aux = cam_classification_loss(out["logits"], out["logits_aux"], cls, c["aux_weight"])
        parts = {"cls": main.item(), "cls_aux": aux.item()}
        if not (self.ptc["enabled"] or ctc_on):
            return total, parts, out
        band = aux_band_labels(out["maps_aux"], cls, batch["valid"], c["high_thre"], c["low_thre"], self.background)
        if self.ptc["enabled"]:
            linked = None
            if self.link["enabled"]:
                feats = out["link_tokens"] if self.self_link else self.linker(images, tuple(band.shape[-2:]))
                linked = link_pairs(feats, self.link["threshold"])
            pos, neg = pair_targets(band.flatten(1), linked)
            loss = ptc_loss(out["tokens"], pos, neg)
            total = total + self.ptc["weight"] * loss
            parts["ptc"] = loss.item()
        if ctc_on:
            loss = self._ctc(model, images, out["class_token"], band)
            total = total + self.ctc["weight"] * loss
            parts["ctc"] = loss.item()
        return total, parts, out

    def _ctc(self, model: ContrastiveClassifier, images: torch.Tensor, class_token: torch.Tensor,
             band: torch.Tensor) -> torch.Tensor:
        k = self.ctc
        uncertain = F.interpolate(band[:, None].float(), size=images.shape[-2:], mode="nearest")[:, 0] == IGNORE
        crops, local_flags = uncertain_crops(images, uncertain, k["local_crops"], k["local_size"],
                                             k["min_uncertain"])
        flipped = images.flip(-1)
        teacher = torch.stack([model.teacher(images), model.teacher(flipped)])
        b = images.shape[0]
        student_tokens = torch.cat([class_token, model.classifier.class_token(flipped),
                                    model.classifier.class_token(crops.flatten(0, 1))])
        student = model.projection(student_tokens).view(-1, b, teacher.shape[-1])
        flags = torch.cat([torch.ones(b, 2, dtype=torch.bool, device=images.device), local_flags], 1)
        return ctc_loss(teacher, student, flags, k["temperature"])
