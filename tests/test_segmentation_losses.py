"""Segmentation losses of METHOD.md on cases with known answers; gradients; switches; the objective."""

import numpy as np
import pytest
import torch

from atsg import factory
from atsg.config import validate_config
from atsg.losses.segmentation import (
    _bilateral_filter,
    balanced_cross_entropy,
    boundary_loss,
    energy_loss,
    joint_loss,
    object_loss,
    soft_boundaries,
)
from atsg.store import IGNORE
from atsg.train.datasets import rescale_crop_flip
from atsg.train.segmentation_objective import SegmentationObjective

TINY_VIT = {
    "backbone": "vit_tiny_patch16_224",
    "pretrained": False,
    "random_init": True,
    "img_size": 32,
    "patch_size": 8,
    "embed_dim": 16,
    "depth": 2,
    "num_heads": 2,
    "decoder_channels": 8,
    "loss_warmup_iterations": 0,
}


def _cfg(**extra):
    cfg = {**TINY_VIT, **extra}
    return validate_config({"segmentation": cfg})["segmentation"]


def test_object_loss_is_the_mean_within_object_variance():
    logits = torch.zeros(1, 2, 1, 4)
    logits[0, 0] = torch.tensor([1.0, 3.0, 5.0, 7.0])
    objects = torch.tensor([[[1, 1, 2, 0]]])
    # object 1: channel 0 values 1, 3 -> variance 1, channel 1 -> 0 -> mean over channels 0.5
    # object 2: one pixel -> 0; pixel 4 is no object. Mean over objects: 0.25
    assert object_loss(logits, objects).item() == pytest.approx(0.25)
    assert object_loss(logits, torch.zeros(1, 1, 4, dtype=torch.long)).item() == 0.0
    # objects of different images never mix, even with the same id
    two = torch.stack([logits[0], logits[0] + 10])
    assert object_loss(two, torch.tensor([[[1, 1, 2, 0]], [[1, 1, 2, 0]]])).item() == pytest.approx(0.25)


def test_soft_boundaries_mark_class_changes():
    probs = torch.zeros(1, 2, 5, 6)
    probs[0, 0, :, :3] = 1.0
    probs[0, 1, :, 3:] = 1.0
    b = soft_boundaries(probs, 3)
    assert b[0, :, 2:4].eq(1).all() and b[0, :, :2].eq(0).all() and b[0, :, 4:].eq(0).all()


