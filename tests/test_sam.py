"""The SAM path end to end with a tiny randomly initialised SAM built from segment_anything's modules."""

import numpy as np
import pytest
import torch
import zarr

from atsg.config import validate_config
from atsg.errors import ConfigError
from atsg.masks.generate import SamGenerator
from atsg.models.sam import build_sam_model, load_sam
from atsg.stages.masks import run_generate_masks
from atsg.store import base_attrs, create_tile_store, open_store


@pytest.fixture(scope="module")
def tiny_sam(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("sam") / "sam_tiny.pth"
    torch.save(build_sam_model("vit_tiny").state_dict(), path)
    return path


def _tiles(path, n=2, size=64):
    g = create_tile_store(path, n, 3, size, 5, 3)
    rng = np.random.default_rng(0)
    img = np.zeros((n, 3, size, size), np.uint8)
    img[:, :, : size // 2] = 200
    g["images"][:] = img + rng.integers(0, 20, img.shape, dtype=np.uint8)
    g.attrs.update({**base_attrs("tiles", {}), "classes": list("abcdef"), "background": True,
                    "target_classes": list("bcdef")})
    return path


def _cfg(checkpoint, **extra):
    return validate_config({"masks": {"generator": "sam", "sam_model_type": "vit_tiny", "sam_checkpoint": str(checkpoint),
                                      "points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0,
                                      "min_area": 1, "device": "cpu", **extra}})


def test_sam_generator_returns_masks_from_the_official_generator(tiny_sam):
    gen = SamGenerator(_cfg(tiny_sam)["masks"], torch.device("cpu"))
    masks = [r["segmentation"] for r in gen.generator.generate(np.zeros((64, 64, 3), np.uint8) + 100)]
    assert len(masks) > 0 and masks[0].shape == (64, 64)


def test_generate_masks_with_sam_writes_the_store(tmp_path, tiny_sam):
    tiles = _tiles(tmp_path / "tiles.zarr")
    summary = run_generate_masks(_cfg(tiny_sam), tiles, tmp_path / "masks.zarr")
    g = open_store(tmp_path / "masks.zarr", "masks")
    assert g["objects"].shape == (2, 64, 64) and g["objects"].dtype == np.uint16
    assert g["boundaries"].dtype == np.uint8 and g["objects"].chunks == (1, 64, 64)
    assert g.attrs["generator"] == "sam" and len(g.attrs["checkpoint_sha256"]) == 64
    assert g.attrs["parameters"]["points_per_side"] == 4
    objects, boundaries = g["objects"][:], g["boundaries"][:]
    assert objects.max() >= 1 and summary["mean_objects"] >= 1
    assert (objects[boundaries == 1] == 0).all()


def test_missing_sam_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="masks.sam_checkpoint"):
        load_sam("vit_h", None, torch.device("cpu"))
    with pytest.raises(ConfigError, match="masks.sam_checkpoint.*does not exist"):
        load_sam("vit_h", str(tmp_path / "sam_vit_h_4b8939.pth"), torch.device("cpu"))


def test_checkpoint_of_another_model_type_is_a_clear_error(tiny_sam):
    with pytest.raises(ConfigError, match="masks.sam_model_type"):
        load_sam("vit_b", str(tiny_sam), torch.device("cpu"))
