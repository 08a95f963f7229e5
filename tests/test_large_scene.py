"""A 20000 x 20000 px scene tiles with peak memory under 2 GB (slow: writes a 1.2 GB raster)."""

import json
import resource
import subprocess
import sys

import numpy as np
import pytest
import rasterio
from conftest import REPO
from fixtures import POTSDAM_PALETTE
from rasterio.transform import from_origin
from rasterio.windows import Window

SIZE = 20000


def _write_big_pair(root):
    """Write image and RGB label of a SIZE x SIZE Potsdam scene strip by strip (never whole in memory)."""
    profile = dict(
        driver="GTiff",
        width=SIZE,
        height=SIZE,
        count=3,
        dtype="uint8",
        crs="EPSG:32633",
        transform=from_origin(366000.0, 5808000.0, 0.05, 0.05),
        tiled=True,
        blockxsize=512,
        blockysize=512,
        compress="deflate",
    )
    (root / "2_Ortho_RGB").mkdir(parents=True)
    (root / "5_Labels_all").mkdir(parents=True)
    rng = np.random.default_rng(0)
    with (
        rasterio.open(root / "2_Ortho_RGB" / "top_potsdam_2_10_RGB.tif", "w", **profile) as img,
        rasterio.open(root / "5_Labels_all" / "top_potsdam_2_10_label.tif", "w", **profile) as lab,
    ):
        for row in range(0, SIZE, 1024):
            rows = min(1024, SIZE - row)
            classes = np.repeat(rng.integers(0, 6, size=(rows, SIZE // 500 + 1)), 500, axis=1)[:, :SIZE]
            window = Window(0, row, SIZE, rows)
            lab.write(POTSDAM_PALETTE[classes.astype(np.uint8)].transpose(2, 0, 1), window=window)
            img.write((classes[None] * 40 + np.arange(3)[:, None, None] * 5).astype(np.uint8), window=window)


@pytest.mark.slow
def test_20000px_scene_tiles_under_2gb(tmp_path):
    _write_big_pair(tmp_path / "potsdam")
    out = tmp_path / "tiles.zarr"
    cmd = [
        sys.executable,
        "-m",
        "atsg.cli",
        "tile",
        "--configfile",
        str(REPO / "config" / "config.yaml"),
        "--configfile",
        str(REPO / "config" / "potsdam.yaml"),
        "--root",
        str(tmp_path / "potsdam"),
        "--out",
        str(out),
        "--set",
        "split.train=['2_10']",
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    result = subprocess.run(cmd, capture_output=True, text=True)
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["tiles"] == 79 * 79
    assert max(peak_kb, before) < 2 * 1024 * 1024, f"peak RSS {peak_kb / 1024:.0f} MB"
    print(f"peak RSS {peak_kb / 1024:.0f} MB for a {SIZE}x{SIZE} scene")
