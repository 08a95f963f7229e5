"""Padding and nodata are one explicit valid mask (tiles.zarr/valid) that every stage honours: no label, no
CAM range, no object, no loss, no prediction; a black pixel that is data is kept (on the chain's artifacts)."""

import shutil

import numpy as np
import torch
import zarr
from conftest import tiny_config

from atsg.cam import minmax_normalise
from atsg.integrity import seal
from atsg.stages.extract_cams import run_extract_cams
from atsg.stages.generate_masks import run_generate_masks
from atsg.stages.predict import run_predict
from atsg.stages.refine_labels import run_refine_labels
from atsg.store import IGNORE, open_store
from atsg.train.datasets import TrainSamples
from atsg.train.segmentation_objective import SegmentationObjective


def test_minmax_normalise_takes_the_range_of_valid_pixels_only():
    cam = torch.tensor([[[[0.0, 2.0, 4.0, 100.0]]]])
    valid = torch.tensor([[[True, True, True, False]]])
    assert minmax_normalise(cam, valid, eps=0).tolist() == [[[[0.0, 0.5, 1.0, 0.0]]]]
    assert torch.equal(minmax_normalise(cam), minmax_normalise(cam, torch.ones_like(valid)))  # all valid: as before


def _tiles_with_a_hole(run, dest):
    """The chain's tiles with the left half of tile 0 made nodata (image 0 and valid 0 there), resealed."""
    tiles = shutil.copytree(run / "tiles.zarr", dest)
    g = zarr.open_group(str(tiles), mode="r+")
    valid, image, labels = g["valid"][0], g["images"][0], g["labels"][0]
    valid[:, :64], image[:, :, :64], labels[:, :64] = 0, 0, IGNORE
    g["valid"][0], g["images"][0], g["labels"][0] = valid, image, labels
    seal(tiles)
    return tiles


def test_every_stage_leaves_nodata_out(chain, tmp_path):
    _, _, run = chain
    cfg = tiny_config()
    tiles = _tiles_with_a_hole(run, tmp_path / "tiles.zarr")
    run_extract_cams(cfg, tiles, run / "classifier" / "model.pt", tmp_path / "cams.zarr")
    cams = open_store(tmp_path / "cams.zarr", "cams")
    cam = cams["cams"][0].astype(np.float32)  # (classes, 32, 32): stride 4
    assert (cam[:, :, :16] == 0).all() and np.isclose(cam[:, :, 16:].max(), 1.0, atol=1e-3)
    run_generate_masks(cfg, tiles, tmp_path / "masks.zarr")
    masks = open_store(tmp_path / "masks.zarr", "masks")
    assert (masks["objects"][0][:, :64] == 0).all() and (masks["boundaries"][0][:, :64] == 0).all()
    run_refine_labels(
        cfg,
        tiles,
        tmp_path / "cams.zarr",
        tmp_path / "masks.zarr",
        run / "classifier" / "model.pt",
        tmp_path / "pseudo_labels.zarr",
    )
    pseudo = open_store(tmp_path / "pseudo_labels.zarr", "pseudo_labels")["labels"][0]
    assert (pseudo[:, :64] == IGNORE).all() and (pseudo[:, 64:] != IGNORE).any()
    run_predict(cfg, tiles, run / "segmentation" / "model.pt", tmp_path / "predictions.zarr", tmp_path / "tifs")
    pred = open_store(tmp_path / "predictions.zarr", "predictions")["labels"][0]
    assert (pred[:, :64] == IGNORE).all() and (pred[:, 64:] < 6).all()


def test_training_samples_carry_the_valid_mask_and_losses_skip_it(chain, tmp_path):
    _, _, run = chain
    cfg = tiny_config()
    tiles = _tiles_with_a_hole(run, tmp_path / "tiles.zarr")
    c = {**cfg["segmentation"], "scale_range": [1.0, 1.0], "flip": False, "crop_size": 128}
    samples = TrainSamples(tiles, np.array([0]), c, "truth")
    sample = samples[0]
    assert sample["valid"].dtype == torch.bool and not sample["valid"][:, :64].any() and sample["valid"][:, 64:].all()
    c = {**c, "crop_size": 160}  # larger than the tile: the crop's own padding is invalid too
    assert samples.__class__(tiles, np.array([0]), c, "truth")[0]["valid"].sum() == 128 * 64
    # a truly black but valid crop is trained on: the energy term sees its pixels
    objective = SegmentationObjective(
        {**cfg["segmentation"], "joint_loss": {"enabled": False, "weight": 0.3}}, True, supervised=False
    )
    logits = torch.randn(1, 6, 16, 16, requires_grad=True)
    black = {
        "image": torch.zeros(1, 3, 16, 16),
        "valid": torch.ones(1, 16, 16, dtype=torch.bool),
        "objects": torch.ones(1, 16, 16, dtype=torch.long),
        "boundaries": torch.zeros(1, 16, 16, dtype=torch.long),
    }
    loss, parts = objective.loss(logits, None, black, torch.zeros(1, 16, 16, dtype=torch.long), 10**6)
    assert parts["energy"] != 0.0
    nodata = {**black, "valid": torch.zeros(1, 16, 16, dtype=torch.bool)}
    _, parts = objective.loss(logits, None, nodata, torch.zeros(1, 16, 16, dtype=torch.long), 10**6)
    assert parts["energy"] == 0.0 and parts["object"] == 0.0
