"""Bad input fails early with one line naming the file or key and the fix; no store is left behind."""

import numpy as np
import pytest
from fixtures import EPSG, POTSDAM_PALETTE, make_potsdam, write_raster
from rasterio.transform import from_origin

from atsg.cli import main


def _tile(tmp_path, root, *extra):
    out = tmp_path / "tiles.zarr"
    args = [
        "tile",
        "--configfile",
        "config/potsdam.yaml",
        "--set",
        "tiling.size=64",
        "--set",
        "tiling.stride=64",
        "--out",
        str(out),
    ]
    if root is not None:
        args += ["--root", str(root)]
    return main(args + list(extra)), out


def _one_error_line(capsys):
    err = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(err) == 1
    return err[0]


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch, repo):
    monkeypatch.chdir(repo)


def test_missing_root(tmp_path, capsys):
    rc, out = _tile(tmp_path, tmp_path / "nowhere")
    line = _one_error_line(capsys)
    assert rc == 2 and "dataset.root" in line and "nowhere" in line and not out.exists()


def test_root_not_set(tmp_path, capsys):
    rc, out = _tile(tmp_path, None)
    assert rc == 2 and "config key dataset.root is not set" in _one_error_line(capsys)


def test_empty_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    rc, out = _tile(tmp_path, tmp_path / "empty")
    line = _one_error_line(capsys)
    assert rc == 2 and "no file matches dataset.images" in line and not out.exists()


def test_missing_label_raster(tmp_path, capsys):
    make_potsdam(tmp_path / "d", ["2_10"])
    (tmp_path / "d" / "5_Labels_all" / "top_potsdam_2_10_label.tif").unlink()
    rc, out = _tile(tmp_path, tmp_path / "d")
    assert rc == 2 and "no label raster" in _one_error_line(capsys)


def test_image_label_size_mismatch(tmp_path, capsys):
    make_potsdam(tmp_path / "d", ["2_10"], size=(128, 128))
    label = tmp_path / "d" / "5_Labels_all" / "top_potsdam_2_10_label.tif"
    write_raster(label, np.zeros((3, 100, 128), np.uint8))
    rc, out = _tile(tmp_path, tmp_path / "d")
    line = _one_error_line(capsys)
    assert rc == 2 and str(label) in line and "128x100" in line and not out.exists()


