"""Self-supervised pretraining (stage pretrain): losses against hand-computed values, seeded views, the stage's
files loading into the classifier and the linking ViT, the artifact graph, clear errors."""

import json

import numpy as np
import pytest
import torch
from conftest import REPO, TINY_PRETRAIN, TINY_VIT, preset_config
from fixtures import make_potsdam

from atsg import factory
from atsg.artifacts import artifact_key, needed, upstream
from atsg.config import load_config
from atsg.errors import ConfigError, DataError
from atsg.losses.selfsup import dino_loss, masked_patch_loss, teacher_probs, update_center
from atsg.stages.common import Tiles
from atsg.stages.pretrain import run_pretrain, with_pretrain
from atsg.stages.tile import run_tile
from atsg.train.pretrain_data import multicrop
from atsg.train.pretrain_objective import random_patch_mask, teacher_momentum, teacher_temperature

TINY_PRE = {**TINY_PRETRAIN, "iterations": 6, "batch_size": 4, "val_every": 3, "checkpoint_every": 3}


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_dino_loss_is_the_mean_cross_entropy_over_pairs_of_different_views():
    g = torch.Generator().manual_seed(0)
    student = [torch.randn(3, 5, generator=g) for _ in range(4)]  # 2 global + 2 local views
    teacher_out = torch.randn(6, 5, generator=g)
    center = torch.randn(5, generator=g)
    targets = list(teacher_probs(teacher_out, center, 0.04).chunk(2))
    t = [_softmax((teacher_out[i * 3 : (i + 1) * 3].numpy() - center.numpy()) / 0.04) for i in range(2)]
    s = [np.log(_softmax(x.numpy() / 0.1)) for x in student]
    pairs = [-(t[i] * s[j]).sum(-1).mean() for i in range(2) for j in range(4) if i != j]
    assert float(dino_loss(student, targets, 0.1)) == pytest.approx(float(np.mean(pairs)), rel=1e-5)


def test_masked_patch_loss_averages_masked_patches_per_image_then_images():
    g = torch.Generator().manual_seed(1)
    student, teacher = torch.randn(3, 6, generator=g), torch.randn(3, 6, generator=g).softmax(-1)
    image = torch.tensor([0, 0, 2])  # two masked patches of image 0, one of image 2, none of image 1
    ce = -(teacher.numpy() * np.log(_softmax(student.numpy() / 0.1))).sum(-1)
    expected = np.mean([(ce[0] + ce[1]) / 2, ce[2]])  # image 1 has no masked patch: left out
    assert float(masked_patch_loss(student, teacher, image, 3, 0.1)) == pytest.approx(float(expected), rel=1e-5)
    none = masked_patch_loss(torch.zeros(0, 6, requires_grad=True), torch.zeros(0, 6), torch.zeros(0).long(), 3, 0.1)
    assert float(none.detach()) == 0.0 and none.requires_grad


def test_centre_and_schedules():
    center = torch.ones(3)
    update_center(center, torch.tensor([[0.0, 2.0, 4.0], [2.0, 2.0, 0.0]]), 0.9)
    torch.testing.assert_close(center, torch.tensor([0.9 + 0.1, 0.9 + 0.2, 0.9 + 0.2]))
    update_center(center, torch.zeros(0, 3), 0.9)  # no masked patch this step: unchanged
    torch.testing.assert_close(center, torch.tensor([1.0, 1.1, 1.1]))
    cfg = {
        "momentum": 0.99,
        "iterations": 100,
        "teacher_temp": 0.07,
        "warmup_teacher_temp": 0.04,
        "teacher_temp_warmup": 10,
    }
    assert teacher_momentum(0, cfg) == pytest.approx(0.99) and teacher_momentum(100, cfg) == pytest.approx(1.0)
    assert teacher_momentum(50, cfg) == pytest.approx(0.995)
    assert teacher_temperature(0, cfg) == pytest.approx(0.04) and teacher_temperature(5, cfg) == pytest.approx(0.055)
    assert teacher_temperature(10, cfg) == teacher_temperature(99, cfg) == 0.07


def test_patch_masks_follow_probability_and_ratio():
    torch.manual_seed(0)
    mask = random_patch_mask(400, (8, 8), {"mask_ratio": [0.25, 0.25], "mask_probability": 0.5}, "cpu")
    per_image = mask.flatten(1).sum(1)
    assert set(per_image.tolist()) == {0, 16}  # masked images: exactly a quarter of their patches
    assert 0.4 < float((per_image > 0).float().mean()) < 0.6


