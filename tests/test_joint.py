"""Paper mode (classifier.joint_segmentation): one network, classifier and decoders trained in one stage."""

import pytest
import torch

from atsg import factory
from atsg.config import validate_config
from atsg.errors import ConfigError
from atsg.models.joint import JointModel
from atsg.store import IGNORE
from atsg.train.joint_objective import JointObjective

VIT = {
    "backbone": "vit_tiny_patch16_224",
    "pretrained": False,
    "random_init": True,
    "img_size": 64,
    "patch_size": 8,
    "embed_dim": 32,
    "depth": 3,
    "num_heads": 2,
}


def _cfg(**segmentation):
    return validate_config(
        {
            "classifier": {
                **VIT,
                "aux_layer": -2,
                "joint_segmentation": True,
                "linking": {"features": "self", "layer": 0},
                "ctc": {"local_crops": 2, "local_size": 16, "hidden_dim": 16, "bottleneck_dim": 8, "out_dim": 12},
            },
            "segmentation": {
                **VIT,
                "decoder_channels": 8,
                "loss_warmup_iterations": 5,
                "energy_loss": {"scale": 0.5},
                **segmentation,
            },
            "cams": {"scales": [1.0, 0.5]},
            "refine": {"par_dilations": [1, 2], "par_iterations": 2},
        }
    )


def _batch():
    g = torch.Generator().manual_seed(0)
    image = torch.randint(1, 255, (2, 3, 32, 32), generator=g).float()
    image[1, :, :, 24:] = 0  # crop padding
    valid = torch.ones(2, 32, 32, dtype=torch.bool)
    valid[1, :, 24:] = False
    objects = torch.zeros(2, 32, 32, dtype=torch.long)
    objects[:, 4:20, 4:20] = 1
    boundaries = torch.zeros(2, 32, 32, dtype=torch.long)
    boundaries[:, 4, 4:20] = 1
    return {
        "image": image,
        "cls": torch.tensor([[1.0, 0, 1, 0, 0], [0, 1, 0, 0, 0]]),
        "objects": objects,
        "boundaries": boundaries,
        "valid": valid,
        "local": image.clone(),
        "view2": image.flip(-1),
    }


def _model(cfg, joint_decoder=True):
    torch.manual_seed(0)
    classifier = factory.classifier(cfg["classifier"], 3, 5)
    return factory.joint(classifier, cfg["classifier"]["ctc"], cfg["segmentation"], 6, joint_decoder)


def test_segmentation_branch_waits_for_the_warmup_then_trains_decoders_and_backbone():
    """As published: object and boundary losses train the decoder from step 0; the pseudo-label
    cross-entropy, energy and joint losses count from step W + 1 (n_iter <= W multiplies them by 0)."""
    cfg = _cfg()
    model, objective = _model(cfg), JointObjective(cfg, True, 3, 6)
    loss, parts = objective(model, _batch(), 5)
    assert parts["seg"] == parts["joint"] == parts["energy"] == 0.0 and "ptc" in parts and "ctc" in parts
    assert parts["object"] > 0
    loss.backward()
    assert model.decoder.conv8.weight.grad.abs().sum() > 0  # the object loss
    assert model.foreground.conv8.weight.grad is None
    model.zero_grad(set_to_none=True)
    loss, parts = objective(model, _batch(), 6)
    assert set(parts) >= {"cls", "cls_aux", "ptc", "ctc", "seg", "object", "boundary", "energy", "joint"}
    assert parts["seg"] > 0
    loss.backward()
    assert model.decoder.conv8.weight.grad.abs().sum() > 0
    assert model.foreground.conv8.weight.grad.abs().sum() > 0
    assert model.classifier.backbone.vit.blocks[-1].mlp.fc2.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.teacher.parameters())


def test_on_the_fly_pseudo_labels_follow_the_image_labels_and_ignore_padding():
    cfg = _cfg()
    model, objective = _model(cfg), JointObjective(cfg, True, 3, 6)
    batch = _batch()
    cam, _ = objective.classification.step_cams(model, batch)
    labels = objective.pseudo_labels(cam, batch["image"], batch["cls"], batch["valid"])
    assert labels.shape == (2, 32, 32) and not labels.requires_grad
    assert (labels[1, :, 24:] == IGNORE).all()
    assert set(labels[0].unique().tolist()) <= {0, 1, 3, IGNORE}  # only tile 0's classes (1, 3) or background
    assert set(labels[1, :, :24].unique().tolist()) <= {0, 2, IGNORE}


def test_exported_segmenter_predicts_what_the_joint_model_predicts():
    cfg = _cfg(crop_size=40)  # the segmentation section's own crop, unused in paper mode
    model = _model(cfg).eval()
    seg_cfg = factory.segmenter_config(cfg["classifier"], cfg["segmentation"])
    # the segmenter file records the crop the one network trained on (predict.input_size: crop reads it)
    assert seg_cfg["crop_size"] == cfg["classifier"]["crop_size"] != 40
    segmenter = factory.segmenter(seg_cfg, 3, 6).eval()
    segmenter.load_state_dict(JointModel.segmenter_state(model.state_dict()))
    images = _batch()["image"]
    with torch.no_grad():
        expected, _ = model.segment(model(images)["tokens"], (32, 32))
        assert torch.allclose(segmenter(images), expected, atol=1e-5)


def test_switching_losses_off_removes_them_and_the_foreground_decoder():
    cfg = _cfg(joint_loss={"enabled": False}, energy_loss={"enabled": False})
    objective = JointObjective(cfg, True, 3, 6)
    model = _model(cfg, objective.segmentation.joint)
    assert model.foreground is None
    _, parts = objective(model, _batch(), 5)
    assert "joint" not in parts and "energy" not in parts and "object" in parts


def test_seg_miou_selection_needs_paper_mode():
    with pytest.raises(ConfigError, match="classifier.select_metric.*joint_segmentation"):
        validate_config({"classifier": {"select_metric": "seg_miou"}})