def test_boundary_loss_zero_when_boundaries_agree_and_gradients_reach_logits():
    logits = torch.full((1, 2, 8, 8), -10.0)
    logits[0, 0, :, :4] = 10.0
    logits[0, 1, :, 4:] = 10.0
    sam = torch.zeros(1, 8, 8, dtype=torch.long)
    sam[0, :, 3:5] = 1
    assert boundary_loss(logits, sam, 3, 5).item() == pytest.approx(0.0, abs=1e-4)
    far = torch.zeros_like(sam)
    far[0, :, 0] = 1  # a SAM boundary 3+ px away from the predicted one and outside the tolerance
    assert boundary_loss(logits, far, 3, 3).item() == pytest.approx(1.0, abs=1e-3)
    soft = torch.randn(1, 2, 8, 8, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    loss = boundary_loss(soft, sam, 3, 5)
    loss.backward()
    assert soft.grad.abs().sum() > 0  # unlike an argmax boundary, it trains
    assert boundary_loss(logits, torch.zeros_like(sam), 3, 5).item() == 0.0


def test_the_energy_kernel_filter_is_the_dense_gaussian_in_any_chunking_with_far_pairs_at_zero():
    torch.manual_seed(0)
    feats = torch.rand(50, 5) * torch.tensor([1.0, 1.0, 17.0, 17.0, 17.0])  # colours / 15: most pairs far apart
    s = torch.rand(50, 3)
    ref = torch.exp(-0.5 * torch.cdist(feats.double(), feats.double()) ** 2) @ s.double()
    for budget in (1 << 24, 7 * 50, 1):  # one chunk, chunks of 7 rows, one row at a time
        out = _bilateral_filter(feats, s, budget)
        assert torch.allclose(out.double(), ref, rtol=3e-5, atol=1e-7)  # float32 distances
    apart = torch.tensor([[0.0, 0.0], [0.0, 20.0]])  # 400 squared units apart: exactly no mass crosses
    assert torch.equal(_bilateral_filter(apart, torch.tensor([[1.0], [0.0]])), torch.tensor([[1.0], [0.0]]))


def test_energy_loss_matches_the_dense_definition_and_prefers_colour_consistent_labels():
    torch.manual_seed(0)
    logits = torch.randn(1, 3, 6, 6, requires_grad=True)
    image = torch.rand(1, 3, 6, 6) * 255
    loss = energy_loss(logits, image, 15.0, 100.0, 1.0)
    loss.backward()
    grad = logits.grad.clone()
    s = torch.softmax(logits, 1)[0].flatten(1).T
    ys, xs = torch.meshgrid(torch.arange(6.0), torch.arange(6.0), indexing="ij")
    f = torch.cat([torch.stack([ys, xs], -1).reshape(-1, 2) / 100.0, image[0].flatten(1).T / 15.0], 1)
    ref = -(s * (torch.exp(-0.5 * torch.cdist(f, f) ** 2) @ s)).sum() / 36**2
    logits.grad = None
    ref.backward()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    assert torch.allclose(grad, logits.grad, atol=1e-7)
    # two colour regions: labels that follow the colours have lower energy than labels that cut across
    image = torch.zeros(1, 3, 4, 4)
    image[..., 2:] = 255
    follow = torch.full((1, 2, 4, 4), -20.0)
    follow[0, 0, :, :2] = 20
    follow[0, 1, :, 2:] = 20
    across = follow.transpose(2, 3).contiguous()
    assert energy_loss(follow, image, 15, 100, 1.0) < energy_loss(across, image, 15, 100, 1.0)


def test_joint_loss_known_value():
    logits = torch.zeros(1, 3, 1, 2)  # softmax 1/3 each
    fg = torch.zeros(1, 1, 1, 2)  # sigmoid 1/2 -> joint: bg 1/6, fg classes 1/6 each -> renormalised 1/3
    labels = torch.tensor([[[0, 2]]])
    assert joint_loss(logits, fg, labels).item() == pytest.approx(np.log(3), rel=1e-5)
    fg = torch.full((1, 1, 1, 2), 20.0)  # certain foreground: the background pixel's joint prob -> 0
    assert joint_loss(logits, fg, torch.tensor([[[1, IGNORE]]])).item() == pytest.approx(np.log(2), rel=1e-4)


def test_augmentation_moves_masks_with_the_image():
    rng = np.random.default_rng(0)
    image = torch.arange(1.0, 17.0).view(1, 4, 4)
    objects = torch.arange(1, 17).view(4, 4)
    for _ in range(5):  # the tile lands anywhere on the crop's canvas, as the published random_crop places it
        out_image, label, maps = rescale_crop_flip(
            image, None, rng, 6, (1.0, 1.0), True, {"objects": (objects, 0), "boundaries": (objects % 2, 0)}
        )
        assert label is None and maps["objects"].shape == (6, 6)
        inside = out_image[0] > 0
        assert inside.sum() == 16
        assert torch.equal(maps["objects"][inside], out_image[0][inside].long())  # same pixels, same flip
        assert (maps["objects"][~inside] == 0).all()  # padding is no object


def _batch(b=2, size=32):
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (b, size, size), generator=g)
    labels[:, :4] = IGNORE
    objects = torch.randint(0, 5, (b, size, size), generator=g)
    return {
        "image": torch.randint(1, 255, (b, 3, size, size), generator=g).float(),
        "label": labels,
        "objects": objects,
        "boundaries": (objects % 2),
        "valid": torch.ones(b, size, size, dtype=torch.bool),
    }


