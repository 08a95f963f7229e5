import tracemalloc

import numpy as np
import pytest
import rasterio

from atsg.data.tiling import grid_positions, run_tile
from atsg.store import IGNORE, open_store, tile_georef
from conftest import preset_config
from fixtures import make_potsdam, write_raster

TRAIN, TEST = ["2_10", "2_11", "3_10"], ["2_13"]


def test_grid_positions_cover_the_scene():
    assert grid_positions(256, 256, 256) == [0]
    assert grid_positions(100, 256, 256) == [0]
    assert grid_positions(600, 256, 256) == [0, 256, 512]
    assert grid_positions(512, 256, 128) == [0, 128, 256]
    assert grid_positions(513, 256, 128) == [0, 128, 256, 384]


@pytest.fixture
def potsdam(tmp_path):
    truth = make_potsdam(tmp_path / "potsdam", TRAIN + TEST + ["9_9"], size=(300, 260))
    cfg = preset_config("potsdam", tmp_path / "potsdam",
                        tiling={"size": 128, "stride": 128, "min_pixels": 1},
                        split={"train": ["2_10", "2_11"], "val": ["3_10"], "test": TEST})
    out = tmp_path / "tiles.zarr"
    summary = run_tile(cfg, out, tmp_path / "potsdam")
    return truth, cfg, out, summary


def test_potsdam_store_schema(potsdam):
    truth, cfg, out, summary = potsdam
    g = open_store(out, "tiles")
    # 300x260 px with 128 px tiles: 3 rows x 3 cols per scene; the unlisted scene 9_9 is skipped
    assert summary["tiles"] == 4 * 9 and summary["scenes"] == 4
    assert g["images"].shape == (36, 3, 128, 128) and g["images"].dtype == np.uint8
    assert g["labels"].shape == (36, 128, 128) and g["labels"].dtype == np.uint8
    assert g["cls_labels"].shape == (36, 5) and g["split"].shape == (36,)
    assert g["images"].chunks == (1, 3, 128, 128) and g["labels"].chunks == (1, 128, 128)
    attrs = g.attrs
    assert attrs["classes"][2] == "building" and attrs["palette"][2] == [0, 0, 255]
    assert attrs["tile_size"] == 128 and attrs["stride"] == 128 and attrs["bands"] == ["R", "G", "B"]
    assert attrs["config"]["tiling"]["size"] == 128 and attrs["atsg_version"]
    assert [s["id"] for s in attrs["scenes"]] == ["2_10", "2_11", "2_13", "3_10"]


def test_tiles_hold_the_source_pixels_and_padding(potsdam):
    truth, cfg, out, _ = potsdam
    g = open_store(out, "tiles")
    scenes = [s["id"] for s in g.attrs["scenes"]]
    k = scenes.index("2_11") * 9 + 5  # row 1, col 2 of scene 2_11: window rows 128..256, cols 256..260
    image, labels = truth["2_11"]
    assert g.attrs["tiles"]["scene"][k] == "2_11"
    assert g.attrs["tiles"]["window"][k] == [128, 256, 128, 128]
    np.testing.assert_array_equal(g["images"][k][:, :, :4], image[:, 128:256, 256:260])
    np.testing.assert_array_equal(g["labels"][k][:, :4], labels[128:256, 256:260])
    assert (g["labels"][k][:, 4:] == IGNORE).all() and (g["images"][k][:, :, 4:] == 0).all()
    last = scenes.index("2_11") * 9 + 8  # bottom-right: 44 x 4 valid pixels
    assert (g["labels"][last] != IGNORE).sum() == 44 * 4


