"""CAM -> pseudo-label for a batch of tiles: affinity walk, per-class gains, PAR with the two-threshold background
rule, a dense CRF, mask voting; each step switchable in config (section ``refine``)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from ..cam import cam_to_label, cam_to_label_band, class_argmax, restrict_to_labels
from ..crf import dense_crf
from ..errors import ConfigError
from ..store import IGNORE
from .affinity import random_walk
from .par import PAR
from .voting import vote


def class_gains(cfg: Mapping, n_cam_classes: int) -> torch.Tensor | None:
    """The per-class CAM gains of ``refine.class_gains`` as a tensor (K,), or None (``none``, or ``val``
    before the refine stage has chosen them on val)."""
    gains = cfg["class_gains"]
    if gains is None or isinstance(gains, str):
        return None
    if len(gains) != n_cam_classes:
        raise ConfigError(
            f"config key refine.class_gains: {len(gains)} gains for {n_cam_classes} CAM classes "
            "(one per class of the CAMs, background excluded)"
        )
    return torch.tensor([float(g) for g in gains])


class Refiner:
    def __init__(self, cfg: Mapping, background: bool, n_classes: int):
        self.cfg, self.background, self.n_classes = cfg, background, n_classes
        self.par = PAR(cfg["par_dilations"], cfg["par_iterations"], cfg["par_w_rgb"], cfg["par_w_pos"])
        self.gains = class_gains(cfg, n_classes - int(background))

    def to(self, device) -> Refiner:
        self.par = self.par.to(device)
        if self.gains is not None:
            self.gains = self.gains.to(device)
        return self

    def _par(self, image: torch.Tensor, cam: torch.Tensor, size) -> torch.Tensor:
        return F.interpolate(self.par(image, cam), size=size, mode="bilinear", align_corners=False)

    def _crf(self, images: torch.Tensor, probs: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
        """Argmax of the dense CRF's marginals (``refine.crf``) of class probabilities (B, C, H, W) at the
        tiles' size; classes of probability 0 (absent from the tile) stay out."""
        q = dense_crf(images, probs, self.cfg["crf"], valid)
        return class_argmax(q.masked_fill(probs <= 0, -1.0))

    def _probs(self, refined: torch.Tensor, cls: torch.Tensor, bkg: float | None) -> torch.Tensor:
        """Probabilities for the CRF from PAR-refined CAMs without the published softmax: a softmax over
        [the refined constant ``bkg``, the image's classes], or over the image's classes alone."""
        present = cls.bool()[:, :, None, None]
        if bkg is not None:
            refined = torch.cat([torch.full_like(refined[:, :1], self.par.constant_response(bkg)), refined], 1)
            present = torch.cat([torch.ones_like(present[:, :1]), present], 1)
        return torch.softmax(refined.masked_fill(~present, float("-inf")), 1)

    def _argmax(self, refined: torch.Tensor, cls: torch.Tensor, bkg: float | None) -> torch.Tensor:
        """Argmax of PAR-refined maps; with a background class, channel 0 is the constant ``bkg`` refined
        (PAR maps a constant to a constant, so it is never propagated)."""
        if bkg is None:  # no background class: absent classes can never win
            return class_argmax(refined.masked_fill(~cls.bool()[:, :, None, None], -1.0))
        score, idx = refined.max(1)
        label = idx + 1
        label[score <= self.par.constant_response(bkg)] = 0
        return label

    @staticmethod
    def _with_background(cam: torch.Tensor, cls: torch.Tensor, bkg: float) -> torch.Tensor:
        """Softmax over [constant ``bkg``, the image's classes] (B, 1 + K, h, w); absent classes get 0."""
        maps = torch.cat([torch.full_like(cam[:, :1], bkg), cam], 1)
        present = torch.cat([torch.ones_like(cls[:, :1]), cls], 1).bool()[:, :, None, None]
        return torch.softmax(maps.masked_fill(~present, float("-inf")), 1)

    def cam_labels(
        self,
        images: torch.Tensor,
        cams: torch.Tensor,
        cls: torch.Tensor,
        tokens: torch.Tensor | None = None,
        valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Labels (B, H, W) from CAMs (B, K, h, w) in [0, 1]: walk, then PAR / thresholds, then the dense CRF
        (no voting). ``valid`` (B, H, W): pixels of data; the rest send no CRF messages."""
        cfg = self.cfg
        crf = cfg["crf"]["enabled"]
        size = images.shape[-2:]
        cam = F.interpolate(cams.float(), size=size, mode="bilinear", align_corners=False)
        if cfg["affinity"] and tokens is not None:
            cam = random_walk(cam, tokens, cfg["affinity_beta"], cfg["affinity_iterations"], cfg["affinity_mix"])
        cam = restrict_to_labels(cam, cls)
        if self.gains is not None:
            cam = cam * self.gains.view(1, -1, 1, 1)
        if not cfg["par"] and not crf:
            if cfg["uncertain_band"]:
                return cam_to_label_band(cam, cls, cfg["high_thre"], cfg["low_thre"], self.background)
            return cam_to_label(cam, cls, cfg["bkg_thre"], self.background)
        if cfg["par"]:
            small = [max(1, int(s * cfg["par_scale"])) for s in size]
            image = F.interpolate(images.float() / 255.0, size=small, mode="bilinear", align_corners=False)
            cam_small = F.interpolate(cam, size=small, mode="bilinear", align_corners=False)
        softmax_first = not cfg["par"] or (cfg["par_softmax"] and self.background)
        refined = None if softmax_first else self._par(image, cam_small, size)
        if not self.background:
            if crf:
                label = self._crf(images, self._probs(cam if refined is None else refined, cls, None), valid)
            else:
                label = self._argmax(refined, cls, None)
            label[(cls.sum(1) == 0)[:, None, None].expand_as(label)] = IGNORE
            return label
        if softmax_first:  # as published: softmax over [background, present classes], then PAR of each

            def probs_at(bkg):
                if not cfg["par"]:
                    return self._with_background(cam, cls, bkg)
                return self._par(image, self._with_background(cam_small, cls, bkg), size)
        else:

            def probs_at(bkg):
                return self._probs(refined, cls, bkg)

        def labels_at(bkg):
            if crf:
                return self._crf(images, probs_at(bkg), valid)
            if softmax_first:
                return class_argmax(probs_at(bkg))
            return self._argmax(refined, cls, bkg)

        if not cfg["uncertain_band"]:
            return labels_at(cfg["bkg_thre"])
        high, low = labels_at(cfg["high_thre"]), labels_at(cfg["low_thre"])
        label = high.clone()
        label[high == 0] = IGNORE
        label[(high == 0) & (low == 0)] = 0
        return label

    def __call__(self, images, cams, cls, objects=None, tokens=None, valid=None) -> torch.Tensor:
        label = self.cam_labels(images, cams, cls, tokens, valid)
        if self.cfg["mask_voting"] and objects is not None:
            label = vote(label, objects, self.n_classes, self.cfg["vote_threshold"], self.cfg["vote_min_labelled"])
        return label
