"""Conformance with the published ATSG code, component by component (docs/fidelity.md).

Expected values come from running the official functions (zhangyifan25/ATSG at 0347a0f) on the same
seeded inputs and weights: tests/fixtures/official/make_official_fixtures.py made official.npz and says
how. Tolerance 1e-5 relative (atol for values near 0) unless a reason is given.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from atsg import factory
from atsg.cam import cam_to_label, cam_to_label_band, multiscale_cams
from atsg.config import validate_config
from atsg.losses.contrast import link_pairs, pair_targets, ptc_loss
from atsg.losses.segmentation import (
    balanced_cross_entropy,
    boundary_loss_published,
    energy_loss_published,
    joint_loss_published,
    object_loss_published,
)
from atsg.masks.maps import object_and_boundary_maps
from atsg.models.joint import JointModel
from atsg.models.official import from_official
from atsg.refine.pseudo import Refiner
from atsg.train.classifier_objective import band_labels_of
from atsg.train.engine import lr_factor

FIXTURES = Path(__file__).parent / "fixtures" / "official"
_spec = importlib.util.spec_from_file_location("make_official_fixtures", FIXTURES / "make_official_fixtures.py")
made = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(made)
OFFICIAL = dict(np.load(FIXTURES / "official.npz"))
RTOL, ATOL = 1e-5, 1e-6


def close(ours: torch.Tensor, name: str, rtol: float = RTOL, atol: float = ATOL):
    expected = OFFICIAL[name]
    np.testing.assert_allclose(ours.detach().numpy(), expected, rtol=rtol, atol=atol, err_msg=name)


@pytest.fixture(scope="module")
def data():
    return made.inputs()


def published_config(**classifier) -> dict:
    vit = {"backbone": "deit_tiny_patch16_224", "pretrained": False, "random_init": True, **made.ARCH}
    return validate_config({"classifier": {**vit, **classifier}, "segmentation": {}})


@pytest.fixture(scope="module")
def joint():
    """atsg's paper-mode network with the official network's seeded weights, loaded from its state dict."""
    cfg = published_config()
    torch.manual_seed(0)
    model = factory.joint(
        factory.classifier(cfg["classifier"], 3, made.N_CLASSES - 1),
        cfg["classifier"]["ctc"],
        cfg["segmentation"],
        made.N_CLASSES,
        foreground=True,
    )
    shapes = _official_shapes(model)
    state = from_official(made.seeded_state(shapes))
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all(k.startswith("teacher.backbone.") for k in missing), (missing, unexpected)
    return model.eval()


def _official_shapes(model: JointModel) -> dict:
    """The official network's tensor names and shapes, from atsg's (the inverse of from_official)."""
    from atsg.models.official import official_key

    names = ["encoder." + k for k in model.classifier.backbone.vit.state_dict()]
    names += ["encoder.head.weight", "encoder.head.bias", "classifier.weight", "aux_classifier.weight"]
    names += [
        f"{h}.{k}"
        for h in ("proj_head", "proj_head_t")
        for k in (
            "mlp.0.weight",
            "mlp.0.bias",
            "mlp.2.weight",
            "mlp.2.bias",
            "mlp.4.weight",
            "mlp.4.bias",
            "last_layer.weight_g",
            "last_layer.weight_v",
        )
    ]
    names += [f"{d}.conv{i}.weight" for d in ("decoder", "foreground_decoder") for i in (6, 7, 8)]
    ours = model.state_dict()
    shapes = {}
    for name in names:
        key = official_key(name)
        if key is None:  # the ViT's ImageNet head: 1000 classes of the official VisionTransformer
            shapes[name] = (1000, made.ARCH["embed_dim"]) if name.endswith("weight") else (1000,)
        else:
            shapes[name] = tuple(ours[key].shape)
    return shapes


@pytest.mark.parametrize("tag", ["", "_t"])
def test_classifier_forward_equals_the_official_network(joint, data, tag):
    """Post-norm final tokens, pool-then-classify logits, the adaptive auxiliary block, CAMs of both heads
    and both LargeFOV decoders, at the position embedding's grid and at another one (``_t``: transposed)."""
    images = data["images"] if not tag else data["images"].transpose(-1, -2).contiguous()
    with torch.no_grad():
        out = joint.classifier(images)
        close(out["tokens"], f"forward{tag}_x4", atol=1e-5)
        close(out["logits"], f"forward{tag}_logits", atol=1e-5)
        close(out["logits_aux"], f"forward{tag}_logits_aux", atol=1e-5)
        close(out["maps"], f"forward{tag}_cam", atol=1e-5)
        close(out["maps_aux"], f"forward{tag}_cam_aux", atol=1e-5)
        close(joint.decoder(out["tokens"]), f"forward{tag}_seg", atol=1e-5)
        close(joint.foreground(out["tokens"]), f"forward{tag}_fg_seg", atol=1e-5)


