"""The Snakemake workflow end to end on a tiny config, in a temporary folder."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO, run_snakemake, scheduled_jobs

from atsg.store import open_store

TINY = {
    "run": "tiny",
    "synthetic": {"scenes": 3, "size": 256, "seed": 1},
    "tiling": {"size": 128, "stride": 128},
    "split": {"ratios": [1, 1, 1]},
}


@pytest.fixture(scope="module")
def tiled(tmp_path_factory):
    env = dict(os.environ, PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    work = tmp_path_factory.mktemp("wf")
    (work / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    result = run_snakemake(work, env, "--until", "tile")
    assert result.returncode == 0, result.stderr[-3000:]
    return REPO, work, env


def test_until_tile_writes_the_store(tiled):
    repo, work, env = tiled
    g = open_store(work / "results" / "tiny" / "tiles.zarr", "tiles")
    assert g["images"].shape == (3 * 4, 3, 128, 128)
    assert sorted(set(g["split"][:].tolist())) == [0, 1, 2]
    assert g["cls_labels"][:].sum(1).mean() >= 2  # tiles of the demo hold several classes
    assert (work / "results" / "tiny" / "logs" / "tile.log").read_text().count("wrote") == 1
    assert (work / "results" / "tiny" / "benchmarks" / "tile.tsv").exists()


def test_unchanged_rerun_schedules_nothing(tiled):
    repo, work, env = tiled
    result = run_snakemake(work, env, "-n", "--until", "tile")
    text = result.stdout + result.stderr
    assert result.returncode == 0 and ("Nothing to be done" in text or re.search(r"total\s+0\b", text))


def test_tiling_change_reruns_tile_not_synth(tiled):
    repo, work, env = tiled
    result = run_snakemake(work, env, "-n", "--until", "tile", "--config", "tiling={size: 64, stride: 64}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert scheduled_jobs(result) == {"tile"}


def test_synthetic_change_reruns_synth_and_tile(tiled):
    repo, work, env = tiled
    result = run_snakemake(work, env, "-n", "--until", "tile", "--config", "synthetic={scenes: 4}")
    assert scheduled_jobs(result) == {"synth", "tile"}


def test_bad_config_stops_before_any_rule(tiled):
    repo, work, env = tiled
    result = run_snakemake(work, env, "-n", "--config", "tiling={size: big}")
    assert result.returncode != 0 and "config key tiling.size" in result.stdout + result.stderr


def test_atsg_info_describes_the_store(tiled):
    repo, work, env = tiled
    out = subprocess.run(
        ["atsg", "info", str(work / "results" / "tiny" / "tiles.zarr")],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "images" in out and "shape=(12, 3, 128, 128)" in out and "chunks=(1, 3, 128, 128)" in out
    assert "classes:" in out and "tiles store" in out


def test_every_environment_installs_this_checkout_with_the_tested_pins():
    """`--sdm conda`: envs/gpu.yaml and envs/cpu.yaml (which rules use which: test_pipeline_graph) install this
    checkout with constraints.txt; the CPU one takes torch's CPU wheels."""
    for kind in ("gpu", "cpu"):
        spec = yaml.safe_load((REPO / "envs" / f"{kind}.yaml").read_text())
        pip = next(d["pip"] for d in spec["dependencies"] if isinstance(d, dict))
        assert "-c ../constraints.txt" in pip and "-e .." in pip
    assert any(
        "download.pytorch.org/whl/cpu" in line
        for line in yaml.safe_load((REPO / "envs" / "cpu.yaml").read_text())["dependencies"][-1]["pip"]
    )


def test_atsg_output_read_in_part_is_not_a_failure(tiled):
    """`atsg info STORE | head` (as .ci/run does, under pipefail): a reader that stops early is no error. Here
    the reader stops before atsg has written anything, so every write meets the closed pipe."""
    repo, work, env = tiled
    script = f"set -o pipefail; atsg info {work / 'results' / 'tiny' / 'tiles.zarr'} | true"
    result = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True)
    assert result.returncode == 0 and "error" not in result.stderr, result.stderr[-2000:]