def test_image_level_labels_and_splits(potsdam):
    truth, cfg, out, _ = potsdam
    g = open_store(out, "tiles")
    labels = g["labels"][:]
    cls = g["cls_labels"][:]
    for k in range(len(cls)):
        present = set(np.unique(labels[k])) - {IGNORE, 0}
        assert set(np.flatnonzero(cls[k]) + 1) == present
    split = g["split"][:]
    by_scene = {s["id"]: s["split"] for s in g.attrs["scenes"]}
    assert by_scene == {"2_10": "train", "2_11": "train", "3_10": "val", "2_13": "test"}
    assert (split == 2).sum() == 9 and (split == 1).sum() == 9 and (split == 0).sum() == 18


def test_tile_georeference(potsdam):
    truth, cfg, out, _ = potsdam
    g = open_store(out, "tiles")
    scene = g.attrs["scenes"][0]
    with rasterio.open(scene["image"]) as src:
        expected = src.transform @ rasterio.Affine.translation(128, 256)
        crs = src.crs.to_string()
    k = 7  # row 2 (256), col 1 (128)
    tile_crs, transform = tile_georef(g.attrs, k)
    assert tile_crs == crs == "EPSG:32633"
    assert transform == pytest.approx(tuple(expected)[:6])


def test_min_pixels_drops_slivers(tmp_path):
    labels = np.full((64, 64), 1, np.uint8)
    labels[:2, :3] = 5  # 6 px of car
    palette = np.array(preset_config("potsdam")["dataset"]["palette"], np.uint8)
    write_raster(tmp_path / "d" / "2_Ortho_RGB" / "top_potsdam_2_10_RGB.tif", np.zeros((3, 64, 64), np.uint8))
    write_raster(tmp_path / "d" / "5_Labels_all" / "top_potsdam_2_10_label.tif", palette[labels].transpose(2, 0, 1))
    for min_pixels, has_car in ((6, 1), (7, 0)):
        cfg = preset_config("potsdam", tmp_path / "d", tiling={"size": 64, "stride": 64, "min_pixels": min_pixels})
        run_tile(cfg, tmp_path / f"t{min_pixels}.zarr", tmp_path / "d")
        assert open_store(tmp_path / f"t{min_pixels}.zarr", "tiles")["cls_labels"][0].tolist() == [1, 0, 0, 0, has_car]


def _tiling_peak(tmp_path, side: int) -> int:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, size=(3, side, side), dtype=np.uint8)
    write_raster(tmp_path / f"d{side}" / "images" / "big.tif", image, tiled=True)
    del image
    cfg = preset_config("folder", tmp_path / f"d{side}", dataset={"labels": None, "classes": ["bg", "x"]},
                        tiling={"size": 128, "stride": 128}, split={"ratios": [1, 0, 0]})
    tracemalloc.start()
    run_tile(cfg, tmp_path / f"t{side}.zarr", tmp_path / f"d{side}")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def test_tiling_memory_is_flat_in_scene_size(tmp_path):
    """Pixels are held a few tiles at a time; what grows with the scene is the per-tile metadata (windows,
    transforms: about 3 KB a tile), never the raster (48 KB a tile here)."""
    small, big = _tiling_peak(tmp_path, 1024), _tiling_peak(tmp_path, 3072)
    extra_tiles = (3072 // 128) ** 2 - (1024 // 128) ** 2
    assert big - small < 4e3 * extra_tiles, (
        f"peak {small / 1e6:.1f} MB at 1024 px but {big / 1e6:.1f} MB at 3072 px")
    assert big < 3 * 3072 * 3072 / 3, f"peak {big / 1e6:.1f} MB for a 3072 px scene"


def test_overlapping_stride(tmp_path):
    make_potsdam(tmp_path / "d", ["2_10"], size=(256, 256))
    cfg = preset_config("potsdam", tmp_path / "d", tiling={"size": 128, "stride": 64})
    summary = run_tile(cfg, tmp_path / "t.zarr", tmp_path / "d")
    assert summary["tiles"] == 9
    windows = open_store(tmp_path / "t.zarr", "tiles").attrs["tiles"]["window"]
    assert windows[1] == [0, 64, 128, 128]