def test_multiscale_cam_equals_multi_scale_cam2(joint, data):
    """Scales 1, 0.5, 1.5 with flips, resized to the input, flip max, then ReLU, summed, min-max per class."""
    cam, cam_aux = multiscale_cams(
        joint.classifier, data["images"], [1.0, 0.5, 1.5], True, made.SIZE, relu="after_merge", aux_groups="batch"
    )
    close(cam, "ms_cam", atol=1e-5)
    close(cam_aux, "ms_cam_aux", atol=1e-5)
    old, _ = multiscale_cams(
        joint.classifier, data["images"], [1.0, 0.5, 1.5], True, made.SIZE, relu="before_resize", aux_groups="batch"
    )
    assert not np.allclose(old.numpy(), OFFICIAL["ms_cam"], atol=1e-3)  # the switch is a real difference


def test_multiscale_cams_give_the_forward_logits_from_their_scale_1_pass(joint, data):
    """extract_cams' image-level scores come from the CAMs' own unflipped scale-1 pass, not a second forward."""
    images = data["images"]
    cam, _, logits = multiscale_cams(joint.classifier, images, [0.5, 1.0], True, made.SIZE, logits=True)
    with torch.no_grad():
        close(logits, "forward_logits", atol=1e-5)
        assert torch.allclose(logits, joint.classifier(images)["logits"], atol=1e-5)
    plain, _ = multiscale_cams(joint.classifier, images, [0.5, 1.0], True, made.SIZE)
    assert torch.equal(cam, plain)
    assert multiscale_cams(joint.classifier, images, [0.5, 1.5], True, made.SIZE, logits=True)[2] is None


def test_cam_to_label_equals_the_official_with_and_without_the_uncertain_band(data):
    cam = torch.from_numpy(OFFICIAL["ms_cam"])
    band = cam_to_label_band(cam, data["cls"], 0.7, 0.25, True)
    assert torch.equal(band, torch.from_numpy(OFFICIAL["band_label"]))
    assert torch.equal(cam_to_label(cam, data["cls"], 0.6, True), torch.from_numpy(OFFICIAL["bkg_label"]))


def test_par_pseudo_labels_equal_refine_cams_with_bkg_v2(data):
    """Softmax over [background, present classes] at half resolution, PAR, back up, the two thresholds."""
    cfg = validate_config({})["refine"]
    refiner = Refiner({**cfg, "affinity": False, "mask_voting": False}, True, made.N_CLASSES)
    labels = refiner.cam_labels(data["images"], torch.from_numpy(OFFICIAL["ms_cam"]), data["cls"])
    expected = torch.from_numpy(OFFICIAL["par_label"]).long()
    assert torch.equal(labels, expected), f"{int((labels != expected).sum())} of {labels.numel()} labels differ"
    old = Refiner({**cfg, "affinity": False, "mask_voting": False, "par_softmax": False}, True, made.N_CLASSES)
    assert not torch.equal(old.cam_labels(data["images"], torch.from_numpy(OFFICIAL["ms_cam"]), data["cls"]), expected)


def test_token_labels_linking_and_ptc_equal_dino_mask_and_get_masked_ptc_loss(data):
    """PTC targets from the multi-scale auxiliary CAM at the token grid, linked where the |cosine| of the
    frozen features exceeds the batch's mean (diagonal included), and the published PTC loss."""
    cam_aux = torch.from_numpy(OFFICIAL["ms_cam_aux"])
    x4 = torch.from_numpy(OFFICIAL["forward_x4"])
    valid = torch.ones(2, *made.SIZE, dtype=torch.bool)
    labels = band_labels_of(cam_aux, x4.shape[-2:], data["cls"], valid, 0.7, 0.25, True)
    assert torch.equal(labels, torch.from_numpy(OFFICIAL["token_label"]))
    pos, neg = pair_targets(labels.flatten(1), link_pairs(data["dino"], "batch_mean"))
    aff = torch.from_numpy(OFFICIAL["aff_mask"])
    assert torch.equal(pos, aff == 1) and torch.equal(neg, aff == 0)
    assert ptc_loss(x4, pos, neg).item() == pytest.approx(float(OFFICIAL["ptc_loss"]), rel=RTOL)


