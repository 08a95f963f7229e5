"""atsg map: a trained model applied to new rasters -> COG maps (and probabilities, polygons), windowed and
sharded; checked against a whole-image reference blending, byte for byte across shards, and on bad input."""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from conftest import REPO, TINY_VIT, preset_config
from fixtures import EPSG, POTSDAM_PALETTE, random_scene, write_raster
from rasterio.transform import from_origin
from rio_cogeo.cogeo import cog_validate

from atsg import factory
from atsg.crf import dense_crf
from atsg.errors import DataError
from atsg.geo.cog import read_tags
from atsg.geo.imagery import imagery_record, model_normalisation
from atsg.geo.vector import rasterise
from atsg.geo.windows import hann_window
from atsg.inference import predict_probs
from atsg.shards import Shard, Step
from atsg.stages.common import save_model_file
from atsg.stages.map import run_map

CLASSES = ["clutter", "impervious_surface", "building", "low_vegetation", "tree", "car"]
TILE = 64
GSD = 0.05


def _model_file(path: Path, tile: int = TILE, value_range=None, seed: int = 0) -> Path:
    """A tiny segmentation model file (random init, asked for explicitly) with the imagery record of 3-band
    8-bit tiles of ``tile`` px at 5 cm (the fixtures' rasters)."""
    torch.manual_seed(seed)
    cfg = dict(TINY_VIT, img_size=tile, decoder_channels=16)
    c = preset_config("config", segmentation=cfg)["segmentation"]
    model = factory.segmenter(c, 3, len(CLASSES))
    attrs = {
        "classes": CLASSES,
        "palette": POTSDAM_PALETTE.tolist(),
        "background": True,
        "bands": ["R", "G", "B"],
        "raster_bands": [1, 2, 3],
        "value_range": value_range,
        "tile_size": tile,
        "scenes": [
            {
                "crs": EPSG,
                "transform": list(from_origin(366000.0, 5808000.0, GSD, GSD))[:6],
                "width": 300,
                "height": 300,
            }
        ],
    }
    save_model_file(
        path,
        model.state_dict(),
        "segmentation",
        c,
        {"artifact": "segmentation", "artifact_key": "t"},
        classes=CLASSES,
        in_chans=3,
        supervised=False,
        best_step=0,
        imagery=imagery_record(attrs, model_normalisation(model)),
    )
    return path


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return _model_file(tmp_path_factory.mktemp("model") / "model.pt")


def _scene(path: Path, h: int, w: int, seed: int = 0, nodata=None, image=None, **kw) -> Path:
    if image is None:
        image, _ = random_scene(np.random.default_rng(seed), h, w, 6)
    return write_raster(path, image, nodata=nodata, **kw)


def _cfg(**map_settings) -> dict:
    return preset_config("config", map={"overlap": 16, "block": 96, "batch_size": 5, **map_settings})


def _reference(
    model_path: Path, image: np.ndarray, tile: int, overlap: int, crf: dict | None
) -> tuple[np.ndarray, np.ndarray]:
    """(labels, probabilities (C, H, W) float) of the whole image at once: every tile of the grid padded with
    zeros, Hann-weighted, summed, divided; written independently of atsg.geo.windows."""
    ck = torch.load(model_path, weights_only=False)
    m = factory.segmenter(dict(ck["config"], random_init=True), 3, len(CLASSES))
    m.load_state_dict(ck["state_dict"])
    m.eval()
    _, h, w = image.shape
    stride = tile - overlap
    starts = lambda n: [0] if n <= tile else list(range(0, n - tile + stride, stride))  # noqa: E731
    ph, pw = max(starts(h)) + tile, max(starts(w)) + tile
    padded = np.zeros((3, ph, pw), np.uint8)
    padded[:, :h, :w] = image
    inside = np.zeros((ph, pw), np.float32)
    inside[:h, :w] = 1
    acc, total = np.zeros((len(CLASSES), ph, pw), np.float32), np.zeros((ph, pw), np.float32)
    win = hann_window(tile)
    for r in starts(h):
        for c in starts(w):
            window = torch.from_numpy(padded[None, :, r : r + tile, c : c + tile])
            probs = predict_probs(m, window)
            if crf is not None:  # the dense CRF on each tile, its padding left out (test_crf checks dense_crf)
                probs = dense_crf(window, probs, crf, torch.from_numpy(inside[None, r : r + tile, c : c + tile] > 0))
            probs = probs.numpy()[0]
            wt = win * inside[r : r + tile, c : c + tile]
            acc[:, r : r + tile, c : c + tile] += probs * wt
            total[r : r + tile, c : c + tile] += wt
    probs = (acc / np.where(total > 0, total, 1))[:, :h, :w]
    return probs.argmax(0).astype(np.uint8), probs


