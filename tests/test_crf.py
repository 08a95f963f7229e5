"""The published inference: its dense CRF (equal to pydensecrf, independent per tile, blind to nodata, what
predict and map apply on the chain's model) and its input size (tiles resized to the training crop)."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_config

from atsg.crf import dense_crf
from atsg.inference import input_scale, predict_probs, segment_probs
from atsg.lattice import PermutohedralLattice
from atsg.stages.common import Tiles, read_tiles
from atsg.stages.predict import run_predict
from atsg.stages.train_classifier import ClassifierValidation, load_classifier
from atsg.stages.train_segmentation import SegmentationValidation, load_segmenter
from atsg.store import open_store

FIXTURES = Path(__file__).parent / "fixtures" / "densecrf"
_spec = importlib.util.spec_from_file_location("make_densecrf_fixtures", FIXTURES / "make_densecrf_fixtures.py")
made = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(made)
REFERENCE = dict(np.load(FIXTURES / "densecrf.npz"))
PUBLISHED = made.CASES["rgb"]["settings"]


@pytest.mark.parametrize("case", sorted(made.CASES))
def test_dense_crf_equals_pydensecrf(case):
    """pydensecrf's marginals (the published DenseCRF call; four bands through its general DenseCRF)."""
    images, probs = REFERENCE[f"{case}_images"], REFERENCE[f"{case}_probs"]
    expected = REFERENCE[f"{case}_q"]
    q = dense_crf(torch.from_numpy(images), torch.from_numpy(probs), made.CASES[case]["settings"]).numpy()
    err = np.abs(q - expected)
    assert err.max() < 5e-3 and err.mean() < 1e-5, (err.max(), err.mean())
    assert np.array_equal(q.argmax(1), expected.argmax(1))
    assert (expected.argmax(1) != probs.argmax(1)).mean() > 0.2  # the CRF changes these labels a lot


def test_the_defaults_are_the_published_inference_settings():
    crf = tiny_config()["predict"]["crf"]
    assert crf["enabled"] and {k: v for k, v in crf.items() if k != "enabled"} == PUBLISHED
    assert tiny_config()["map"]["crf"] == crf


def test_each_tile_is_its_own_crf_and_nodata_sends_no_messages():
    images = torch.from_numpy(REFERENCE["rgb_images"])
    probs = torch.from_numpy(REFERENCE["rgb_probs"])
    both = dense_crf(images, probs, PUBLISHED)
    for i in range(2):  # a batch is the tiles one by one: no message crosses from one tile to another
        alone = dense_crf(images[i : i + 1], probs[i : i + 1], PUBLISHED)
        assert torch.allclose(both[i : i + 1], alone, atol=1e-5)
    valid = torch.ones(2, 32, 48, dtype=torch.bool)
    valid[:, :, :20] = False
    q = dense_crf(images, probs, PUBLISHED, valid)
    other_images, other_probs = images.clone(), probs.clone()
    other_images[:, :, :, :20] = 255 - other_images[:, :, :, :20]
    other_probs[:, :, :, :20] = other_probs[:, :, :, :20].flip(1)
    q2 = dense_crf(other_images, other_probs, PUBLISHED, valid)
    assert torch.allclose(q[..., 20:], q2[..., 20:], atol=1e-5)
    assert not torch.allclose(dense_crf(other_images, other_probs, PUBLISHED)[..., 20:], q[..., 20:], atol=1e-3)
    corner = torch.zeros(2, 32, 48, dtype=torch.bool)  # mostly nodata, far from the data: still finite
    corner[:, :4, :4] = True
    assert torch.isfinite(dense_crf(images, probs, PUBLISHED, corner)).all()


def test_the_crf_snaps_noisy_probabilities_to_colour_edges():
    """Two flat colour regions, probabilities right on average but noisy: the CRF labels the regions."""
    g = torch.Generator().manual_seed(0)
    truth = torch.zeros(1, 40, 40, dtype=torch.long)
    truth[:, :, 17:] = 1
    images = torch.where(truth[:, None].bool(), 200, 60).expand(1, 3, 40, 40).to(torch.uint8)
    logits = 0.8 * torch.nn.functional.one_hot(truth, 2).permute(0, 3, 1, 2) + torch.randn(1, 2, 40, 40, generator=g)
    probs = logits.softmax(1)
    before = (probs.argmax(1) == truth).float().mean()
    after = (dense_crf(images, probs, PUBLISHED).argmax(1) == truth).float().mean()
    assert before < 0.8 and after > 0.99


def test_the_lattice_blurs_like_a_gaussian():
    """Filtering a point mass spreads it over near points by distance (the lattice approximates a unit Gaussian)."""
    g = torch.Generator().manual_seed(1)
    points = torch.rand(1, 400, 3, generator=g) * 4
    lattice = PermutohedralLattice(points)
    values = torch.zeros(1, 400, 1)
    values[0, 0] = 1.0
    out = lattice.filter(values)[0, :, 0]
    exact = torch.exp(-0.5 * (points[0] - points[0, 0]).pow(2).sum(1))
    assert torch.corrcoef(torch.stack([out, exact]))[0, 1] > 0.9
    with pytest.raises(ValueError, match="batch, points, dims"):
        PermutohedralLattice(points[0])