def _value_and_grad(fn, *tensors):
    leaves = [t.clone().requires_grad_(True) for t in tensors]
    loss = fn(*leaves)
    grads = torch.autograd.grad(loss, leaves, allow_unused=True)
    return loss, [torch.zeros_like(t) if g is None else g for t, g in zip(tensors, grads)]


def test_object_loss_equals_objectloss(data):
    """Ids renumbered per crop, ids 1..49, n/(n+1) scaling, MSE over all elements summed over ids."""
    loss, (grad,) = _value_and_grad(lambda s: object_loss_published(s, data["objects"], 49), data["logits"])
    assert loss.item() == pytest.approx(float(OFFICIAL["object_loss"]), rel=RTOL)
    close(grad, "object_grad", atol=1e-9)


def test_boundary_loss_published_form_equals_boundaryloss(data):
    loss, (grad,) = _value_and_grad(lambda s: boundary_loss_published(s, data["boundaries"]), data["logits"])
    assert loss.item() == pytest.approx(float(OFFICIAL["boundary_loss"]), rel=RTOL)
    assert grad.abs().sum() == 0  # published: the argmax passes no gradient


def test_energy_loss_equals_denseenergyloss_with_an_exact_kernel(data):
    """Value and gradient of the official formula (x 1e-7 / batch, gate, nearest image downscale, crop box);
    the official lattice filter replaced by the exact Gaussian in both (METHOD.md: the lattice is ~0.55x)."""
    h, w = made.SMALL
    valid = torch.zeros(2, h, w, dtype=torch.bool)
    for i, (y0, y1, x0, x1) in enumerate(data["box"].tolist()):
        valid[i, y0:y1, x0:x1] = True
    loss, (grad,) = _value_and_grad(
        lambda s: energy_loss_published(s, data["small_images"], data["labels"], 15, 100, 0.5, 1e-7, valid),
        data["logits"],
    )
    assert loss.item() == pytest.approx(float(OFFICIAL["energy_loss"]), rel=1e-4)  # float32 vs float64 sums
    close(grad, "energy_grad", rtol=1e-4, atol=1e-12)


def test_joint_loss_equals_jointloss(data):
    loss, (g_fg, g) = _value_and_grad(
        lambda f, s: joint_loss_published(s, f, data["labels"]), data["fg_logits"], data["logits"]
    )
    assert loss.item() == pytest.approx(float(OFFICIAL["joint_loss"]), rel=RTOL)
    close(g_fg, "joint_grad_fg", atol=1e-9)
    close(g, "joint_grad", atol=1e-9)


def test_balanced_cross_entropy_equals_get_seg_loss(data):
    loss, (grad,) = _value_and_grad(lambda s: balanced_cross_entropy(s, data["labels"], True), data["logits"])
    assert loss.item() == pytest.approx(float(OFFICIAL["seg_loss"]), rel=RTOL)
    close(grad, "seg_grad", atol=1e-9)


def test_learning_rate_schedule_equals_polywarmupadamw():
    cfg = validate_config({"classifier": {"iterations": 50, "lr": 1e-3, "lr_warmup_iterations": 10}})["classifier"]
    ours = np.array([[1e-3 * lr_factor(s, cfg), 8e-3 * lr_factor(s, cfg)] for s in range(50)])
    np.testing.assert_allclose(ours, OFFICIAL["lrs"], rtol=1e-9)


def test_sam_object_and_boundary_maps_equal_samaug(data):
    """Objects: by area, under 50 px skipped, 50 painted (smaller over larger); boundaries of all masks."""
    objects, boundaries = object_and_boundary_maps(data["masks"], made.SIZE, 50, 50)
    assert np.array_equal(boundaries * 255, OFFICIAL["sam_boundaries"])
    assert np.array_equal(objects, OFFICIAL["sam_objects"])


