"""Token contrast of the classifier: PTC with adaptive linking, CTC with its EMA teacher, local crops."""

import math

import pytest
import torch
import torch.nn.functional as F

from atsg import factory
from atsg.config import validate_config
from atsg.errors import ConfigError
from atsg.losses.contrast import ctc_loss, link_pairs, pair_targets, ptc_loss
from atsg.models.linking import LinkingFeatures
from atsg.models.projection import EMATeacher, ProjectionHead
from atsg.store import IGNORE
from atsg.train.classifier_objective import ClassifierObjective, aux_band_labels
from atsg.train.crops import uncertain_crops

TINY_VIT = {
    "backbone": "vit_tiny_patch16_224",
    "pretrained": False,
    "random_init": True,
    "img_size": 64,
    "patch_size": 8,
    "embed_dim": 32,
    "depth": 3,
    "num_heads": 2,
    "aux_layer": -2,
    "linking": {"features": "self", "layer": 0},
    "ctc": {"local_crops": 2, "local_size": 16, "hidden_dim": 16, "bottleneck_dim": 8, "out_dim": 12},
}


def _cfg(**extra):
    cfg = {**TINY_VIT, **extra}
    for key in ("linking", "ctc", "ptc"):
        cfg[key] = {**TINY_VIT.get(key, {}), **extra.get(key, {})}
    return validate_config({"classifier": cfg})["classifier"]


def _batch(b=2, size=32):
    g = torch.Generator().manual_seed(0)
    image = torch.randint(1, 255, (b, 3, size, size), generator=g).float()
    return {
        "image": image,
        "local": (image * 0.9).round(),
        "view2": image.flip(-1),
        "cls": torch.tensor([[1.0, 0, 1], [0, 1, 0]])[:b],
        "valid": torch.ones(b, size, size, dtype=torch.bool),
    }


def test_pair_targets_same_class_positive_different_negative_ignored_neither():
    labels = torch.tensor([[1, 1, 2, IGNORE]])
    pos, neg = pair_targets(labels)
    assert pos[0].nonzero().tolist() == [[0, 1], [1, 0]]  # never a token with itself
    assert neg[0].nonzero().tolist() == [[0, 2], [1, 2], [2, 0], [2, 1]]
    assert not pos[0, 3].any() and not neg[0, :, 3].any()
    linked = torch.zeros(1, 4, 4, dtype=torch.bool)
    linked[0, 0, 2] = linked[0, 2, 0] = linked[0, 2, 3] = True
    pos, neg = pair_targets(labels, linked)
    assert pos[0, 0, 2] and not neg[0, 0, 2]  # a linked pair is positive even across labels
    assert pos[0, 2, 3]  # ... and with an ignored token


def test_link_pairs_batch_mean_threshold_is_the_mean_abs_similarity_of_the_batch():
    feats = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]]).T.reshape(1, 2, 1, 3)
    # |cosines|: 1 within {0, 1} (opposite signs count), 0 to token 2, 1 on the diagonal; mean = 5/9
    linked = link_pairs(feats, "batch_mean")
    assert linked[0].int().tolist() == [[1, 1, 0], [1, 1, 0], [0, 0, 1]]
    # one threshold for the whole batch: an image of identical tokens (|cos| 1 everywhere) raises the mean
    # to (5 + 9) / 18 = 7/9, still under 1; a third image of orthogonal tokens would lower it.
    same = torch.ones(1, 2, 1, 3)
    both = link_pairs(torch.cat([feats, same]), "batch_mean")
    assert both[0].int().tolist() == [[1, 1, 0], [1, 1, 0], [0, 0, 1]] and both[1].all()
    # signed, per image (the former atsg rule): tokens 0 and 1 are no longer linked
    assert link_pairs(feats, "image_mean")[0].int().tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    assert not link_pairs(feats, 1.0).any() and link_pairs(feats, -0.5).all()


def test_linked_pairs_are_positive_even_for_ignored_tokens_and_a_token_with_itself():
    labels = torch.tensor([[1, IGNORE, 2]])
    pos, neg = pair_targets(labels)
    assert not pos[0].diagonal().any() and not pos[0, 1].any() and neg[0, 0, 2] and not neg[0, 0, 1]
    linked = torch.eye(3, dtype=torch.bool)[None] | torch.tensor([[[0, 1, 1], [1, 0, 0], [1, 0, 0]]]).bool()
    pos, neg = pair_targets(labels, linked)
    assert pos[0].diagonal().all() and pos[0, 0, 1] and pos[0, 0, 2] and not neg.any()


