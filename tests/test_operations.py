"""Operations at scale: sharded stages, one GPU per job, resume after SIGKILL (on the chain's artifacts)."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import zarr
from conftest import REPO, job_counts, run_snakemake, tiny_config

from atsg.errors import ConfigError, DataError
from atsg.gpus import claim_devices
from atsg.shards import Shard, Step, partial_path
from atsg.stages.extract_cams import run_extract_cams
from atsg.stages.generate_masks import run_generate_masks
from atsg.stages.predict import run_predict
from atsg.store import open_store


def stores_equal(a: Path, b: Path) -> None:
    ga, gb = zarr.open_group(str(a), mode="r"), zarr.open_group(str(b), mode="r")
    assert dict(ga.attrs) == dict(gb.attrs)
    assert sorted(ga.array_keys()) == sorted(gb.array_keys())
    for name in ga.array_keys():
        assert ga[name].dtype == gb[name].dtype and np.array_equal(ga[name][:], gb[name][:]), name


def copy_chain(chain, dest: Path) -> Path:
    """A copy of the chain's work folder (results and Snakemake's records, times kept) to change freely."""
    work, _, _ = chain
    shutil.copytree(work, dest, symlinks=True)
    return dest


def test_shard_parse_and_pick():
    assert Shard.parse("2/5") == Shard(2, 5) and str(Shard(2, 5)) == "2/5"
    assert Shard(1, 3).pick(range(8)) == [1, 4, 7] and Shard(0, 1).pick("abc") == ["a", "b", "c"]
    for bad in ("3/3", "x", "1/0", "-1/2"):
        with pytest.raises(DataError, match="--shard"):
            Shard.parse(bad)
    with pytest.raises(DataError, match="cannot be combined"):
        Step.from_args(True, "0/2", Path("m.json"), False, [])
    with pytest.raises(DataError, match="--marker"):
        Step.from_args(False, "0/2", None, False, [])
    with pytest.raises(DataError, match="--markers"):
        Step.from_args(False, None, None, True, [])


def _shards(run, out: Path, markers: Path, count: int, order=None) -> None:
    """Prepare, fill every shard (in ``order``), finalise: the three kinds of job of a sharded rule."""
    run(out, Step("prepare"))
    done = []
    for k in order or range(count):
        done.append(markers / f"{k}.json")
        run(out, Step("shard", Shard(k, count), done[-1]))
        assert not out.exists()  # nothing is in place before the finalising step
    run(out, Step("finalise", markers=tuple(sorted(done))))


def test_sharded_stages_write_the_stores_of_the_unsharded_run(chain, tmp_path):
    _, _, run = chain
    cfg = tiny_config()
    tiles = run / "tiles.zarr"
    _shards(
        lambda out, step: run_extract_cams(cfg, tiles, run / "classifier" / "model.pt", out, step),
        tmp_path / "cams.zarr",
        tmp_path / "m_cams",
        3,
        order=[2, 0, 1],
    )
    stores_equal(tmp_path / "cams.zarr", run / "cams.zarr")
    _shards(
        lambda out, step: run_generate_masks(cfg, tiles, out, step), tmp_path / "masks.zarr", tmp_path / "m_masks", 5
    )
    stores_equal(tmp_path / "masks.zarr", run / "masks.zarr")
    _shards(
        lambda out, step: run_predict(
            cfg, tiles, run / "segmentation" / "model.pt", out, tmp_path / "predictions", step
        ),
        tmp_path / "predictions.zarr",
        tmp_path / "m_pred",
        2,
        order=[1, 0],
    )
    stores_equal(tmp_path / "predictions.zarr", run / "predictions.zarr")
    tifs = sorted(p.name for p in (run / "predictions").glob("*.tif"))
    assert tifs == sorted(p.name for p in (tmp_path / "predictions").glob("*.tif")) and len(tifs) == 3
    for name in tifs:
        with rasterio.open(run / "predictions" / name) as a, rasterio.open(tmp_path / "predictions" / name) as b:
            assert np.array_equal(a.read(), b.read()) and a.transform == b.transform and a.crs == b.crs
    marker = json.loads((tmp_path / "m_pred" / "1.json").read_text())
    assert marker["shard"] == 1 and marker["shards"] == 2 and marker["scenes"] == 1 and marker["units"] == 1


def test_an_unfinished_sharded_store_never_looks_complete(chain, tmp_path):
    _, _, run = chain
    cfg = tiny_config()
    out, markers = tmp_path / "masks.zarr", tmp_path / "markers"
    masks = lambda step: run_generate_masks(cfg, run / "tiles.zarr", out, step)  # noqa: E731
    with pytest.raises(DataError, match="--prepare first"):
        masks(Step("shard", Shard(0, 2), markers / "0.json"))
    masks(Step("prepare"))
    masks(Step("shard", Shard(0, 2), markers / "0.json"))
    with pytest.raises(DataError, match=r"shards \[1\] of 2 have not finished"):
        masks(Step("finalise", markers=(markers / "0.json",)))
    assert not out.exists()
    with pytest.raises(DataError, match="unfinished sharded masks store"):
        open_store(partial_path(out), "masks")
    masks(Step("prepare"))  # a new partial store: the old shard's marker no longer counts
    masks(Step("shard", Shard(1, 2), markers / "1.json"))
    with pytest.raises(DataError, match=r"shard\(s\) \[0\] filled an earlier partial store"):
        masks(Step("finalise", markers=(markers / "0.json", markers / "1.json")))
    masks(Step("shard", Shard(0, 2), markers / "0.json"))
    masks(Step("finalise", markers=(markers / "0.json", markers / "1.json")))
    stores_equal(out, run / "masks.zarr")
    assert not partial_path(out).exists()


def _atsg(*args) -> list[str]:
    return [sys.executable, "-m", "atsg.cli", *map(str, args)]


def _kill_when(cmd, env, ready, timeout=120) -> None:
    """Start ``cmd`` in its own process group and SIGKILL the group as soon as ``ready()`` holds."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"{cmd[3]} finished before the kill point"
        assert time.monotonic() < deadline, "kill point never reached"
        time.sleep(0.005)
    assert proc.poll() is None, f"{cmd[3]} finished before the kill point"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def test_a_killed_shard_leaves_no_marker_and_its_rerun_completes_the_store(chain, tmp_path):
    work, env, run = chain
    out, marker = tmp_path / "masks.zarr", tmp_path / "0.json"
    base = [
        "--configfile",
        REPO / "config" / "config.yaml",
        "--configfile",
        work / "tiny.yaml",
        "--tiles",
        run / "tiles.zarr",
        "--out",
        out,
    ]
    subprocess.run(_atsg("generate_masks", "--prepare", *base), env=env, check=True, capture_output=True)
    array = partial_path(out) / "objects"
    _kill_when(
        _atsg("generate_masks", "--shard", "0/1", "--marker", marker, *base),
        env,
        lambda: array.exists() and any(array.glob("c.*")),
    )
    assert not marker.exists() and not out.exists()
    finalise = subprocess.run(
        _atsg("generate_masks", "--finalise", "--markers", marker, *base), env=env, capture_output=True, text=True
    )
    assert finalise.returncode == 2 and "unreadable shard marker" in finalise.stderr
    subprocess.run(
        _atsg("generate_masks", "--shard", "0/1", "--marker", marker, *base), env=env, check=True, capture_output=True
    )
    subprocess.run(
        _atsg("generate_masks", "--finalise", "--markers", marker, *base), env=env, check=True, capture_output=True
    )
    stores_equal(out, run / "masks.zarr")


