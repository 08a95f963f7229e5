"""Token contrast losses of the classifier (METHOD.md): patch-token contrast with adaptive token
linking (PTC) and class-token contrast (CTC)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..store import IGNORE


def link_pairs(features: torch.Tensor, threshold: str | float) -> torch.Tensor:
    """(B, N, N) bool: token pairs linked by their frozen features (adaptive token linking).

    ``features`` (B, D, h, w). ``threshold`` "batch_mean" (published ``dino_mask``): |cosine| above the mean
    |cosine| of the whole batch's similarity matrices, each token with itself included (so always linked);
    "image_mean": signed cosine above each image's own mean; a number: |cosine| above it.
    """
    f = F.normalize(features.flatten(2).float(), dim=1, eps=1e-8)
    sim = f.transpose(1, 2) @ f
    if threshold == "image_mean":
        return sim > sim.mean(dim=(1, 2), keepdim=True)
    sim = sim.abs()
    thr = sim.mean() if threshold == "batch_mean" else float(threshold)
    return sim > thr


def pair_targets(labels: torch.Tensor, linked: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(positive, negative) token pairs (B, N, N) bool from token labels (B, N) (IGNORE = unknown).

    Same label: positive; different labels: negative; a pair with an ignored token, or a token with itself,
    is neither. Then ``linked`` pairs become positive (and never negative), ignored tokens and a token with
    itself included, as the published ``dino_mask`` does.
    """
    valid = labels != IGNORE
    both = valid[:, :, None] & valid[:, None, :]
    same = labels[:, :, None] == labels[:, None, :]
    eye = torch.eye(labels.shape[1], dtype=torch.bool, device=labels.device)[None]
    pos, neg = both & same & ~eye, both & ~same & ~eye
    if linked is not None:
        pos, neg = pos | linked, neg & ~linked
    return pos, neg


def ptc_loss(tokens: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """The published ``get_masked_ptc_loss``: 0.5 (1 - sum |cos| over positive pairs / (their number + 1))
    + 0.5 sum |cos| over negative pairs / (their number + 1), over the whole batch.

    ``tokens`` (B, D, h, w) (final block, with gradient).
    """
    t = F.normalize(tokens.flatten(2).float(), dim=1, eps=1e-8)
    cos = (t.transpose(1, 2) @ t).abs()
    pos_f, neg_f = pos.float(), neg.float()
    return 0.5 * (1.0 - (pos_f * cos).sum() / (pos_f.sum() + 1.0)) + 0.5 * (neg_f * cos).sum() / (neg_f.sum() + 1.0)


def ctc_loss(teacher: torch.Tensor, student: torch.Tensor, flags: torch.Tensor, temperature: float) -> torch.Tensor:
    """Class-token contrast, InfoNCE with several positives and the image's negative crops.

    ``teacher`` (G, B, E): projections of the G global views; ``student`` (V, B, E): projections of
    all V views (global ones first, then local crops); ``flags`` (B, V) bool: positive views. For each
    image, teacher view g and positive view v: -log(e_gv / (e_gv + sum over negative views e_gk)),
    with e = exp(cos / temperature); averaged over (g, v) pairs and summed over images / B.
    """
    t = F.normalize(teacher.float(), dim=-1).permute(1, 0, 2)  # B, G, E
    s = F.normalize(student.float(), dim=-1).permute(1, 2, 0)  # B, E, V
    logits = (t @ s) / temperature  # B, G, V
    flags = flags.bool()
    # Positive views drop out of the negative sum; a large finite fill (not -inf) keeps gradients finite
    # for an image without negative crops, whose loss is then ~0 (cosines are bounded by 1).
    neg = logits.masked_fill(flags[:, None, :], -1e4)
    neg_lse = torch.logsumexp(neg, dim=-1, keepdim=True)
    log_prob = logits - torch.logaddexp(logits, neg_lse)
    per_pair = -(log_prob * flags[:, None, :].float())
    count = (flags.float().sum(-1) * teacher.shape[0]).clamp(min=1.0)
    return (per_pair.sum(dim=(1, 2)) / count).mean()


def ctc_loss_published(
    teacher: torch.Tensor, student: torch.Tensor, flags: torch.Tensor, temperature: float
) -> torch.Tensor:
    """The published class-token contrast (``CTCLoss_neg``, ToCo), in log space.

    ``teacher`` (2, B, E): the teacher head's outputs for the two global views; ``student`` (V, B, E): the
    student head's outputs for every view (global ones first); ``flags`` (B, V) bool: positive views. With
    l = teacher . student / temperature (raw dot products) and N = sum over the image's negative views of
    exp(l): per image and teacher view, the sum over positive views of -log(e^l / (e^l + N + 1e-4)), plus
    ToCo's for-else term -log(1 / (1 + N + 1e-4)); summed over the two teacher views, / 2 / (positives +
    1e-4), averaged over images.
    """
    t = teacher.float().permute(1, 0, 2)  # B, 2, E
    s = student.float().permute(1, 2, 0)  # B, E, V
    logits = (t @ s) / temperature  # B, 2, V
    pos = flags.bool()[:, None, :].expand_as(logits)
    eps = torch.full_like(logits[..., :1], math.log(1e-4))
    # log(N + 1e-4): logsumexp over the negatives and log(1e-4)
    log_neg = torch.logsumexp(torch.cat([logits.masked_fill(pos, float("-inf")), eps], -1), -1, keepdim=True)
    pos_terms = torch.logaddexp(logits, log_neg) - logits  # -log(e^l / (e^l + N + 1e-4))
    for_else = torch.logaddexp(torch.zeros_like(log_neg), log_neg)  # -log(1 / (1 + N + 1e-4))
    per_view = (pos_terms * pos.float()).sum(-1, keepdim=True) + for_else  # B, 2, 1
    count = flags.float().sum(-1)
    return (per_view.sum((1, 2)) / 2 / (count + 1e-4)).mean()