def test_position_embedding_never_trains_as_published(joint):
    """The official ViT sets pos_embed.requires_grad = False: the engine's optimiser never sees it."""
    from atsg.train.engine import Engine

    vit = joint.classifier.backbone.vit
    assert not vit.pos_embed.requires_grad and vit.cls_token.requires_grad
    cfg = published_config()["classifier"]
    engine = Engine(joint, cfg, torch.device("cpu"), Path("/nonexistent"), "f", "cam_miou", "t")
    trained = {id(p) for g in engine.opt.param_groups for p in g["params"]}
    assert id(vit.pos_embed) not in trained and id(vit.cls_token) in trained


def test_paper_mode_step_gates_losses_as_published(data):
    """Classification, PTC, CTC, object and boundary losses count from step 0; the pseudo-label
    cross-entropy, energy and joint losses only after step loss_warmup_iterations (n_iter <= W: x 0)."""
    from atsg.train.joint_objective import JointObjective

    vit = {
        "backbone": "deit_tiny_patch16_224",
        "pretrained": False,
        "random_init": True,
        "img_size": 32,
        "patch_size": 16,
        "embed_dim": 16,
        "depth": 3,
        "num_heads": 2,
    }
    cfg = validate_config(
        {
            "classifier": {
                **vit,
                "aux_layer": -2,
                "joint_segmentation": True,
                "linking": {"features": "self", "layer": 0},
                "ctc": {"local_crops": 2, "local_size": 16, "hidden_dim": 16, "bottleneck_dim": 8, "out_dim": 16},
            },
            "segmentation": {"loss_warmup_iterations": 2, "decoder_channels": 8, "energy_loss": {"scale": 0.25}},
        }
    )
    torch.manual_seed(0)
    model = factory.joint(
        factory.classifier(cfg["classifier"], 3, 3), cfg["classifier"]["ctc"], cfg["segmentation"], 4, foreground=True
    )
    objective = JointObjective(cfg, True, 3, 4)
    g = torch.Generator().manual_seed(1)
    image = torch.randint(0, 255, (2, 3, 64, 64), generator=g).float()
    batch = {
        "image": image,
        "local": image.clone(),
        "view2": image.flip(-1),
        "cls": data["cls"],
        "valid": torch.ones(2, 64, 64, dtype=torch.bool),
        "objects": torch.randint(0, 6, (2, 64, 64), generator=g),
        "boundaries": torch.randint(0, 2, (2, 64, 64), generator=g),
    }
    for step, on in ((0, False), (2, False), (3, True)):
        _, parts = objective(model, batch, step)
        assert parts["object"] != 0 and parts["boundary"] != 0 and parts["ptc"] > 0 and "ctc" in parts
        assert (parts["seg"] != 0, parts["energy"] != 0, parts["joint"] != 0) == (on, on, on), (step, parts)


def test_ctc_loss_equals_ctcloss_neg(data):
    """Raw dot products over the temperature, ToCo's for-else term, the published sums (computed in log space)."""
    from atsg.losses.contrast import ctc_loss_published

    loss, (grad,) = _value_and_grad(
        lambda st: ctc_loss_published(
            data["teacher"].view(2, 2, -1), st.view(10, 2, -1), data["ctc_flags"].bool(), 0.5
        ),
        data["student"],
    )
    assert loss.item() == pytest.approx(float(OFFICIAL["ctc_loss"]), rel=RTOL)
    close(grad, "ctc_grad_student", atol=1e-8)


def test_ctc_regions_crops_and_flags_equal_crop_from_roi_neg(data):
    """Region map of the auxiliary CAM (cam_to_roi_mask2) and the crops (one torch.randperm per image, the
    same draws as the official loop) with their positive / negative flags."""
    from atsg.train.crops import roi_crops, roi_map

    roi = roi_map(torch.from_numpy(OFFICIAL["ms_cam_aux"]), data["cls"], 0.25, 0.7)
    assert np.array_equal(roi.numpy(), OFFICIAL["roi"])
    torch.manual_seed(5)
    crops, flags = roi_crops(data["images"], data["roi"].short(), 6, 16, 0.2)
    close(crops, "roi_crops", atol=0)
    assert np.array_equal(flags.numpy(), OFFICIAL["roi_flags"][:, 2:].astype(bool))
    assert not flags.all()  # the fixture holds a negative crop