def test_ptc_loss_known_values():
    """The published get_masked_ptc_loss: 0.5 (1 - sum_pos |cos| / (n_pos + 1)) + 0.5 sum_neg |cos| / (n_neg + 1)."""
    tokens = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]).T.reshape(1, 2, 2, 2)
    labels = torch.tensor([[1, 1, 2, 1]])
    pos, neg = pair_targets(labels)
    # positives (0,1), (0,3), (1,3) and mirrors: 6 pairs of |cos| 1 (sign is ignored); negatives with 2: cos 0
    assert ptc_loss(tokens, pos, neg).item() == pytest.approx(0.5 * (1 - 6 / 7), abs=1e-6)
    labels = torch.tensor([[1, 2, 1, 1]])
    pos, neg = pair_targets(labels)
    # positives (0,2), (0,3), (2,3) and mirrors: |cos| 0, 1, 0; negatives (0,1), (1,2), (1,3): |cos| 1, 0, 1
    assert ptc_loss(tokens, pos, neg).item() == pytest.approx(0.5 * (1 - 2 / 7) + 0.5 * (4 / 7))
    assert ptc_loss(tokens, torch.zeros_like(pos), torch.zeros_like(neg)).item() == 0.5


def test_ctc_loss_known_value_and_no_negatives():
    e = torch.eye(3)
    teacher = e[0].view(1, 1, 3)  # one global view, one image
    student = torch.stack([e[0], e[1]]).view(2, 1, 3)  # view 0 positive (cos 1), view 1 negative (cos 0)
    flags = torch.tensor([[True, False]])
    t = 0.5
    expected = -math.log(math.exp(1 / t) / (math.exp(1 / t) + math.exp(0 / t)))
    assert ctc_loss(teacher, student, flags, t).item() == pytest.approx(expected, rel=1e-5)
    student = student.clone().requires_grad_(True)
    loss = ctc_loss(teacher, student, torch.tensor([[True, True]]), t)  # nothing to contrast with
    loss.backward()
    assert loss.item() == pytest.approx(0.0, abs=1e-4) and torch.isfinite(student.grad).all()


def test_uncertain_crops_centre_on_uncertainty_and_flag_by_fraction():
    torch.manual_seed(0)
    images = torch.arange(2 * 40 * 40, dtype=torch.float32).view(2, 1, 40, 40)
    uncertain = torch.zeros(2, 40, 40, dtype=torch.bool)
    uncertain[0, 28:, 28:] = True  # image 0: a 12 px uncertain corner; image 1: none
    crops, flags = uncertain_crops(images, uncertain, n=3, size=16, min_fraction=0.2)
    assert crops.shape == (3, 2, 1, 16, 16) and flags.shape == (2, 3)
    for j in range(3):  # every crop of image 0 holds a good part of the corner: positives
        assert crops[j, 0].max() >= images[0, 0, 28, 28]
    assert flags[0].all() and not flags[1].any()
    small, f = uncertain_crops(images[:, :, :8, :8], uncertain[:, :8, :8], n=1, size=16, min_fraction=0.2)
    assert small.shape == (1, 2, 1, 16, 16) and (small[0, :, :, 8:, :] == 0).all()


def test_aux_band_labels_follow_the_band_and_ignore_invalid_pixels_not_black_ones():
    maps = torch.tensor([[[[0.0, 0.5, 1.0, 3.0]], [[0.0, 0.0, 0.0, 0.0]]]])  # (1, 2, 1, 4)
    valid = torch.ones(1, 8, 32, dtype=torch.bool)
    valid[..., 24:] = False  # the last token covers padding or nodata only: ignored, and out of the CAM's range
    label = aux_band_labels(maps, torch.tensor([[1.0, 0.0]]), valid, 0.7, 0.25, True)
    assert label.tolist() == [[[0, IGNORE, 1, IGNORE]]]
    # a truly black image is valid: its tokens are labelled (the old rule, "all bands 0 is padding", dropped them)
    label = aux_band_labels(maps, torch.tensor([[1.0, 0.0]]), torch.ones(1, 8, 32, dtype=torch.bool), 0.7, 0.25, True)
    assert label.tolist() == [[[0, 0, IGNORE, 1]]]


def test_ema_teacher_follows_the_student_and_gets_no_gradient():
    torch.manual_seed(0)
    student = torch.nn.Linear(3, 2)
    head = torch.nn.Linear(2, 2)
    teacher = EMATeacher(student, head)
    before = teacher.backbone.weight.clone()
    with torch.no_grad():
        student.weight.add_(1.0)
    teacher.update(student, head, 0.9)
    assert torch.allclose(teacher.backbone.weight, 0.9 * before + 0.1 * student.weight)
    assert not any(p.requires_grad for p in teacher.parameters())


def test_projection_head_last_layer_norms_stay_fixed():
    head = ProjectionHead(8, 16, 4, 6)
    out = head(torch.randn(5, 8))
    out.sum().backward()
    w = head.last.weight
    assert out.shape == (5, 6) and torch.allclose(w.norm(dim=1), torch.ones(6), atol=1e-5)
    assert head.last.parametrizations.weight.original0.grad is None