def test_map_is_the_whole_image_blending_with_the_inputs_georeference(tmp_path, model):
    """Blocks (96 px) cut across tiles (64 px, overlap 16) of a 300 x 260 raster: the map equals one blending
    of the whole image's tiles; the COG is valid, keeps CRS, transform and size, carries palette and classes."""
    transform = from_origin(500000.0, 5800000.0, GSD, GSD)
    path = _scene(tmp_path / "in" / "scene.tif", 300, 260, crs="EPSG:32632", transform=transform)
    summary = run_map(_cfg(probabilities=True), model, [path], tmp_path / "maps")
    assert summary["mapped"] == ["scene"] and summary["computed"] == 4 * 3
    out = tmp_path / "maps" / "scene.tif"
    assert cog_validate(str(out))[0] and cog_validate(str(tmp_path / "maps" / "scene.probabilities.tif"))[0]
    with rasterio.open(out) as src, rasterio.open(path) as ref:
        assert (src.crs, src.transform, src.shape) == (ref.crs, ref.transform, ref.shape)
        assert src.nodata == 255 and src.dtypes[0] == "uint8"
        assert [src.colormap(1)[i][:3] for i in range(6)] == [tuple(c) for c in POTSDAM_PALETTE.tolist()]
        labels = src.read(1)
        image = ref.read()
    tags = read_tags(out)
    assert tags["atsg_classes"] == CLASSES and tags["CLASS_2"] == "building"
    expected, probs = _reference(model, image, TILE, 16, _cfg()["map"]["crf"])
    assert len(np.unique(expected)) > 1, "a constant reference tests nothing"
    agree = (labels == expected).mean()
    assert agree > 0.999, f"map and whole-image blending agree on {agree:.4%} of pixels"
    with rasterio.open(tmp_path / "maps" / "scene.probabilities.tif") as src:
        assert src.count == 6 and list(src.descriptions) == CLASSES
        scaled = src.read().astype(int)
    assert np.abs(scaled - np.rint(probs * 255)).max() <= 1


def test_nodata_propagates_and_no_crs_warns(tmp_path, model, caplog):
    image, _ = random_scene(np.random.default_rng(3), 200, 180, 6)
    image[:, :, :70] = 0  # nodata 0: a strip wider than a tile
    image[:, 120:130, 100:110] = 0
    path = _scene(tmp_path / "nodata.tif", 200, 180, nodata=0, image=image, crs=None)
    with caplog.at_level(logging.WARNING):
        run_map(_cfg(), model, [path], tmp_path / "maps")
    assert "no CRS" in caplog.text
    with rasterio.open(tmp_path / "maps" / "nodata.tif") as src:
        labels = src.read(1)
        assert src.crs is None
    nodata = (image == 0).all(0)
    assert (labels[nodata] == 255).all() and (labels[~nodata] != 255).all()