def test_truncated_raster(tmp_path, capsys):
    make_potsdam(tmp_path / "d", ["2_10", "2_11"], size=(256, 256))
    image = tmp_path / "d" / "2_Ortho_RGB" / "top_potsdam_2_11_RGB.tif"
    data = image.read_bytes()
    image.write_bytes(data[: len(data) // 2])
    rc, out = _tile(tmp_path, tmp_path / "d")
    line = _one_error_line(capsys)
    assert rc == 2 and "top_potsdam_2_11_RGB.tif" in line and "corrupt or truncated" in line
    assert not out.exists() and not list(tmp_path.glob(".tiles.zarr.tmp-*"))


def test_not_a_raster(tmp_path, capsys):
    make_potsdam(tmp_path / "d", ["2_10"])
    image = tmp_path / "d" / "2_Ortho_RGB" / "top_potsdam_2_10_RGB.tif"
    image.write_text("this is not a tiff")
    rc, out = _tile(tmp_path, tmp_path / "d")
    assert rc == 2 and "cannot be read as a raster" in _one_error_line(capsys)


def test_unknown_palette_colour(tmp_path, capsys):
    make_potsdam(tmp_path / "d", ["2_10", "2_11"], size=(128, 128))
    label = tmp_path / "d" / "5_Labels_all" / "top_potsdam_2_11_label.tif"
    labels = np.ones((128, 128), np.uint8)
    rgb = POTSDAM_PALETTE[labels]
    rgb[:10, :7] = (12, 34, 56)
    write_raster(label, rgb.transpose(2, 0, 1), transform=from_origin(366400.0, 5808000.0, 0.05, 0.05))
    rc, out = _tile(tmp_path, tmp_path / "d")
    line = _one_error_line(capsys)
    assert rc == 2 and str(label) in line and "RGB(12, 34, 56) on 70 px" in line and not out.exists()
    # mapped to 'no label' in config, the same file tiles
    rc, out = _tile(tmp_path, tmp_path / "d", "--set", "dataset.ignore_colors=[[12, 34, 56]]")
    assert rc == 0 and out.exists()


def test_wrong_band_count(tmp_path, capsys):
    make_potsdam(tmp_path / "d", ["2_10"], bands=4)
    rc, out = _tile(tmp_path, tmp_path / "d")
    line = _one_error_line(capsys)
    assert rc == 2 and "4 band(s), preset potsdam expects 3" in line and "dataset.expected_bands" in line


def test_non_8bit_images_need_a_value_range(tmp_path, capsys):
    make_potsdam(tmp_path / "d", ["2_10"], size=(64, 64))
    image = tmp_path / "d" / "2_Ortho_RGB" / "top_potsdam_2_10_RGB.tif"
    write_raster(image, np.full((3, 64, 64), 4000, np.uint16))
    rc, out = _tile(tmp_path, tmp_path / "d")
    assert rc == 2 and "dataset.value_range" in _one_error_line(capsys)
    rc, out = _tile(tmp_path, tmp_path / "d", "--set", "dataset.value_range=[0, 8000]")
    import zarr

    assert rc == 0 and int(zarr.open_group(str(out), mode="r")["images"][0, 0, 0, 0]) == 128


def test_wrong_config_type(tmp_path, capsys):
    rc, out = _tile(tmp_path, tmp_path, "--set", "tiling.min_pixels=many")
    assert rc == 2 and "config key tiling.min_pixels" in _one_error_line(capsys)


def test_store_of_wrong_kind_or_shape(tmp_path):
    import zarr

    from atsg.errors import DataError
    from atsg.store import open_store

    g = zarr.open_group(str(tmp_path / "x.zarr"), mode="w")
    g.attrs["atsg_store"] = "tiles"
    g.create_array("images", shape=(2, 3, 8), dtype="uint8")
    with pytest.raises(DataError, match="images: uint8 with 3 dims"):
        open_store(tmp_path / "x.zarr", "tiles")
    with pytest.raises(DataError, match="expected a cams store"):
        open_store(tmp_path / "x.zarr", "cams")


def _relabel(root, sid, **georef):
    """Rewrite a Potsdam label raster with the same pixels and another georeference."""
    import rasterio

    path = root / "5_Labels_all" / f"top_potsdam_{sid}_label.tif"
    with rasterio.open(path) as src:
        data, transform = src.read(), src.transform
    write_raster(path, data, crs=georef.get("crs", EPSG), transform=georef.get("transform", transform))
    return path, transform


def test_a_label_raster_off_its_image_is_named_with_both_files(tmp_path, capsys):
    make_potsdam(tmp_path / "d", ["2_10"], size=(128, 128))
    label, _ = _relabel(tmp_path / "d", "2_10", transform=from_origin(366000.0 + 999_000, 5808000.0, 0.05, 0.05))
    rc, out = _tile(tmp_path, tmp_path / "d")
    line = _one_error_line(capsys)
    assert rc == 2 and str(label) in line and "top_potsdam_2_10_RGB.tif" in line and "half a pixel" in line
    assert not out.exists()


def test_a_label_raster_in_another_crs_is_named(tmp_path, capsys):
    make_potsdam(tmp_path / "d", ["2_10"], size=(128, 128))
    label, _ = _relabel(tmp_path / "d", "2_10", crs="EPSG:32632")
    rc, out = _tile(tmp_path, tmp_path / "d")
    line = _one_error_line(capsys)
    assert rc == 2 and str(label) in line and "EPSG:32632" in line and "EPSG:32633" in line


def test_a_label_within_half_a_pixel_is_accepted(tmp_path, capsys):
    make_potsdam(tmp_path / "d", ["2_10", "2_11"], size=(128, 128))
    _relabel(tmp_path / "d", "2_10", transform=from_origin(366000.0 + 0.02, 5808000.0 - 0.01, 0.05, 0.05))
    rc, out = _tile(tmp_path, tmp_path / "d", "--set", "split.train=['2_10']", "--set", "split.test=['2_11']")
    assert rc == 0 and out.exists()


def test_an_image_without_crs_is_tiled_with_one_warning(tmp_path, caplog):
    from conftest import preset_config
    from fixtures import make_folder

    from atsg.stages.evaluate import report_markdown
    from atsg.stages.tile import run_tile

    make_folder(tmp_path / "f", ["a", "b"], size=(64, 64))
    cfg = preset_config("folder", tmp_path / "f", tiling={"size": 64, "stride": 64}, split={"ratios": [1, 0, 0]})
    with caplog.at_level("WARNING"):
        run_tile(cfg, tmp_path / "t.zarr", tmp_path / "f")
    warnings = [r.getMessage() for r in caplog.records if "no CRS" in r.getMessage()]
    assert len(warnings) == 2 and all("outputs are not georeferenced" in w for w in warnings)
    metrics = {"cam": {"splits": {}, "oa": None, "mean_f1": None, "iou": {}}}
    report = report_markdown(metrics, ["bg"], "test", None, ["a", "b"])
    assert "outputs are not georeferenced" in report and "2 scene(s) have no CRS (a, b)" in report
    assert "not georeferenced" not in report_markdown(metrics, ["bg"], "test", None, [])
