"""Benchmarks are scripts (no timed tests): here they only have to run at tiny sizes and agree."""

import json
import subprocess
import sys

from conftest import REPO


def test_all_benchmarks_run_and_both_ways_agree():
    out = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "run_all.py"), "--quick"],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    ).stdout
    lines = out.strip().splitlines()
    assert lines[0].startswith("| step |") and len([x for x in lines if x.startswith("| ")]) == 2 + 10
    results = json.loads(lines[-1])

    par = results["par"]
    assert par["size"] == 64 and par["max_abs_difference"] < 1e-4
    assert par["published"]["seconds"] > 0 and par["atsg"]["peak_mb"] >= 0

    maps, sam = results["masks"]["maps"], results["masks"]["sam"]
    assert maps["equal"] and maps["masks_per_tile"] == 150
    assert sam["equal"] and sam["model"] == "vit_tiny" and 0 < sam["sam_model_s"] <= sam["stage_s"]
    assert sam["scene"]["tiles"] == 16

    cams = results["cams"]
    assert cams["tiles"] == 4 and 0 < cams["model_s"] <= cams["atsg_s"]
    assert cams["max_abs_difference"] < 0.2

    tiling = results["tiling"]
    assert tiling["equal"] and [s["side"] for s in tiling["sizes"]] == [256, 512]
    assert all(s["atsg"]["seconds"] > 0 and s["png"]["bytes"] > 0 for s in tiling["sizes"])

    loader = results["loader"]
    assert loader["equal"] and loader["tiles"] == 16 and loader["zarr"]["s_per_sample"] > 0

    mapping = results["map"]
    assert [s["side"] for s in mapping["sizes"]] == [256, 512]
    assert all(s["agreement"] > 0.999 and s["atsg"]["mp_per_s"] > 0 for s in mapping["sizes"])

    crf = results["crf"]  # without pydensecrf here: atsg alone, checked against pydensecrf's fixture
    assert crf["tiles"] == 8 and crf["atsg"]["s_per_tile"] > 0 and crf["fixture_max_abs_difference"] < 1e-4

    amp = results["cpu_amp"]  # fp32 and bf16 autocast time the same steps; their band CAMs nearly agree
    assert amp["size"] == "quick" and amp["fp32"]["train_s"] > 0 and amp["bf16"]["band_cam_s"] > 0
    assert 0 < amp["max_abs_difference"] < 0.05 and amp["same_class"] > 0.98  # > 0: bf16 did run