def test_polygons_rasterise_back_to_the_map(tmp_path, model):
    transform = from_origin(366000.0, 5808000.0, GSD, GSD)
    path = _scene(tmp_path / "scene.tif", 250, 230, seed=4, transform=transform)
    run_map(_cfg(vector=True), model, [path], tmp_path / "exact")
    with rasterio.open(tmp_path / "exact" / "scene.tif") as src:
        labels = src.read(1)
    back = rasterise(tmp_path / "exact" / "scene.gpkg", transform, 250, 230, 255)
    assert (back != labels).mean() < 0.01  # traced on pixel edges: in fact exact
    assert (back == labels).all()
    import pyogrio

    exact = pyogrio.read_info(tmp_path / "exact" / "scene.gpkg")
    assert exact["crs"] == EPSG and exact["fields"].tolist() == ["class", "name", "area"]
    _, _, _, fields = pyogrio.raw.read(tmp_path / "exact" / "scene.gpkg")
    counts = np.bincount(labels.ravel(), minlength=6)
    areas = np.bincount(fields[0], weights=fields[2], minlength=6)
    assert np.allclose(areas[:6], counts[:6] * GSD * GSD)  # every labelled pixel in exactly one polygon
    assert set(fields[1]) <= set(CLASSES)
    run_map(_cfg(vector=True, simplify=0.1, min_area=0.05), model, [path], tmp_path / "simple")
    simple = pyogrio.read_info(tmp_path / "simple" / "scene.gpkg")
    _, _, _, sfields = pyogrio.raw.read(tmp_path / "simple" / "scene.gpkg")
    assert 0 < simple["features"] < exact["features"] and sfields[2].min() >= 0.05
    back = rasterise(tmp_path / "simple" / "scene.gpkg", transform, 250, 230, 255)
    assert (back == labels).mean() > 0.8


