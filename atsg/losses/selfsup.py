"""Self-distillation losses (DINO, iBOT): cross-entropy between the sharpened, centred teacher distribution and
the student's, over pairs of different views; for masked tokens, between the teacher's and the student's
distributions of the same patch."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def teacher_probs(out: torch.Tensor, center: torch.Tensor, temp: float) -> torch.Tensor:
    """softmax((teacher output - centre) / temperature) over the last dimension."""
    return F.softmax((out.float() - center) / temp, dim=-1)


def dino_loss(student: list[torch.Tensor], teacher: list[torch.Tensor], student_temp: float) -> torch.Tensor:
    """Mean over pairs (teacher view i, student view j), i != j, of the mean over images of
    -sum_k t_ik log s_jk; ``student`` has every view (global views first, in the teacher's order), ``teacher``
    the global views' target distributions."""
    total, pairs = 0.0, 0
    logs = [F.log_softmax(s.float() / student_temp, dim=-1) for s in student]
    for i, t in enumerate(teacher):
        for j, log_s in enumerate(logs):
            if j == i:
                continue
            total = total + (-(t * log_s).sum(-1)).mean()
            pairs += 1
    return total / pairs


def masked_patch_loss(
    student: torch.Tensor, teacher: torch.Tensor, image: torch.Tensor, n_images: int, student_temp: float
) -> torch.Tensor:
    """iBOT's patch loss over the masked patches only: ``student`` / ``teacher`` (M, K) the outputs of the M masked
    patches, ``image`` (M,) the image each belongs to. Per image the mean over its masked patches of
    -sum_k t log s, then the mean over the images that have any (0 when none has)."""
    if student.shape[0] == 0:
        return student.sum() * 0.0
    per_patch = -(teacher * F.log_softmax(student.float() / student_temp, dim=-1)).sum(-1)  # (M,)
    sums = torch.zeros(n_images, device=per_patch.device).index_add(0, image, per_patch)
    counts = torch.bincount(image, minlength=n_images).float()
    has = counts > 0
    return (sums[has] / counts[has]).mean()


@torch.no_grad()
def update_center(center: torch.Tensor, out: torch.Tensor, momentum: float) -> None:
    """centre = momentum * centre + (1 - momentum) * the mean of the teacher's outputs ``out`` (..., K) over every
    training process; unchanged when there are none."""
    from .. import distributed

    flat = out.float().reshape(-1, out.shape[-1])
    total = distributed.all_sum(torch.cat([flat.sum(0), flat.new_tensor([flat.shape[0]])]))
    if total[-1] > 0:
        center.mul_(momentum).add_(total[:-1] / total[-1], alpha=1.0 - momentum)
