import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from conftest import preset_config
from fixtures import make_potsdam, write_raster
from oracles import tile_georef

from atsg.stages.tile import grid_positions, run_tile
from atsg.store import IGNORE, open_store

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
    cfg = preset_config(
        "potsdam",
        tmp_path / "potsdam",
        tiling={"size": 128, "stride": 128, "min_pixels": 1},
        split={"train": ["2_10", "2_11"], "val": ["3_10"], "test": TEST},
    )
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


PEAK_SCRIPT = """
import json, sys
from atsg.stages.tile import run_tile
from conftest import preset_config

def rss(key):
    return next(int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith(key))

from pathlib import Path
root, out = Path(sys.argv[1]), Path(sys.argv[2])
cfg = preset_config('folder', root, dataset={'labels': None, 'classes': ['bg', 'x']},
                    tiling={'size': 128, 'stride': 128, 'tiles_per_read': 4, 'gdal_cache_mb': 16},
                    split={'ratios': [1, 0, 0]})
base = rss('VmRSS')
run_tile(cfg, out, root)
print(json.dumps(rss('VmHWM') - base))
"""


def _tiling_peak(tmp_path, side: int, cli_env) -> int:
    """Growth of a fresh process's peak resident memory while it tiles a ``side`` px RGB scene."""
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, size=(3, side, side), dtype=np.uint8)
    write_raster(tmp_path / f"d{side}" / "images" / "big.tif", image, tiled=True)
    del image
    env = dict(cli_env, PYTHONPATH=str(Path(__file__).parent))
    out = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT, str(tmp_path / f"d{side}"), str(tmp_path / f"t{side}.zarr")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return int(out.stdout.strip().splitlines()[-1])


def test_tiling_memory_is_flat_in_scene_size(tmp_path, cli_env):
    """Pixels are held a few tiles at a time (groups of tiling.tiles_per_read, the same for both scenes): the
    process's peak memory grows by far less than the raster between a 1024 px and a 4096 px scene (48 MB of
    pixels more); what grows is per-tile metadata (windows, transforms, image-level labels)."""
    small, big = _tiling_peak(tmp_path, 1024, cli_env), _tiling_peak(tmp_path, 4096, cli_env)
    raster_growth = 3 * (4096**2 - 1024**2)
    assert big - small < raster_growth / 3, (
        f"peak growth {small / 1e6:.1f} MB at 1024 px but {big / 1e6:.1f} MB at 4096 px"
    )


def test_overlapping_stride(tmp_path):
    make_potsdam(tmp_path / "d", ["2_10"], size=(256, 256))
    cfg = preset_config("potsdam", tmp_path / "d", tiling={"size": 128, "stride": 64})
    summary = run_tile(cfg, tmp_path / "t.zarr", tmp_path / "d")
    assert summary["tiles"] == 9
    windows = open_store(tmp_path / "t.zarr", "tiles").attrs["tiles"]["window"]
    assert windows[1] == [0, 64, 128, 128]


def test_nodata_pixels_are_invalid_and_tiles_without_data_are_skipped(tmp_path):
    """An image with nodata 0 and a black strip: the strip's tiles are not stored, nodata pixels have no label and
    count toward no image-level label; a black pixel of a raster without nodata is data."""
    palette = np.array(preset_config("potsdam")["dataset"]["palette"], np.uint8)
    labels = np.full((128, 192), 1, np.uint8)  # impervious everywhere...
    labels[70:80, 100:110] = 5  # ...a car under nodata pixels...
    labels[20:30, 140:150] = 2  # ...and a building under data
    image = np.full((3, 128, 192), 120, np.uint8)
    image[:, :, :64] = 0  # the black strip: the first tile column is all nodata
    image[:, 70:80, 100:110] = 0  # nodata inside a tile
    image[0, 20:30, 140:150] = 0  # one band 0, the others not: data (GDAL: nodata only when every band is)
    root = tmp_path / "d"
    for sid, nodata in (("2_10", 0), ("2_11", None)):  # 2_11: the same pixels without a nodata value
        write_raster(root / "2_Ortho_RGB" / f"top_potsdam_{sid}_RGB.tif", image, nodata=nodata)
        write_raster(root / "5_Labels_all" / f"top_potsdam_{sid}_label.tif", palette[labels].transpose(2, 0, 1))
    cfg = preset_config(
        "potsdam",
        root,
        tiling={"size": 64, "stride": 64},
        split={"train": ["2_10", "2_11"], "test": [], "val_fraction": 0},
    )
    summary = run_tile(cfg, tmp_path / "t.zarr", root)
    g = open_store(tmp_path / "t.zarr", "tiles")
    assert summary["tiles"] == 4 + 6 and summary["skipped_nodata_tiles"] == 2
    first, second = g.attrs["scenes"]
    assert (first["n_tiles"], second["first_tile"], second["n_tiles"]) == (4, 4, 6)
    assert [w[:2] for w in g.attrs["tiles"]["window"][:4]] == [[0, 64], [0, 128], [64, 64], [64, 128]]
    valid, tile_labels, cls = g["valid"][:], g["labels"][:], g["cls_labels"][:]
    # tile 2 of scene 2_10 is rows 64-128, cols 64-128: the nodata square is its rows 6-16, cols 36-46
    assert valid[2, 6:16, 36:46].sum() == 0 and valid[2].sum() == 64 * 64 - 100
    assert (tile_labels[2, 6:16, 36:46] == IGNORE).all() and cls[2].tolist() == [1, 0, 0, 0, 0]  # no car
    assert valid[1].all() and cls[1].tolist() == [1, 1, 0, 0, 0]  # the one-band-0 building is data
    assert (g["images"][2][:, 6:16, 36:46] == 0).all()
    # without a nodata value the black strip is data: all six tiles, the car counts
    assert valid[4:].all() and cls[4 + 3 + 1].tolist() == [1, 0, 0, 0, 1]
