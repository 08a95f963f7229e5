"""The self-supervised pretraining objective (DINO, optionally with iBOT's masked patch loss) and its schedules.

At step s the teacher first follows the student's weights after step s - 1 (momentum cosine from ``momentum``
to 1 over the run, as DINO), then sees the global views; the student sees every view (its global views with
random patches masked, method ibot). The teacher temperature warms up linearly; the centres follow the teacher's
outputs by EMA. All draws come from the step's seeded torch generator, so a resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from ..losses.selfsup import dino_loss, masked_patch_loss, teacher_probs, update_center
from ..models.pretrain import SelfDistillation


def teacher_momentum(step: int, cfg: Mapping) -> float:
    """DINO's cosine schedule from ``momentum`` at step 0 to 1 at the last step."""
    m0 = cfg["momentum"]
    return 1.0 - (1.0 - m0) * (math.cos(math.pi * step / cfg["iterations"]) + 1.0) / 2.0


def teacher_temperature(step: int, cfg: Mapping) -> float:
    """Linear warm-up from ``warmup_teacher_temp`` to ``teacher_temp`` over ``teacher_temp_warmup`` steps."""
    warm = cfg["teacher_temp_warmup"]
    if step >= warm:
        return cfg["teacher_temp"]
    return cfg["warmup_teacher_temp"] + (cfg["teacher_temp"] - cfg["warmup_teacher_temp"]) * step / warm


def view_major(views: torch.Tensor) -> torch.Tensor:
    """(B, V, C, H, W) views of B images -> (V * B, C, H, W), view by view: chunk(V) gives each view's batch."""
    return views.transpose(0, 1).reshape(-1, *views.shape[2:])


def random_patch_mask(batch: int, grid: tuple[int, int], cfg: Mapping, device) -> torch.Tensor:
    """(batch, h, w) bool: each image masked with probability ``mask_probability``, then a share of its patches
    drawn from ``mask_ratio`` chosen at random."""
    h, w = grid
    lo, hi = cfg["mask_ratio"]
    ratio = torch.empty(batch).uniform_(lo, hi)
    ratio = torch.where(torch.rand(batch) < cfg["mask_probability"], ratio, torch.zeros(batch))
    scores = torch.rand(batch, h * w)
    ranks = scores.argsort(1).argsort(1)
    mask = ranks < (ratio * h * w).round()[:, None]
    return mask.view(batch, h, w).to(device)


class PretrainObjective:
    """(model, batch, step) -> (loss, parts), the engine's loss function."""

    def __init__(self, cfg: Mapping):
        self.cfg = cfg

    def __call__(self, model: SelfDistillation, batch: dict, step: int):
        cfg = self.cfg
        if step > 0:
            model.update_teacher(teacher_momentum(step - 1, cfg))
        g, loc = batch["global"], batch["local"]
        globals_, locals_ = view_major(g), view_major(loc)  # (2B, C, G, G), (LB, C, L, L)
        temp = teacher_temperature(step, cfg)
        mask = None
        if model.masked:
            patch = model.backbone.patch_size
            grid = (globals_.shape[-2] // patch, globals_.shape[-1] // patch)
            mask = random_patch_mask(globals_.shape[0], grid, cfg, globals_.device)
        t_cls, t_patch = model.teach(globals_, mask)
        targets = list(teacher_probs(t_cls, model.center, temp).chunk(2))
        s_cls, s_patch = model(globals_, mask, mask)
        s_local, _ = model(locals_)
        student = list(s_cls.chunk(2)) + list(s_local.chunk(loc.shape[1]))
        loss = dino_loss(student, targets, cfg["student_temp"])
        parts = {"dino": float(loss.detach())}
        if mask is not None:
            image = mask.flatten(1).nonzero()[:, 0]  # the image of each masked patch, in the selection's order
            patch_t = teacher_probs(t_patch, model.center_patch, temp)
            patch_loss = masked_patch_loss(s_patch, patch_t, image, globals_.shape[0], cfg["student_temp"])
            loss = loss + cfg["patch_weight"] * patch_loss
            parts["patch"] = float(patch_loss.detach())
            update_center(model.center_patch, t_patch, cfg["center_momentum"])
        update_center(model.center, t_cls, cfg["center_momentum"])
        return loss, parts