def test_objective_gates_energy_and_joint_until_after_warmup_supervised_only_cross_entropy():
    """As published: object and boundary losses from step 0; energy and joint while step <= W count 0."""
    torch.manual_seed(0)
    cfg = _cfg(loss_warmup_iterations=3, energy_loss={"scale": 0.25})
    objective = SegmentationObjective(cfg, True, supervised=False)
    model = factory.segmenter(cfg, 3, 4, foreground=objective.joint)
    batch = _batch()
    for step in (0, 3):
        early, parts = objective(model, batch, step)
        assert parts["energy"] == parts["joint"] == 0.0 and parts["object"] > 0 and parts["boundary"] != 0
        assert early.item() == pytest.approx(
            0.1 * parts["seg"] + 0.01 * parts["object"] + 1.2 * parts["boundary"], rel=1e-5
        )
    loss, parts = objective(model, batch, 4)
    assert set(parts) == {"seg", "object", "boundary", "energy", "joint"} and parts["energy"] < 0 < parts["joint"]
    loss.backward()
    assert model.foreground.conv8.weight.grad.abs().sum() > 0
    gated = SegmentationObjective(
        _cfg(loss_warmup_iterations=3, object_loss={"after_warmup": True}, boundary_loss={"after_warmup": True}),
        True,
        supervised=False,
    )
    assert gated(model, batch, 3)[1]["object"] == gated(model, batch, 3)[1]["boundary"] == 0.0
    sup = SegmentationObjective(cfg, True, supervised=True)
    assert not sup.needs_masks and not sup.joint
    model = factory.segmenter(cfg, 3, 4).eval()
    loss, parts = sup(model, {"image": batch["image"], "label": batch["label"]}, 10)
    assert set(parts) == {"seg"}
    assert loss.item() == pytest.approx(
        balanced_cross_entropy(model(batch["image"]), batch["label"], True).item(), rel=1e-5
    )


@pytest.mark.parametrize(
    "key,term",
    [("object_loss", "object"), ("boundary_loss", "boundary"), ("energy_loss", "energy"), ("joint_loss", "joint")],
)
def test_switching_a_loss_off_removes_its_term(key, term):
    torch.manual_seed(0)
    sections = {"energy_loss": {"scale": 0.25}}
    sections.setdefault(key, {})["enabled"] = False
    cfg = _cfg(**sections)
    objective = SegmentationObjective(cfg, True, supervised=False)
    model = factory.segmenter(cfg, 3, 4, foreground=objective.joint)
    _, parts = objective(model, _batch(), 5)
    assert term not in parts and len(parts) == 4
    if key == "joint_loss":
        assert model.foreground is None
    if key in ("object_loss", "boundary_loss"):
        assert objective.needs_masks  # the other one still needs them
    off = _cfg(object_loss={"enabled": False}, boundary_loss={"enabled": False})
    assert not SegmentationObjective(off, True, supervised=False).needs_masks


def test_joint_loss_needs_a_background_class():
    assert not SegmentationObjective(_cfg(), background=False, supervised=False).joint


def test_cross_entropy_plain_counts_every_labelled_pixel_once_balanced_halves_background_and_foreground():
    """A rare background class (Potsdam's clutter) weighs half of the balanced loss, its share of the plain one."""
    logits = torch.zeros(1, 3, 1, 5)
    logits[0, 0] = torch.tensor([2.0, 0.0, 0.0, 0.0, 0.0])
    labels = torch.tensor([[[0, 1, 1, 2, IGNORE]]])
    ce = torch.nn.functional.cross_entropy(logits, labels, ignore_index=IGNORE, reduction="none")[0, 0]
    bg, fg = ce[0].item(), ce[1:4].mean().item()
    model = lambda images: logits  # noqa: E731 - the objective only calls it
    batch = {"image": torch.zeros(1, 3, 1, 5), "label": labels, "valid": torch.ones(1, 1, 5, dtype=torch.bool)}
    for kind, want in (("balanced", 0.5 * (bg + fg)), ("plain", ce[:4].mean().item())):
        cfg = _cfg(cross_entropy=kind)
        for supervised in (True, False):
            off = {
                k: {**cfg[k], "enabled": False} for k in ("object_loss", "boundary_loss", "energy_loss", "joint_loss")
            }
            objective = SegmentationObjective({**cfg, **off}, True, supervised=supervised)
            assert objective(model, batch, 0)[1]["seg"] == pytest.approx(want, rel=1e-6), (kind, supervised)
    assert 0.5 * (bg + fg) != pytest.approx(ce[:4].mean().item())
    # without a background class both are the plain cross-entropy
    objective = SegmentationObjective(_cfg(joint_loss={"enabled": False}), False, supervised=True)
    assert objective(model, batch, 0)[1]["seg"] == pytest.approx(ce[:4].mean().item(), rel=1e-6)
