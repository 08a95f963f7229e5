import hashlib

import numpy as np
import rasterio
from conftest import preset_config

from atsg.data.synthetic.scene import generate_scene
from atsg.stages.synth import run_synth

WEIGHTS = preset_config("config")["synthetic"]["block_weights"]


def test_scene_is_deterministic_and_seed_dependent():
    a = generate_scene(256, np.random.default_rng([0, 1]), WEIGHTS, 0.15)
    b = generate_scene(256, np.random.default_rng([0, 1]), WEIGHTS, 0.15)
    c = generate_scene(256, np.random.default_rng([0, 2]), WEIGHTS, 0.15)
    assert (a[0] == b[0]).all() and (a[1] == b[1]).all()
    assert not (a[0] == c[0]).all()


def test_scenes_have_potsdam_like_content():
    fractions, per_tile = np.zeros(6), []
    for k in range(3):
        image, semantic = generate_scene(512, np.random.default_rng([5, k]), WEIGHTS, 0.1)
        assert image.shape == (512, 512, 3) and image.dtype == np.uint8 and semantic.shape == (512, 512)
        fractions += np.bincount(semantic.ravel(), minlength=6)
        for i in range(0, 512, 256):
            for j in range(0, 512, 256):
                per_tile.append(len(np.unique(semantic[i : i + 256, j : j + 256])))
    fractions /= fractions.sum()
    assert (fractions > 0.005).all(), fractions  # every class occurs
    assert fractions[5] < 0.05  # cars are small and rare
    assert np.mean(np.array(per_tile) >= 3) > 0.6  # most tiles hold 3+ classes
    assert 20 < image.mean() < 235 and image.std() > 20  # not blank, not saturated


def test_run_synth_writes_georeferenced_palette_geotiffs(tmp_path):
    cfg = preset_config("config", synthetic={"scenes": 2, "size": 192, "seed": 3})
    manifest = run_synth(cfg["synthetic"], cfg["dataset"], tmp_path / "scenes")
    palette = {tuple(c) for c in cfg["dataset"]["palette"]}
    for sid in ("000", "001"):
        with rasterio.open(tmp_path / "scenes" / f"scene_{sid}_RGB.tif") as src:
            assert src.count == 3 and src.crs.to_string() == "EPSG:32633" and src.res == (0.1, 0.1)
            origin = src.transform.c
        with rasterio.open(tmp_path / "scenes" / f"scene_{sid}_label.tif") as src:
            colours = {tuple(c) for c in src.read().reshape(3, -1).T.tolist()}
            assert colours <= palette
    assert origin > cfg["synthetic"]["origin"][0]  # scene 1 lies east of scene 0
    assert abs(sum(manifest["class_fractions"].values()) - 1) < 1e-3
    digest = hashlib.sha256((tmp_path / "scenes" / "scene_001_RGB.tif").read_bytes()).hexdigest()
    again = run_synth(cfg["synthetic"], cfg["dataset"], tmp_path / "again", workers=2)  # parallel: same files
    for name in ("scene_000_RGB.tif", "scene_001_RGB.tif", "scene_001_label.tif"):
        assert (tmp_path / "again" / name).read_bytes() == (tmp_path / "scenes" / name).read_bytes()
    assert hashlib.sha256((tmp_path / "again" / "scene_001_RGB.tif").read_bytes()).hexdigest() == digest
    assert again == manifest
