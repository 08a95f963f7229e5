"""Photometric augmentation and the class-token contrast's views (atsg/train/views.py)."""

import numpy as np
import pytest
import torch

from atsg.config import validate_config
from atsg.train.views import augment_main, photometric, random_resized_crop, second_global_view

AUG = validate_config({})["classifier"]["augment"]
CTC = validate_config({})["classifier"]["ctc"]


def _image(seed=0, bands=3, size=32):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(bands, size, size, generator=g) * 255).round()


def test_nothing_happens_at_probability_zero_and_the_published_main_view_changes_the_image():
    image = _image()
    off = {**AUG, "color_jitter": 0.0, "grayscale": 0.0, "blur": 0.0}
    assert torch.allclose(photometric(image, np.random.default_rng(0), off, 0.0), image, atol=1e-4)
    assert torch.equal(augment_main(image, np.random.default_rng(0), {**AUG, "enabled": False}), image)
    out = augment_main(image, np.random.default_rng(0), AUG)
    assert out.shape == image.shape and 0 <= out.min() and out.max() <= 255 and not torch.allclose(out, image)
    again = augment_main(image, np.random.default_rng(0), AUG)
    assert torch.equal(out, again)  # every draw from the sample's generator


def test_greyscale_and_jitter_happen_at_their_published_rates():
    image = _image()
    only_grey = {**AUG, "color_jitter": 0.0, "blur": 0.0}
    rng = np.random.default_rng(1)
    grey = [
        bool(torch.allclose((o := photometric(image, rng, only_grey, 0.0))[0], o[1]) and torch.allclose(o[1], o[2]))
        for _ in range(500)
    ]
    assert np.mean(grey) == pytest.approx(0.2, abs=0.05)
    only_jitter = {**AUG, "grayscale": 0.0, "blur": 0.0}
    changed = [not torch.allclose(photometric(image, rng, only_jitter, 0.0), image, atol=1e-3) for _ in range(500)]
    assert np.mean(changed) == pytest.approx(0.8, abs=0.05)


def test_blur_always_smooths_at_probability_one_and_solarize_inverts_bright_pixels():
    image = _image()
    only_blur = {**AUG, "color_jitter": 0.0, "grayscale": 0.0}
    rng = np.random.default_rng(2)
    for _ in range(20):
        out = photometric(image, rng, only_blur, 1.0)
        assert out.diff(dim=-1).abs().mean() < image.diff(dim=-1).abs().mean()
    off = {**AUG, "color_jitter": 0.0, "grayscale": 0.0}
    flat = torch.tensor([[[10.0, 127.0, 128.0, 250.0]]])
    out = photometric(flat, np.random.default_rng(0), off, 0.0, solarize=1.0)
    assert torch.allclose(out, torch.tensor([[[10.0, 127.0, 127.0, 5.0]]]), atol=1e-3)


def test_multispectral_images_get_brightness_contrast_and_blur_only():
    image = _image(bands=5)
    out = augment_main(image, np.random.default_rng(3), AUG)
    assert out.shape == (5, 32, 32) and torch.isfinite(out).all()


def test_random_resized_crop_draws_area_and_aspect_as_torchvision():
    image = _image(size=64)
    rng = np.random.default_rng(4)
    for _ in range(20):
        view = random_resized_crop(image, rng, 48, (0.4, 1.0))
        assert view.shape == (3, 48, 48) and 0 <= view.min() and view.max() <= 255
    view = second_global_view(image, np.random.default_rng(5), 40, AUG, CTC)
    assert view.shape == (3, 40, 40)


def test_classifier_samples_carry_the_ctc_views_only_in_the_published_form(chain):
    from conftest import tiny_config

    from atsg.train.datasets import TrainSamples

    _, _, run = chain
    c = tiny_config()["classifier"]
    samples = TrainSamples(run / "tiles.zarr", np.array([0, 1]), c, "cls")
    a, b = samples[7], samples[7]
    crop = c["crop_size"]
    assert a["local"].shape == a["view2"].shape == a["image"].shape == (3, crop, crop)
    assert all(torch.equal(a[k], b[k]) for k in ("image", "local", "view2"))  # fixed by (seed, sample)
    assert not torch.equal(a["local"], a["image"])  # separately jittered copies of the crop
    old = TrainSamples(run / "tiles.zarr", np.array([0, 1]), {**c, "ctc": {**c["ctc"], "form": "atsg"}}, "cls")
    assert "local" not in old[7] and "view2" not in old[7]
    seg = TrainSamples(run / "tiles.zarr", np.array([0, 1]), tiny_config()["segmentation"], "truth")
    assert "local" not in seg[7]