def test_four_shards_make_the_unsharded_map_byte_for_byte(tmp_path, model):
    paths = [_scene(tmp_path / "in" / f"s{k}.tif", 220, 200 + 30 * k, seed=k) for k in range(2)]
    cfg = _cfg(probabilities=True)
    run_map(cfg, model, paths, tmp_path / "whole")
    out, work = tmp_path / "sharded", tmp_path / "work"
    assert run_map(cfg, model, paths, out, work, Step("prepare"))["to_map"] == 2
    markers = []
    for k in (2, 0, 3):
        markers.append(tmp_path / f"m{k}.json")
        run_map(cfg, model, paths, out, work, Step("shard", Shard(k, 4), markers[-1]))
    with pytest.raises(DataError, match="shards \\[1\\] of 4 have not finished"):
        run_map(cfg, model, paths, out, work, Step("finalise", markers=tuple(markers)))
    markers.append(tmp_path / "m1.json")
    run_map(cfg, model, paths, out, work, Step("shard", Shard(1, 4), markers[-1]))
    assert run_map(cfg, model, paths, out, work, Step("finalise", markers=tuple(markers)))["mapped"] == ["s0", "s1"]
    for name in ("s0.tif", "s1.tif", "s0.probabilities.tif", "s1.probabilities.tif"):
        assert (out / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name
    assert not work.exists()


def test_rerun_skips_finished_maps_and_resumes_a_killed_one(tmp_path, model):
    path = _scene(tmp_path / "scene.tif", 300, 250, seed=5)
    out = tmp_path / "maps"
    cfg = _cfg()
    run_map(cfg, model, [path], out)
    first = (out / "scene.tif").stat().st_mtime_ns
    again = run_map(cfg, model, [path], out)
    assert again["skipped"] == 1 and again["computed"] == 0 and (out / "scene.tif").stat().st_mtime_ns == first
    flipped = run_map(_cfg(flip=True), model, [path], out)  # another setting: mapped again
    assert flipped["computed"] == 12 and read_tags(out / "scene.tif")["atsg_map_key"] != ""
    # a run killed after shard 0 of 3 of its blocks: the next run computes only the others
    resumed = tmp_path / "resumed"
    work = resumed / ".atsg-map"
    run_map(cfg, model, [path], resumed, work, Step("prepare"))
    run_map(cfg, model, [path], resumed, work, Step("shard", Shard(0, 3), tmp_path / "m.json"))
    summary = run_map(cfg, model, [path], resumed)
    assert summary["computed"] == 12 - 4
    first_map = tmp_path / "first"
    run_map(cfg, model, [path], first_map)
    assert (resumed / "scene.tif").read_bytes() == (first_map / "scene.tif").read_bytes()


def test_inputs_are_checked_with_one_line_errors(tmp_path, model):
    one_band = write_raster(tmp_path / "gray.tif", np.zeros((1, 80, 80), np.uint8))
    with pytest.raises(DataError, match="1 band.*reads raster band"):
        run_map(_cfg(), model, [one_band], tmp_path / "m")
    deep = write_raster(tmp_path / "deep.tif", np.full((3, 80, 80), 1000, np.uint16))
    with pytest.raises(DataError, match="uint16.*8-bit.*--value-range"):
        run_map(_cfg(), model, [deep], tmp_path / "m")
    run_map(_cfg(value_range=[0, 2000]), model, [deep], tmp_path / "m")
    assert (tmp_path / "m" / "deep.tif").is_file()
    ranged = _model_file(tmp_path / "ranged.pt", value_range=[0, 4000])
    with pytest.raises(DataError, match="uint8.*trained on values"):
        run_map(_cfg(), ranged, [_scene(tmp_path / "rgb.tif", 80, 80)], tmp_path / "m")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="without .tif"):
        run_map(_cfg(), model, [tmp_path / "empty"], tmp_path / "m")
    with pytest.raises(DataError, match="both be mapped to"):
        run_map(
            _cfg(),
            model,
            [_scene(tmp_path / "a" / "x.tif", 80, 80), _scene(tmp_path / "b" / "x.tif", 80, 80)],
            tmp_path / "m",
        )
    old = torch.load(model, weights_only=False)
    old.pop("imagery")
    torch.save(old, tmp_path / "old.pt")
    with pytest.raises(DataError, match="does not describe the imagery.*retrain"):
        run_map(_cfg(), tmp_path / "old.pt", [deep], tmp_path / "m")


def test_gsd_far_from_training_warns_and_resample_maps_at_it(tmp_path, model, caplog):
    """An input at 20 cm for a model trained at 5 cm: a warning; with resample the model sees 5 cm pixels and
    the map comes back on the input's grid."""
    coarse = from_origin(366000.0, 5808000.0, 4 * GSD, 4 * GSD)
    path = _scene(tmp_path / "coarse.tif", 60, 50, seed=6, transform=coarse)
    with caplog.at_level(logging.WARNING):
        run_map(_cfg(), model, [path], tmp_path / "plain")
    assert "trained at 0.05 m" in caplog.text and "--resample" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        summary = run_map(_cfg(resample=True, probabilities=True), model, [path], tmp_path / "resampled")
    assert "trained at" not in caplog.text
    assert summary["computed"] == 9  # 240 x 200 px at 5 cm: 3 x 3 blocks of 96
    with rasterio.open(tmp_path / "resampled" / "coarse.tif") as src, rasterio.open(path) as ref:
        assert (src.transform, src.shape, src.crs) == (ref.transform, ref.shape, ref.crs)
        assert cog_validate(str(tmp_path / "resampled" / "coarse.tif"))[0]
        assert (src.read(1) != 255).all()