def test_objective_gradients_reach_the_student_never_the_teacher_or_link_tokens():
    torch.manual_seed(0)
    cfg = _cfg(ctc={"min_uncertain": 1.0})  # local crops not wholly uncertain are negatives: a contrast exists
    model = factory.contrastive(factory.classifier(cfg, 3, 3), cfg["ctc"])
    objective = ClassifierObjective(cfg, True, 3)
    loss, parts = objective(model, _batch(), 0)
    assert set(parts) == {"cls", "cls_aux", "ptc", "ctc"} and parts["ctc"] > 0
    loss.backward()
    assert model.classifier.backbone.vit.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    assert model.projection.mlp[0].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.teacher.parameters())
    assert model.teacher.backbone is None  # published: the teacher is the projection head alone
    out = model(_batch()["image"], link_block=0)
    assert not out["link_tokens"].requires_grad


def test_published_teacher_is_an_ema_of_the_head_alone():
    cfg = _cfg()
    torch.manual_seed(0)
    model = factory.contrastive(factory.classifier(cfg, 3, 3), cfg["ctc"])
    before = [p.clone() for p in model.teacher.head.parameters()]
    with torch.no_grad():
        for p in model.projection.parameters():
            p.add_(1.0)
    model.update_teacher(0.9)
    for t, b, s in zip(model.teacher.head.parameters(), before, model.projection.parameters()):
        assert torch.allclose(t, 0.9 * b + 0.1 * s)
    old = _cfg(ctc={"form": "atsg"})
    assert factory.contrastive(factory.classifier(old, 3, 3), old["ctc"]).teacher.backbone is not None


@pytest.mark.parametrize("switch,term", [("ptc", "ptc"), ("ctc", "ctc")])
def test_switches_remove_their_terms(switch, term):
    torch.manual_seed(0)
    cfg = _cfg(**{switch: {"enabled": False}})
    model = factory.contrastive(factory.classifier(cfg, 3, 3), cfg["ctc"])
    loss, parts = ClassifierObjective(cfg, True, 3)(model, _batch(), 0)
    assert term not in parts
    if switch == "ctc":
        assert model.teacher is None and model.projection is None
    plain = F.multilabel_soft_margin_loss  # with both off the loss is the classification loss alone
    cfg = _cfg(ptc={"enabled": False}, ctc={"enabled": False})
    model = factory.contrastive(factory.classifier(cfg, 3, 3), cfg["ctc"])
    batch = _batch()
    loss, _ = ClassifierObjective(cfg, True, 3)(model, batch, 0)
    out = model(batch["image"])
    expected = plain(out["logits"], batch["cls"]) + plain(out["logits_aux"], batch["cls"])
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_linking_off_or_on_changes_the_ptc_targets():
    torch.manual_seed(0)
    batch = _batch()
    values = {}
    for enabled in (False, True):
        cfg = _cfg(ctc={"enabled": False}, linking={"enabled": enabled})
        torch.manual_seed(0)
        model = factory.contrastive(factory.classifier(cfg, 3, 3), None)
        values[enabled] = ClassifierObjective(cfg, True, 3)(model, batch, 0)[1]["ptc"]
    assert values[False] != pytest.approx(values[True])


def test_dino_linking_needs_weights_and_loads_a_frozen_vit(tmp_path):
    cfg = _cfg(linking={"features": "dino"})
    with pytest.raises(ConfigError, match="classifier.linking.checkpoint"):
        ClassifierObjective(cfg, True, 3)
    arch = {"img_size": 32, "patch_size": 16, "embed_dim": 24, "depth": 2, "num_heads": 2}
    import timm

    torch.save(timm.create_model("vit_tiny_patch16_224", num_classes=0, **arch).state_dict(), tmp_path / "dino.pth")
    cfg = _cfg(
        ctc={"enabled": False},
        linking={
            "features": "dino",
            "backbone": "vit_tiny_patch16_224",
            "checkpoint": str(tmp_path / "dino.pth"),
            "model_kwargs": arch,
        },
    )
    objective = ClassifierObjective(cfg, True, 3)
    linker = objective.linker
    assert isinstance(linker, LinkingFeatures)
    linker.train()
    assert not linker.training and not any(p.requires_grad for p in linker.parameters())
    feats = linker(_batch()["image"], (4, 4))  # a 2x2 DINO grid resampled to the classifier's 4x4
    assert feats.shape == (2, 24, 4, 4)
    model = factory.contrastive(factory.classifier(cfg, 3, 3), None)
    loss, parts = objective(model, _batch(), 0)
    loss.backward()
    assert "ptc" in parts and all(p.grad is None for p in linker.parameters())
