"""The SAM path end to end with a tiny randomly initialised SAM built from segment_anything's modules."""

import numpy as np
import pytest
import torch
import zarr

from atsg import factory
from atsg.config import validate_config
from atsg.errors import ConfigError
from atsg.integrity import seal
from atsg.masks.generate import SamGenerator
from atsg.models.sam import build_sam_model
from atsg.stages.generate_masks import run_generate_masks
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
    g["labels"][:] = 255
    g["valid"][:] = 1
    g.attrs.update(
        {**base_attrs("tiles", {}), "classes": list("abcdef"), "background": True, "target_classes": list("bcdef")}
    )
    seal(path)
    return path


def _cfg(checkpoint, **extra):
    return validate_config(
        {
            "masks": {
                "generator": "sam",
                "sam_model_type": "vit_tiny",
                "sam_checkpoint": str(checkpoint),
                "points_per_side": 4,
                "pred_iou_thresh": 0.0,
                "stability_score_thresh": 0.0,
                "min_area": 1,
                "device": "cpu",
                **extra,
            }
        }
    )


def _official(sam, m):
    from segment_anything import SamAutomaticMaskGenerator

    return SamAutomaticMaskGenerator(
        sam,
        points_per_side=m["points_per_side"],
        points_per_batch=m["points_per_batch"],
        pred_iou_thresh=m["pred_iou_thresh"],
        stability_score_thresh=m["stability_score_thresh"],
        stability_score_offset=m["stability_score_offset"],
        box_nms_thresh=m["box_nms_thresh"],
        crop_n_layers=0,
        output_mode="binary_mask",
    )


def _image(size=64, seed=0):
    rng = np.random.default_rng(seed)
    img = np.zeros((size, size, 3), np.uint8) + 60
    img[:, : size // 2] = 200
    img[size // 4 : size // 2, size // 2 : 3 * size // 4] = 120
    return (img + rng.integers(0, 20, img.shape)).astype(np.uint8)


@pytest.mark.parametrize(
    "settings",
    [
        dict(box_nms_thresh=1.0, points_per_batch=7),  # every candidate kept, batches of uneven size
        dict(
            pred_iou_thresh=0.08, stability_score_thresh=0.9, stability_score_offset=0.001, box_nms_thresh=1.0
        ),  # filters that drop some candidates
        dict(),  # the NMS merges candidates
    ],
)
def test_grid_generator_makes_the_official_generators_masks(tiny_sam, settings):
    from atsg.masks.sam_auto import GridMaskGenerator

    sam = factory.sam("vit_tiny", str(tiny_sam), torch.device("cpu"))
    images = [_image(64, 0), _image(64, 1)]
    m = _cfg(tiny_sam, **settings)["masks"]
    generator = GridMaskGenerator(sam, m, timed=True)
    got = generator.generate(images)
    assert generator.model_seconds > 0
    for image, masks in zip(images, got):
        expected = [r["segmentation"] for r in _official(sam, m).generate(image)]
        assert masks.dtype == bool and masks.shape == (len(expected), 64, 64)
        assert all(np.array_equal(a, b) for a, b in zip(masks, expected))
    if settings.get("stability_score_thresh"):
        assert 0 < len(got[0]) < 3 * 16
    elif settings.get("box_nms_thresh") == 1.0:
        assert len(got[0]) == 3 * 16


def test_sam_generator_maps_equal_the_published_construction(tiny_sam):
    from oracles import per_mask_maps

    m = _cfg(tiny_sam, box_nms_thresh=1.0)["masks"]
    gen = SamGenerator(m, torch.device("cpu"))
    tiles = np.stack([np.moveaxis(_image(64, s), -1, 0) for s in range(3)])
    for tile, (objects, boundaries) in zip(tiles, gen.maps(tiles)):
        masks = [r["segmentation"] for r in _official(gen.sam, m).generate(np.moveaxis(tile, 0, -1).copy())]
        expected = per_mask_maps(masks, (64, 64), m["min_area"], m["max_objects"])
        assert np.array_equal(objects, expected[0]) and np.array_equal(boundaries, expected[1])


def test_crop_layers_use_the_official_generator_and_bf16_encoder_runs(tiny_sam):
    gen = SamGenerator(_cfg(tiny_sam, crop_n_layers=1)["masks"], torch.device("cpu"))
    assert gen.official is not None and gen.model_seconds is None
    objects, boundaries = gen.maps(np.moveaxis(_image(64), -1, 0)[None])[0]
    assert objects.shape == (64, 64) and boundaries.dtype == np.uint8
    bf16 = SamGenerator(_cfg(tiny_sam, encoder_precision="bf16")["masks"], torch.device("cpu"))
    assert bf16.maps(np.moveaxis(_image(64), -1, 0)[None])[0][0].shape == (64, 64)
    with pytest.raises(ConfigError, match="masks.scene_windows"):
        SamGenerator(_cfg(tiny_sam, crop_n_layers=1, scene_windows=True)["masks"], torch.device("cpu"))


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
        factory.sam("vit_h", None, torch.device("cpu"))
    with pytest.raises(ConfigError, match="masks.sam_checkpoint.*does not exist"):
        factory.sam("vit_h", str(tmp_path / "sam_vit_h_4b8939.pth"), torch.device("cpu"))


def test_checkpoint_of_another_model_type_is_a_clear_error(tiny_sam):
    with pytest.raises(ConfigError, match="masks.sam_model_type"):
        factory.sam("vit_b", str(tiny_sam), torch.device("cpu"))


def test_scene_windows_run_sam_once_per_window_at_native_resolution(tmp_path, tiny_sam):
    from atsg.masks.generate import _rgb
    from atsg.masks.windows import cut, paste
    from atsg.stages.generate_masks import GenerateMasks

    path = _tiles(tmp_path / "tiles.zarr", n=25, size=64)  # one scene of 5 x 5 tiles; vit_tiny's input is 256 px
    g = zarr.open_group(str(path), mode="r+")
    g.attrs["tiles"] = {"scene": ["s"] * 25, "window": [[64 * (i // 5), 64 * (i % 5), 64, 64] for i in range(25)]}
    cfg = _cfg(tiny_sam, scene_windows=True, box_nms_thresh=1.0)
    stage = GenerateMasks(cfg, path, tmp_path / "masks.zarr", timed=True)
    assert [len(u) for u in stage.units()] == [16, 4, 4, 1]
    summary = run_generate_masks(cfg, path, tmp_path / "masks.zarr")
    out = open_store(tmp_path / "masks.zarr", "masks")
    assert out.attrs["parameters"]["scene_windows"] is True and summary["tiles"] == 25
    # tile 6 (row 1, col 1) has the masks of the first window cut to it
    gen = SamGenerator(cfg["masks"], torch.device("cpu"))
    window = stage.windows()[0]
    images = g["images"][:][window.tiles]
    (stack,) = gen.mask_stacks([_rgb(paste(window, images))], native=True)
    assert stack.shape[1:] == (256, 256)
    k = list(window.tiles).index(6)
    from atsg.masks.maps import object_and_boundary_maps

    objects, boundaries = object_and_boundary_maps(cut(stack, window.offsets[k], (64, 64)), (64, 64), 1, 50)
    assert np.array_equal(out["objects"][6], objects) and np.array_equal(out["boundaries"][6], boundaries)
    with pytest.raises(ConfigError, match="masks.scene_windows"):
        GenerateMasks(
            validate_config({"masks": {"scene_windows": True, "generator": "felzenszwalb"}}), path, tmp_path / "m2.zarr"
        ).units()
