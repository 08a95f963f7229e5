"""The classifier's training loss: classification on both heads, plus patch-token contrast with
adaptive token linking (PTC) and class-token contrast (CTC) when switched on (config section
``classifier``)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from ..cam import cam_to_label_band, minmax_normalise, multiscale_cams
from ..factory import linking_features
from ..losses.classification import cam_classification_loss
from ..losses.contrast import ctc_loss, ctc_loss_published, link_pairs, pair_targets, ptc_loss
from ..models.contrast import ContrastiveClassifier
from ..store import IGNORE
from .crops import roi_crops, roi_map, uncertain_crops


def aux_band_labels(
    maps_aux: torch.Tensor, cls: torch.Tensor, valid: torch.Tensor, high: float, low: float, background: bool
) -> torch.Tensor:
    """Token-resolution labels (B, h, w) of the detached single-scale auxiliary CAM with the uncertain band
    (IGNORE between ``low`` and ``high``); tokens without a valid pixel (padding, nodata) are IGNORE too."""
    content = F.adaptive_max_pool2d(valid[:, None].float(), maps_aux.shape[-2:])[:, 0] > 0
    cam = minmax_normalise(F.relu(maps_aux.detach().float()), content)
    label = cam_to_label_band(cam, cls, high, low, background)
    return label.masked_fill(~content, IGNORE)


def band_labels_of(
    cam_aux: torch.Tensor, grid, cls: torch.Tensor, valid: torch.Tensor, high: float, low: float, background: bool
) -> torch.Tensor:
    """Token-resolution labels (B, *grid) of a multi-scale auxiliary CAM at the image size (values in [0, 1]),
    resized to the token grid (bilinear) as the published step does; tokens without a valid pixel: IGNORE."""
    content = F.adaptive_max_pool2d(valid[:, None].float(), tuple(grid))[:, 0] > 0
    cam = F.interpolate(cam_aux.float(), size=tuple(grid), mode="bilinear", align_corners=False)
    return cam_to_label_band(cam, cls, high, low, background).masked_fill(~content, IGNORE)


class ClassifierObjective:
    """(model, batch, step) -> (loss, parts) for the engine."""

    def __init__(self, cfg: Mapping, background: bool, in_chans: int):
        self.cfg, self.background = cfg, background
        self.ptc, self.ctc, self.link = cfg["ptc"], cfg["ctc"], cfg["linking"]
        self.linker = None
        self.self_link = self.ptc["enabled"] and self.link["enabled"] and self.link["features"] == "self"
        if self.ptc["enabled"] and self.link["enabled"] and self.link["features"] in ("dino", "pretrain"):
            self.linker = linking_features(self.link, in_chans)

    @property
    def multiscale_band(self) -> bool:
        """Whether each step needs the multi-scale CAM for PTC / CTC."""
        return self.cfg["band_cam"] == "multiscale" and (self.ptc["enabled"] or self.ctc["enabled"])

    def to(self, device) -> ClassifierObjective:
        if self.linker is not None:
            self.linker.to(device)
        return self

    def __call__(self, model: ContrastiveClassifier, batch: dict, step: int) -> tuple[torch.Tensor, dict]:
        total, parts, _ = self.compute(model, batch, step)
        return total, parts

    def step_cams(self, model: ContrastiveClassifier, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """The step's detached multi-scale CAMs (final, auxiliary) at the image size, as the published step makes
        them (scales ``cam_scales`` with flips, ReLU after the flip max, one adaptive choice per pass)."""
        images = batch["image"]
        return multiscale_cams(
            model.classifier,
            images,
            self.cfg["cam_scales"],
            True,
            tuple(images.shape[-2:]),
            valid=batch["valid"],
            relu="after_merge",
            aux_groups="batch",
        )

    def compute(
        self,
        model: ContrastiveClassifier,
        batch: dict,
        step: int,
        cams: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, dict, dict]:
        """(loss, parts, the classifier's outputs): paper mode decodes the same final tokens and passes the
        step's multi-scale ``cams`` when it has made them."""
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
        grid = out["maps_aux"].shape[-2:]
        cam_aux = None
        if c["band_cam"] == "multiscale":
            cam_aux = (cams if cams is not None else self.step_cams(model, batch))[1]
            band = band_labels_of(cam_aux, grid, cls, batch["valid"], c["high_thre"], c["low_thre"], self.background)
        else:
            band = aux_band_labels(out["maps_aux"], cls, batch["valid"], c["high_thre"], c["low_thre"], self.background)
        if self.ptc["enabled"]:
            linked = None
            if self.link["enabled"]:
                feats = out["link_tokens"] if self.self_link else self.linker(images, tuple(grid))
                linked = link_pairs(feats, self.link["threshold"])
            pos, neg = pair_targets(band.flatten(1), linked)
            loss = ptc_loss(out["tokens"], pos, neg)
            total = total + self.ptc["weight"] * loss
            parts["ptc"] = loss.item()
        if ctc_on:
            if self.ctc["form"] == "published":
                if cam_aux is None:  # band_cam single: the step's own auxiliary CAM at the image size
                    cam_aux = F.interpolate(
                        minmax_normalise(F.relu(out["maps_aux"].detach().float())),
                        size=images.shape[-2:],
                        mode="bilinear",
                        align_corners=False,
                    )
                loss = self._ctc_published(model, batch, out["class_token"], cam_aux)
            else:
                loss = self._ctc(model, images, out["class_token"], band)
            total = total + self.ctc["weight"] * loss
            parts["ctc"] = loss.item()
        return total, parts, out

    def _ctc_published(
        self, model: ContrastiveClassifier, batch: dict, class_token: torch.Tensor, cam_aux: torch.Tensor
    ) -> torch.Tensor:
        """The published class-token contrast: the teacher head projects the student's detached class tokens of
        the two global views (the training crop and the second view); the student head projects those and the
        class tokens of local crops placed by the auxiliary CAM's region map on the local view."""
        k, c = self.ctc, self.cfg
        roi = roi_map(cam_aux, batch["cls"], c["low_thre"], c["high_thre"], batch["valid"])
        crops, local_flags = roi_crops(batch["local"], roi, k["local_crops"], k["local_size"], k["min_uncertain"])
        b = class_token.shape[0]
        global_tokens = torch.cat([class_token, model.classifier.class_token(batch["view2"])])
        teacher = model.teacher.head(global_tokens.detach()).view(2, b, -1)
        student_tokens = torch.cat([global_tokens, model.classifier.class_token(crops.flatten(0, 1))])
        student = model.projection(student_tokens).view(-1, b, teacher.shape[-1])
        flags = torch.cat([torch.ones(b, 2, dtype=torch.bool, device=crops.device), local_flags], 1)
        return ctc_loss_published(teacher, student, flags, k["temperature"])

    def _ctc(
        self, model: ContrastiveClassifier, images: torch.Tensor, class_token: torch.Tensor, band: torch.Tensor
    ) -> torch.Tensor:
        k = self.ctc
        uncertain = F.interpolate(band[:, None].float(), size=images.shape[-2:], mode="nearest")[:, 0] == IGNORE
        crops, local_flags = uncertain_crops(images, uncertain, k["local_crops"], k["local_size"], k["min_uncertain"])
        flipped = images.flip(-1)
        teacher = torch.stack([model.teacher(images), model.teacher(flipped)])
        b = images.shape[0]
        student_tokens = torch.cat(
            [class_token, model.classifier.class_token(flipped), model.classifier.class_token(crops.flatten(0, 1))]
        )
        student = model.projection(student_tokens).view(-1, b, teacher.shape[-1])
        flags = torch.cat([torch.ones(b, 2, dtype=torch.bool, device=images.device), local_flags], 1)
        return ctc_loss(teacher, student, flags, k["temperature"])