def test_predict_applies_the_crf_to_the_models_probabilities(chain, tmp_path):
    _, _, run = chain
    cfg = tiny_config()
    model_path = run / "segmentation" / "model.pt"
    off = {**cfg, "predict": {**cfg["predict"], "crf": {**cfg["predict"]["crf"], "enabled": False}}}
    run_predict(off, run / "tiles.zarr", model_path, tmp_path / "off.zarr", None)
    tiles = Tiles.open(run / "tiles.zarr")
    model, _ = load_segmenter(model_path, tiles, torch.device("cpu"))
    idx = np.arange(tiles.n)
    images = torch.from_numpy(read_tiles(tiles.group["images"], idx))
    valid = torch.from_numpy(read_tiles(tiles.group["valid"], idx) > 0)
    probs = predict_probs(model, images)
    with_crf = segment_probs(model, images, cfg["predict"], valid)
    assert torch.allclose(with_crf, dense_crf(images, probs, cfg["predict"]["crf"], valid))
    chain_labels = open_store(run / "predictions.zarr", "predictions")["labels"][:]
    off_labels = open_store(tmp_path / "off.zarr", "predictions")["labels"][:]
    assert np.array_equal(chain_labels, with_crf.argmax(1).numpy())  # the chain's predict ran the CRF
    assert np.array_equal(off_labels, probs.argmax(1).numpy())
    assert (chain_labels != off_labels).any()


class _Recorder(torch.nn.Module):
    """Logits that are the image's first band (so the output follows the input), recording the input sizes."""

    def __init__(self):
        super().__init__()
        self.sizes = []

    def forward(self, x):
        self.sizes.append(tuple(x.shape[-2:]))
        return torch.stack([x[:, 0], 255 - x[:, 0]], 1) / 50


def test_tiles_are_resized_to_the_input_size_and_back():
    """Published: every tile resized to the training crop before the network; scales apply on top of it."""
    images = torch.from_numpy(REFERENCE["rgb_images"][:, :, :32, :32].copy())
    settings = {"scales": [1.0, 0.5], "flip": False, "input_size": "crop", "crf": {"enabled": False}}
    model = _Recorder()
    probs = segment_probs(model, images, settings, crop_size=40)
    assert model.sizes == [(40, 40), (20, 20)] and probs.shape == (2, 2, 32, 32)
    model.sizes.clear()
    segment_probs(model, images, {**settings, "input_size": None, "scales": [1.0]})
    segment_probs(model, images, {**settings, "input_size": 48, "scales": [1.0]})
    assert model.sizes == [(32, 32), (48, 48)]
    assert input_scale("crop", 256, 320) == 1.25  # Potsdam: 256 px tiles, crop 320
    with pytest.raises(ValueError, match="crop size"):
        input_scale("crop", 256, None)


def test_checkpoints_are_chosen_at_the_validation_input_size(chain):
    """Published validate(): val tiles resized to the training crop; segmentation.val_input_size says so."""
    _, _, run = chain
    tiles = Tiles.open(run / "tiles.zarr")
    side = tiles.size[-1]
    idx = np.arange(min(tiles.n, 6))
    for setting, seen in (("crop", 40), (None, side), (24, 24)):
        model = _Recorder()
        scores = SegmentationValidation(tiles, idx, 4, torch.device("cpu"), setting, 40)(model)
        assert set(model.sizes) == {(seen, seen)} and 0 <= scores["miou"] <= 1
    assert tiny_config()["segmentation"]["val_input_size"] is None  # as the demo's predict.input_size


class _SeenClassifier(torch.nn.Module):
    """A trained classifier that records the inputs of its forward passes and of its CAM passes."""

    def __init__(self, classifier):
        super().__init__()
        self.inner, self.backbone, self.seen = classifier, classifier.backbone, []

    def forward(self, x):
        self.seen.append(("forward", *x.shape[-3:]))
        return self.inner(x)

    def cams(self, x, groups=None):
        self.seen.append(("cams", x.shape[0], *x.shape[-2:]))
        return self.inner.cams(x, groups)


class _Trainee(torch.nn.Module):
    """What the engine validates: the classifier under ``.classifier``, its forward the classifier's."""

    def __init__(self, classifier):
        super().__init__()
        self.classifier = classifier

    def forward(self, x):
        return self.classifier(x)


def test_classifier_checkpoints_are_scored_on_the_published_validation_cam(chain):
    """Published validate(): val tiles resized to the training crop, the multi-scale CAM with flips (as CAM
    extraction makes it); classifier.val_input_size and val_cam say so, and the single-scale CAM at the
    tile's own size is the cheaper alternative."""
    _, _, run = chain
    tiles = Tiles.open(run / "tiles.zarr")
    side, idx = tiles.size[-1], np.arange(min(tiles.n, 4))
    classifier, _ = load_classifier(run / "classifier" / "model.pt", tiles, torch.device("cpu"))
    c = {**tiny_config()["classifier"], "batch_size": 4, "cam_scales": [1.0, 0.5, 1.5], "bkg_candidates": [0.2]}
    scores = {}
    for val_cam, size, seen in (
        ("multiscale", "crop", {("forward", 3, 40, 40), ("cams", 8, 40, 40), ("cams", 8, 20, 20), ("cams", 8, 60, 60)}),
        ("single", None, {("forward", 3, side, side)}),
    ):
        model = _SeenClassifier(classifier)
        cfg = {**c, "val_cam": val_cam, "val_input_size": size, "crop_size": 40}
        scores[val_cam] = ClassifierValidation(tiles, idx, cfg, torch.device("cpu"))(_Trainee(model))
        assert set(model.seen) == seen
        assert 0 <= scores[val_cam]["cam_miou"] <= 1 and 0 <= scores[val_cam]["f1"] <= 1
    assert scores["multiscale"]["cam_miou"] != scores["single"]["cam_miou"]