def test_multicrop_views_are_seeded_and_shaped():
    cfg = load_config([REPO / "config" / "config.yaml"], {"pretrain": TINY_PRE})["pretrain"]
    tile = torch.rand(3, 128, 128) * 255
    a = multicrop(tile, np.random.default_rng([0, 5]), cfg)
    b = multicrop(tile, np.random.default_rng([0, 5]), cfg)
    c = multicrop(tile, np.random.default_rng([0, 6]), cfg)
    assert a[0].shape == (2, 3, 64, 64) and a[1].shape == (2, 3, 32, 32)
    torch.testing.assert_close(a[0], b[0]) and torch.testing.assert_close(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    assert float(a[0].min()) >= 0 and float(a[0].max()) <= 255


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A tiny tile store and the pretrain stage run on it: (config, tiles path, pretrain folder, summary)."""
    tmp = tmp_path_factory.mktemp("pretrain")
    make_potsdam(tmp / "potsdam", ["2_10", "2_11", "3_10"], size=(256, 256))
    cfg = preset_config(
        "potsdam",
        tmp / "potsdam",
        tiling={"size": 128, "stride": 128},
        split={"method": "ratio", "ratios": [1, 1, 1]},
        pretrain=TINY_PRE,
        classifier={
            **TINY_VIT,
            "weights": "pretrain",
            "aux_layer": -2,
            "linking": {"features": "pretrain"},
            "ctc": {"enabled": False},
        },
    )
    run_tile(cfg, tmp / "tiles.zarr", tmp / "potsdam")
    summary = run_pretrain(cfg, tmp / "tiles.zarr", tmp / "pretrain")
    return cfg, tmp / "tiles.zarr", tmp / "pretrain", summary


def test_pretrain_writes_student_and_teacher_that_load_as_timm_weights(pretrained):
    cfg, tiles_path, out, summary = pretrained
    metrics = json.loads((out / "metrics.json").read_text())
    assert summary["method"] == "ibot" and len(metrics["history"]) == 2
    assert all({"val_loss", "teacher_entropy", "embedding_std"} <= set(h) for h in metrics["history"])
    student = torch.load(out / "backbone.pt", weights_only=True)
    teacher = torch.load(out / "teacher.pt", weights_only=True)
    assert student["atsg_model"] == teacher["atsg_model"] == "pretrained_backbone"
    assert student["artifact_key"] == artifact_key(cfg, "pretrain")
    keys = set(student["state_dict"])
    assert "pos_embed" in keys and "blocks.0.attn.qkv.weight" in keys and not any(k.startswith("head") for k in keys)
    # the teacher lags the student (EMA), and both moved away from the seeded random init
    torch.manual_seed(cfg["pretrain"]["seed"])
    fresh = factory.classifier({**cfg["classifier"], "weights": "random_init"}, 3, 5).backbone.vit.state_dict()
    w = "blocks.0.attn.qkv.weight"
    assert not torch.equal(student["state_dict"][w], teacher["state_dict"][w])
    assert not torch.equal(student["state_dict"][w], fresh[w])
    # weights: pretrain builds the classifier's ViT from the student; linking: pretrain reads the teacher
    tiles = Tiles.open(tiles_path)
    inputs = {}
    c = with_pretrain(cfg, "classifier", out, tiles.bands, inputs)
    assert inputs == {"pretrain": student["artifact_key"]}
    vit = factory.classifier(c, tiles.bands, tiles.n_targets).backbone.vit.state_dict()
    assert all(torch.equal(vit[k], v) for k, v in student["state_dict"].items())
    assert c["linking"]["checkpoint"] == str(out / "teacher.pt") and c["linking"]["embed_dim"] == TINY_VIT["embed_dim"]


def test_weights_pretrain_needs_the_same_architecture(pretrained):
    cfg, tiles_path, out, _ = pretrained
    other = {**cfg, "classifier": {**cfg["classifier"], "embed_dim": 64}}
    with pytest.raises(
        ConfigError,
        match=r"classifier.embed_dim: 64, but .*backbone.pt was pretrained with "
        r"pretrain.embed_dim 32",
    ):
        with_pretrain(other, "classifier", out, 3, {})
    with pytest.raises(
        ConfigError, match="classifier.weights: pretrain needs the pretrain stage's output.*--pretrain DIR"
    ):
        with_pretrain(cfg, "classifier", None, 3, {})
    with pytest.raises(DataError, match="pretrained on 3 bands, the tiles have 4"):
        with_pretrain(cfg, "classifier", out, 4, {})
    # the teacher's file alone says how to build the linking ViT: a pretrain section the stage never sees is fine
    other = {**cfg, "pretrain": {**cfg["pretrain"], "backbone": "vit_small_patch16_224", "embed_dim": None}}
    assert with_pretrain(other, "classifier", out, 3, {})["linking"]["backbone"] == "vit_tiny_patch16_224"
    with pytest.raises(ConfigError, match="classifier.weights: pretrain needs the pretrain stage"):
        factory.classifier(cfg["classifier"], 3, 5)


def test_pretrain_enters_the_artifact_graph_only_when_read():
    base = {"pretrain": TINY_PRE, "classifier": dict(TINY_VIT), "segmentation": dict(TINY_VIT)}
    demo = load_config([REPO / "config" / "config.yaml"], base)  # the demo: the classifier starts from pretrain
    assert "pretrain" in upstream(demo, "classifier") and "pretrain" in needed(demo)
    assert "pretrain" not in upstream(demo, "segmentation") + upstream(demo, "supervised")
    both = load_config([REPO / "config" / "config.yaml"], {**base, "segmentation": {**TINY_VIT, "weights": "pretrain"}})
    assert "pretrain" in upstream(both, "segmentation") and "pretrain" in upstream(both, "supervised")
    scratch = load_config(
        [REPO / "config" / "config.yaml"],
        {
            **base,
            "classifier": {**TINY_VIT, "weights": "random_init", "linking": {"features": "self"}},
            "segmentation": {**TINY_VIT, "weights": "random_init"},
        },
    )
    assert "pretrain" not in needed(scratch)
    linked = load_config(
        [REPO / "config" / "config.yaml"],
        {
            **base,
            "classifier": {**TINY_VIT, "weights": "random_init", "linking": {"enabled": True, "features": "pretrain"}},
            "segmentation": {**TINY_VIT, "weights": "random_init"},
        },
    )
    assert upstream(linked, "classifier")[-1] == "pretrain" and "pretrain" not in upstream(linked, "segmentation")
    changed = load_config(
        [REPO / "config" / "config.yaml"],
        {**base, "segmentation": {**TINY_VIT, "weights": "pretrain"}, "pretrain": {**TINY_PRE, "lr": 1e-4}},
    )
    demo = both
    assert artifact_key(changed, "tiles") == artifact_key(demo, "tiles")
    for a in ("pretrain", "classifier", "segmentation", "supervised", "eval"):
        assert artifact_key(changed, a) != artifact_key(demo, a), a