def _official_checkpoint(tmp_path: Path, joint, **replace) -> Path:
    """A checkpoint as the published training saves it: the network's state dict under DDP's module. prefix."""
    state = made.seeded_state(_official_shapes(joint))
    state.update(replace)
    path = tmp_path / "official.pth"
    torch.save({f"module.{k}": v for k, v in state.items()}, path)
    return path


def test_a_published_checkpoint_imports_and_gives_the_official_outputs(tmp_path, joint, data):
    """import_checkpoint: the official state dict -> a segmentation model file (what predict loads) and a
    classifier file; both give the official network's outputs on the same input."""
    import torch.nn.functional as F

    from atsg.stages.common import load_model_file
    from atsg.stages.import_checkpoint import run_import_checkpoint

    cfg = published_config(joint_segmentation=True)
    cfg = {**cfg, "dataset": {**cfg["dataset"], "classes": ["bg", "a", "b", "c"], "palette": [[0, 0, 0]] * 4}}
    summary = run_import_checkpoint(
        cfg, _official_checkpoint(tmp_path, joint), tmp_path / "seg.pt", tmp_path / "cls.pt"
    )
    assert summary["tensors"] == len(from_official(made.seeded_state(_official_shapes(joint))))
    seg = load_model_file(tmp_path / "seg.pt", "segmentation")
    fresh = {
        "pretrained": False,
        "checkpoint": None,
        "random_init": True,
    }  # as predict builds it: weights from the file
    segmenter = factory.segmenter({**seg["config"], **fresh}, 3, 4)
    segmenter.load_state_dict(seg["state_dict"])
    cls = load_model_file(tmp_path / "cls.pt", "classifier")
    classifier = factory.classifier({**cls["config"], **fresh}, 3, 3)
    classifier.load_state_dict(cls["state_dict"])
    with torch.no_grad():
        expected = F.interpolate(
            torch.from_numpy(OFFICIAL["forward_seg"]), size=made.SIZE, mode="bilinear", align_corners=False
        )
        np.testing.assert_allclose(segmenter.eval()(data["images"]).numpy(), expected.numpy(), rtol=RTOL, atol=1e-5)
        out = classifier.eval()(data["images"])
    close(out["maps"], "forward_cam", atol=1e-5)
    close(out["logits"], "forward_logits", atol=1e-5)


def test_a_checkpoint_of_another_class_count_is_a_one_line_error_naming_the_tensor(tmp_path, joint):
    from atsg.errors import DataError
    from atsg.stages.import_checkpoint import run_import_checkpoint

    cfg = published_config(joint_segmentation=True)
    cfg = {**cfg, "dataset": {**cfg["dataset"], "classes": ["bg", "a", "b", "c"], "palette": [[0, 0, 0]] * 4}}
    bad = _official_checkpoint(tmp_path, joint, **{"classifier.weight": torch.zeros(5, made.ARCH["embed_dim"], 1, 1)})
    with pytest.raises(DataError, match=r"tensor classifier.weight is \(5, 32, 1, 1\).*\(3, 32, 1, 1\)") as err:
        run_import_checkpoint(cfg, bad, tmp_path / "seg.pt")
    assert "\n" not in str(err.value) and not (tmp_path / "seg.pt").exists()


def test_linking_features_equal_dinofeaturizer(tmp_path, data):
    """The frozen DINO ViT's last block after its final norm, position embedding resampled DINO's way."""

    shapes = {k: tuple(v.shape) for k, v in _dino_shapes().items()}
    weights = tmp_path / "dino.pth"
    torch.save(made.seeded_state(shapes, seed=1), weights)
    cfg = validate_config({"classifier": {"linking": {"checkpoint": str(weights), "model_kwargs": made.DINO_ARCH}}})[
        "classifier"
    ]["linking"]
    linker = factory.linking_features(cfg, 3)
    grid = (made.SIZE[0] // 16, made.SIZE[1] // 16)
    close(linker(data["images"], grid), "dino_feat", atol=1e-5)
    pre = factory.linking_features({**cfg, "final_norm": False}, 3)(data["images"], grid)
    assert not np.allclose(pre.numpy(), OFFICIAL["dino_feat"], atol=1e-3)


def _dino_shapes():
    import timm

    vit = timm.create_model("vit_base_patch16_224.dino", pretrained=False, num_classes=0, **made.DINO_ARCH)
    return {k: v for k, v in vit.state_dict().items()}