def test_cli_maps_and_fails_in_one_line(tmp_path, model, cli_env):
    path = _scene(tmp_path / "scene.tif", 100, 90)
    ok = subprocess.run(
        [
            "atsg",
            "map",
            "--model",
            str(model),
            "--out",
            str(tmp_path / "maps"),
            "--vector",
            "--overlap",
            "8",
            str(path),
        ],
        capture_output=True,
        text=True,
        env=cli_env,
        timeout=300,
    )
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert json.loads(ok.stdout.strip().splitlines()[-1])["mapped"] == ["scene"]
    assert (tmp_path / "maps" / "scene.gpkg").is_file() and not (tmp_path / "maps" / ".atsg-map").exists()
    bad = subprocess.run(
        ["atsg", "map", "--model", str(model), "--out", str(tmp_path / "maps"), str(tmp_path / "x")],
        capture_output=True,
        text=True,
        env=cli_env,
        timeout=300,
    )
    assert bad.returncode == 2 and "no such raster" in bad.stderr and "Traceback" not in bad.stderr


def test_rule_map_maps_a_scene_never_in_the_dataset(chain, tmp_path, cli_env):
    """After the tiny chain: a new synthetic scene (another seed) mapped by `snakemake map` in 2 shards, which
    reruns nothing of the chain and writes what `atsg map` writes, byte for byte."""
    from conftest import run_snakemake
    from test_operations import copy_chain

    work = copy_chain(chain, tmp_path / "work")
    run = work / "results" / "tiny"
    assert not (run / "maps").exists()  # not part of `all` without map.inputs
    new = tmp_path / "new"
    subprocess.run(
        [
            "atsg",
            "synth",
            "--configfile",
            str(REPO / "config" / "config.yaml"),
            "--set",
            "synthetic.scenes=1",
            "--set",
            "synthetic.size=200",
            "--set",
            "synthetic.seed=77",
            "--out",
            str(new),
        ],
        check=True,
        env=cli_env,
        capture_output=True,
        timeout=300,
    )
    scene = next(new.glob("*_RGB.tif"))
    result = run_snakemake(
        work, cli_env, "map", "--config", f"map={{inputs: ['{new}/*_RGB.tif'], vector: true}}", "shards={map: 2}"
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    ran = {
        line.split("rule ")[1].rstrip(":")
        for line in (result.stdout + result.stderr).splitlines()
        if line.startswith(("rule ", "localrule "))
    }
    assert ran == {"map_prepare", "map_shard", "map"}, ran
    out = run / "maps" / f"{scene.stem}.tif"
    assert cog_validate(str(out))[0] and (run / "maps" / f"{scene.stem}.gpkg").is_file()
    assert not (run / ".maps.work").exists()
    cli = subprocess.run(
        [
            "atsg",
            "map",
            "--configfile",
            str(REPO / "config" / "config.yaml"),
            "--configfile",
            str(work / "tiny.yaml"),
            "--model",
            str(run / "segmentation" / "model.pt"),
            "--vector",
            "--out",
            str(tmp_path / "cli"),
            str(scene),
        ],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert cli.returncode == 0, cli.stderr[-2000:]
    assert (tmp_path / "cli" / out.name).read_bytes() == out.read_bytes()
    with rasterio.open(out) as src, rasterio.open(scene) as ref:
        assert (src.crs, src.transform, src.shape) == (ref.crs, ref.transform, ref.shape)


def test_a_vrt_and_a_folder_map_like_the_raster(tmp_path, model):
    from rasterio.shutil import copy as gdal_copy

    path = _scene(tmp_path / "in" / "scene.tif", 150, 170, seed=8)
    gdal_copy(path, tmp_path / "mosaic.vrt", driver="VRT")
    run_map(_cfg(), model, [tmp_path / "in"], tmp_path / "from_folder")
    run_map(_cfg(), model, [tmp_path / "mosaic.vrt"], tmp_path / "from_vrt")
    with (
        rasterio.open(tmp_path / "from_folder" / "scene.tif") as a,
        rasterio.open(tmp_path / "from_vrt" / "mosaic.tif") as b,
    ):
        assert (a.transform, a.shape) == (b.transform, b.shape)
        assert np.array_equal(a.read(1), b.read(1))