def _checkpoint_step(path: Path) -> int:
    try:
        return torch.load(path, weights_only=False)["step"]
    except Exception:  # not there yet (it is renamed into place whole)
        return -1


def _weights(path: Path) -> dict:
    return torch.load(path, weights_only=False)["state_dict"]


LONGER = [
    "--set",
    "classifier.iterations=40",
    "--set",
    "classifier.checkpoint_every=10",
    "--set",
    "classifier.val_every=20",
    "--set",
    "segmentation.iterations=40",
    "--set",
    "segmentation.checkpoint_every=10",
    "--set",
    "segmentation.val_every=20",
]


@pytest.fixture(scope="module")
def uninterrupted(chain, tmp_path_factory):
    """stage -> (its arguments, the folder of its uninterrupted run), each trained once."""
    work, env, run = chain
    runs = {}

    def get(stage):
        if stage not in runs:
            base = [
                "--configfile",
                REPO / "config" / "config.yaml",
                "--configfile",
                work / "tiny.yaml",
                *LONGER,
                "--threads",
                2,
                "--tiles",
                run / "tiles.zarr",
                "--pretrain",
                run / "pretrain",
            ]
            if stage == "train_segmentation":
                base += ["--labels", run / "pseudo_labels.zarr", "--masks", run / "masks.zarr"]
            full = tmp_path_factory.mktemp(stage)
            subprocess.run(_atsg(stage, *base, "--out", full), env=env, check=True, capture_output=True)
            runs[stage] = base, full
        return runs[stage]

    return get


