"""Token contrast losses of the classifier (METHOD.md): patch-token contrast with adaptive token
linking (PTC) and class-token contrast (CTC)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..store import IGNORE


def link_pairs(features: torch.Tensor, threshold: str | float) -> torch.Tensor:
    """(B, N, N) bool: token pairs whose feature cosine similarity is above the threshold.

    ``features`` (B, D, h, w); ``threshold`` "adaptive" (each image's mean pairwise similarity, as
    published) or a number.
    """
    f = F.normalize(features.flatten(2).transpose(1, 2).float(), dim=-1)
    sim = f @ f.transpose(1, 2)
    if threshold == "adaptive":
        thr = sim.mean(dim=(1, 2), keepdim=True)
    else:
        thr = torch.full_like(sim[:, :1, :1], float(threshold))
    return sim > thr


def pair_targets(labels: torch.Tensor, linked: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(positive, negative) token pairs (B, N, N) bool from token labels (B, N) (IGNORE = unknown).

    Same label: positive; different labels: negative; a pair with an ignored token is neither.
    ``linked`` pairs become positive (and never negative), ignored tokens included. A token is
    never paired with itself.
    """
    valid = labels != IGNORE
    both = valid[:, :, None] & valid[:, None, :]
    same = labels[:, :, None] == labels[:, None, :]
    pos, neg = both & same, both & ~same
    if linked is not None:
        pos, neg = pos | linked, neg & ~linked
    eye = torch.eye(labels.shape[1], dtype=torch.bool, device=labels.device)[None]
    return pos & ~eye, neg & ~eye


def ptc_loss(tokens: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """0.5 * (1 - mean |cos| over positive pairs) + 0.5 * mean |cos| over negative pairs.

    ``tokens`` (B, D, h, w) (final block, with gradient); an empty set of pairs adds 0.
    """
    t = F.normalize(tokens.flatten(2).transpose(1, 2).float(), dim=-1)
    cos = (t @ t.transpose(1, 2)).abs()
    pos_f, neg_f = pos.float(), neg.float()
    pos_term = (pos_f * (1.0 - cos)).sum() / pos_f.sum().clamp(min=1.0)
    neg_term = (neg_f * cos).sum() / neg_f.sum().clamp(min=1.0)
    return 0.5 * pos_term + 0.5 * neg_term


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
