"""Each dataset preset reads a folder in the real dataset's naming and palette."""

import numpy as np
from conftest import preset_config
from fixtures import make_deepglobe, make_folder, make_isaid, make_vaihingen

from atsg.stages.tile import run_tile
from atsg.store import IGNORE, open_store


def _scene_labels(g, sid):
    scene = next(s for s in g.attrs["scenes"] if s["id"] == sid)
    return g["labels"][scene["first_tile"]], g["images"][scene["first_tile"]], scene


def test_vaihingen_layout(tmp_path):
    truth = make_vaihingen(tmp_path / "v", [1, 2, 3, 5])
    cfg = preset_config("vaihingen", tmp_path / "v", tiling={"size": 128, "stride": 128})
    run_tile(cfg, tmp_path / "t.zarr", tmp_path / "v")
    g = open_store(tmp_path / "t.zarr", "tiles")
    assert sorted(s["id"] for s in g.attrs["scenes"]) == ["1", "2", "3", "5"]
    splits = {s["id"]: s["split"] for s in g.attrs["scenes"]}
    assert splits["2"] == "test" and {splits["1"], splits["3"], splits["5"]} <= {"train", "val"}
    labels, image, _ = _scene_labels(g, "1")
    np.testing.assert_array_equal(labels, truth["1"][1][:128, :128])
    assert g.attrs["bands"] == ["IR", "R", "G"]


def test_isaid_layout_with_folder_split(tmp_path):
    truth = make_isaid(tmp_path / "i", {"train": ["P0001", "P0002", "P0003"], "val": ["P0004"]})
    cfg = preset_config("isaid", tmp_path / "i", tiling={"size": 128, "stride": 128})
    run_tile(cfg, tmp_path / "t.zarr", tmp_path / "i")
    g = open_store(tmp_path / "t.zarr", "tiles")
    splits = {s["id"]: s["split"] for s in g.attrs["scenes"]}
    assert splits["P0004"] == "test" and list(splits.values()).count("val") == 1
    labels, _, scene = _scene_labels(g, "P0002")
    np.testing.assert_array_equal(labels, truth["P0002"][1][:128, :128])
    assert g["cls_labels"].shape[1] == 15 and scene["crs"] is None


def test_deepglobe_layout_snaps_noisy_masks_and_has_no_background(tmp_path):
    truth = make_deepglobe(tmp_path / "g", ["100", "200", "300", "400", "500"])
    cfg = preset_config("deepglobe", tmp_path / "g", tiling={"size": 64, "stride": 64})
    run_tile(cfg, tmp_path / "t.zarr", tmp_path / "g")
    g = open_store(tmp_path / "t.zarr", "tiles")
    labels, _, _ = _scene_labels(g, "300")
    np.testing.assert_array_equal(labels, truth["300"][1][:64, :64])
    assert g["cls_labels"].shape[1] == 7 and g.attrs["background"] is False
    first = g["cls_labels"][0]
    assert set(np.flatnonzero(first)) == set(np.unique(g["labels"][0])) - {IGNORE}


def test_folder_layout_with_optional_labels_and_no_georeference(tmp_path):
    truth = make_folder(tmp_path / "f", ["a", "b", "c"], labelled={"a", "b"})
    cfg = preset_config("folder", tmp_path / "f", tiling={"size": 64, "stride": 64}, split={"ratios": [1, 0, 0]})
    run_tile(cfg, tmp_path / "t.zarr", tmp_path / "f")
    g = open_store(tmp_path / "t.zarr", "tiles")
    labels, image, scene = _scene_labels(g, "a")
    np.testing.assert_array_equal(labels, truth["a"][1][:64, :64])
    np.testing.assert_array_equal(image, truth["a"][0][:, :64, :64])
    unlabelled, _, scene_c = _scene_labels(g, "c")
    assert (unlabelled == IGNORE).all() and scene_c["label"] is None
    assert scene["crs"] is None and g.attrs["tiles"]["transform"][0] is None