@pytest.mark.parametrize(
    "stage,kill_at", [("train_classifier", 0), ("train_classifier", 20), ("train_segmentation", 10)]
)
def test_a_killed_training_job_resumes_and_ends_as_an_uninterrupted_run(chain, uninterrupted, tmp_path, stage, kill_at):
    _, env, _ = chain
    base, full_dir = uninterrupted(stage)
    out = tmp_path / "killed"
    last = out / "checkpoints" / "last.pt"
    log = out / "log.txt"
    ready = (
        (lambda: log.exists() and "step" in log.read_text())
        if kill_at == 0
        else (lambda: _checkpoint_step(last) >= kill_at)
    )
    _kill_when(_atsg(stage, *base, "--out", out, "--log", log), env, ready)
    assert not (out / "model.pt").exists() and not (out / "metrics.json").exists()
    subprocess.run(_atsg(stage, *base, "--out", out), env=env, check=True, capture_output=True)
    resumed = json.loads((out / "metrics.json").read_text())
    full = json.loads((full_dir / "metrics.json").read_text())
    assert resumed["resumed_from"] >= kill_at and resumed["resumed_from"] % 10 == 0
    assert resumed["best_step"] == full["best_step"] and resumed["best_score"] == pytest.approx(full["best_score"])
    a, b = _weights(out / "model.pt"), _weights(full_dir / "model.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_killed_workflow_redoes_only_the_unfinished_shards(chain, tmp_path):
    work = copy_chain(chain, tmp_path / "work")
    _, env, run = chain
    shards = ["--config", "shards={generate_masks: 3}"]
    cmd = [
        "snakemake",
        "-s",
        str(REPO / "Snakefile"),
        "-d",
        str(work),
        "--configfile",
        str(REPO / "config" / "config.yaml"),
        str(work / "tiny.yaml"),
        "--cores",
        "1",
        "--forcerun",
        "generate_masks",
        "--until",
        "generate_masks",
        *shards,
    ]
    markers = work / "results" / "tiny" / "shards" / "generate_masks"
    logs = work / "results" / "tiny" / "logs"
    for old in logs.glob("generate_masks.shard*.log"):
        old.unlink()
    # the kill comes while the second shard runs: one shard finished, one half done, one not started
    _kill_when(
        cmd,
        env,
        lambda: len(list(markers.glob("*.json"))) == 1 and len(list(logs.glob("generate_masks.shard*.log"))) == 2,
        timeout=300,
    )
    with pytest.raises(DataError, match="unfinished sharded masks store"):
        open_store(partial_path(work / "results" / "tiny" / "masks.zarr"), "masks")
    subprocess.run(
        ["snakemake", "-s", str(REPO / "Snakefile"), "-d", str(work), "--unlock"],
        env=env,
        check=True,
        capture_output=True,
    )
    result = run_snakemake(work, env, "--until", "generate_masks", "--rerun-incomplete", *shards)
    assert result.returncode == 0, result.stderr[-3000:]
    assert job_counts(result) == {"generate_masks_shard": 2, "generate_masks": 1}  # shard 0 and the store stay
    stores_equal(work / "results" / "tiny" / "masks.zarr", run / "masks.zarr")


def test_four_shards_at_once_take_four_distinct_devices(chain, tmp_path):
    work = copy_chain(chain, tmp_path / "work")
    _, env, run = chain
    result = run_snakemake(
        work,
        env,
        "--cores",
        "4",
        "--resources",
        "gpu=4",
        "--set-threads",
        "extract_cams_shard=1",
        "--notemp",
        "--forcerun",
        "extract_cams",
        "--until",
        "extract_cams",
        "--config",
        "shards={extract_cams: 4}",
        f"devices={{count: 4, lock_dir: {tmp_path / 'locks'}}}",
        "cams={batch_size: 1}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    markers = [
        json.loads(p.read_text()) for p in (work / "results" / "tiny" / "shards" / "extract_cams").glob("*.json")
    ]
    assert sorted(m["shard"] for m in markers) == [0, 1, 2, 3]
    assert sorted(m["visible_devices"] for m in markers) == ["0", "1", "2", "3"]
    for a in markers:  # never two jobs on one device at the same time
        for b in markers:
            if a is not b and a["started"] < b["finished"] and b["started"] < a["finished"]:
                assert a["visible_devices"] != b["visible_devices"]
    logs = [(work / "results" / "tiny" / "logs" / f"extract_cams.shard{k}.log").read_text() for k in range(4)]
    assert all("claimed GPU(s)" in text for text in logs)


def _holder(lock_dir: Path, seconds: float) -> subprocess.Popen:
    """Another process that holds one of two devices."""
    code = (
        "import sys, time; from atsg.gpus import claim_devices\n"
        f"with claim_devices(1, {{'count': 2, 'lock_dir': {str(lock_dir)!r}, 'wait_seconds': 0}}, 'holder'):\n"
        "    print('held', flush=True); time.sleep(float(sys.argv[1]))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_claim_devices_hands_out_free_devices_and_a_kill_frees_them(tmp_path, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    cfg = {"count": 2, "lock_dir": str(tmp_path), "wait_seconds": 0.3}
    holder = _holder(tmp_path, 60)
    with claim_devices(1, cfg, "job") as ids:
        assert ids == ["1"] and os.environ["CUDA_VISIBLE_DEVICES"] == "1"
        third = subprocess.run(  # a third job while both devices are held
            [
                sys.executable,
                "-c",
                f"from atsg.gpus import claim_devices\nwith claim_devices(1, {cfg!r}, 'third'):\n    pass",
            ],
            env={k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"},
            capture_output=True,
            text=True,
        )
        assert third.returncode != 0
        assert re.search(r"no 1 free GPU\(s\) of 2 .*gpu0: pid \d+ holder; gpu1: pid \d+ job", third.stderr)
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with claim_devices(2, cfg, "both") as ids:  # the kernel dropped the killed holder's lock
        assert ids == ["0", "1"] and os.environ["CUDA_VISIBLE_DEVICES"] == "0,1"
    with pytest.raises(ConfigError, match="asks for 3 GPUs but this machine has 2"):
        with claim_devices(3, cfg, "big"):
            pass


def test_claim_devices_leaves_a_given_assignment_and_cpu_stages_alone(tmp_path, monkeypatch):
    cfg = {"count": 2, "lock_dir": str(tmp_path), "wait_seconds": 0}
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    with claim_devices(1, cfg, "slurm job") as ids:
        assert ids is None and os.environ["CUDA_VISIBLE_DEVICES"] == "3"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    with claim_devices(1, cfg, "cpu stage", stage_device="cpu") as ids:
        assert ids is None and "CUDA_VISIBLE_DEVICES" not in os.environ
    with claim_devices(1, {**cfg, "count": 0}, "no gpus") as ids:
        assert ids is None
    assert not list(tmp_path.glob("gpu*.lock"))


def test_range_sampler_shares_every_step_between_processes():
    from atsg.train.datasets import RangeSampler

    one = list(RangeSampler(2, 5, 4))
    shares = [list(RangeSampler(2, 5, 4, rank, 2)) for rank in (0, 1)]
    assert one == list(range(8, 20)) and len(RangeSampler(2, 5, 4, 1, 2)) == 6
    assert shares[0][:2] == [8, 9] and shares[1][:2] == [10, 11]
    assert sorted(shares[0] + shares[1]) == one


def test_two_training_processes_match_one(chain, tmp_path):
    """train.gpus=2 on CPU: torchrun, gloo, DistributedDataParallel, each process half of every batch. The
    classification loss is a mean over tiles, so two halves give the one-process gradient up to rounding."""
    work, env, run = chain
    base = [
        "--configfile",
        REPO / "config" / "config.yaml",
        "--configfile",
        work / "tiny.yaml",
        "--threads",
        1,
        "--tiles",
        run / "tiles.zarr",
        "--pretrain",
        run / "pretrain",
        "--set",
        "classifier.ptc.enabled=false",
        "--set",
        "classifier.ctc.enabled=false",
        "--set",
        "classifier.batch_size=4",
        "--set",
        "classifier.iterations=6",
    ]
    subprocess.run(
        _atsg("train_classifier", *base, "--out", tmp_path / "one"), env=env, check=True, capture_output=True
    )
    two = subprocess.run(
        _atsg(
            "train_classifier", *base, "--set", "train.gpus=2", "--out", tmp_path / "two", "--log", tmp_path / "two.log"
        ),
        env=env,
        capture_output=True,
        text=True,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    log = (tmp_path / "two.log").read_text()
    assert "starting 2 training processes" in log and "process 0 of 2 joined (gloo)" in log
    assert "process 1 of 2" not in log  # only rank 0 writes the log file
    a, b = _weights(tmp_path / "one" / "model.pt"), _weights(tmp_path / "two" / "model.pt")
    assert all(torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4) for k in a)
    one_m, two_m = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("one", "two"))
    assert two_m["best_step"] == one_m["best_step"]
    assert [h["cam_miou"] for h in two_m["history"]] == pytest.approx(
        [h["cam_miou"] for h in one_m["history"]], abs=1e-3
    )
    odd = subprocess.run(
        _atsg(
            "train_classifier",
            *base,
            "--set",
            "train.gpus=2",
            "--set",
            "classifier.batch_size=3",
            "--out",
            tmp_path / "odd",
        ),
        env=env,
        capture_output=True,
        text=True,
    )
    assert odd.returncode == 2 and "cannot be split evenly over train.gpus=2" in odd.stderr


def test_results_do_not_depend_on_snakemake_cores_or_other_load(chain, tmp_path):
    """The same config on the same machine gives the same model whatever --cores and whatever else runs: a
    stage's torch thread count is its own (threads key, else the CPUs it may use), never Snakemake's."""
    work = copy_chain(chain, tmp_path / "work")
    _, env, run = chain
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        cmd = [
            "snakemake",
            "-s",
            str(REPO / "Snakefile"),
            "-d",
            str(work),
            "--configfile",
            str(REPO / "config" / "config.yaml"),
            str(work / "tiny.yaml"),
            "--cores",
            "1",
            "--forcerun",
            "train_supervised",
            "--until",
            "train_supervised",
        ]
        result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    finally:
        for p in burners:
            p.kill()
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    again = json.loads((work / "results" / "tiny" / "supervised" / "metrics.json").read_text())
    first = json.loads((run / "supervised" / "metrics.json").read_text())
    assert again["torch_threads"] == first["torch_threads"]
    a, b = _weights(work / "results" / "tiny" / "supervised" / "model.pt"), _weights(run / "supervised" / "model.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("stage", ["refine", "predict"])
def test_refinement_and_prediction_do_not_depend_on_the_thread_count(chain, tmp_path, stage):
    from atsg.device import set_torch_threads
    from atsg.stages.refine_labels import run_refine_labels

    _, _, run = chain
    outs = []
    for threads in (1, 2):
        cfg = tiny_config()
        set_torch_threads({"threads": threads})
        out = tmp_path / f"{stage}{threads}.zarr"
        if stage == "refine":
            run_refine_labels(
                cfg, run / "tiles.zarr", run / "cams.zarr", run / "masks.zarr", run / "classifier" / "model.pt", out
            )
        else:
            run_predict(cfg, run / "tiles.zarr", run / "segmentation" / "model.pt", out, None)
        outs.append(out)
    set_torch_threads({})
    stores_equal(*outs)
