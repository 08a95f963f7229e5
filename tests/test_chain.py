"""The whole chain through Snakemake on a tiny config: every store, model, GeoTIFF, metric and figure."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import yaml
import zarr
from conftest import REPO, TINY, job_counts, run_snakemake, scheduled_jobs, tiny_config
from oracles import iou_by_class

from atsg.artifacts import artifact_key, upstream
from atsg.config import load_config, run_keys
from atsg.stages.common import file_sha256
from atsg.store import TileReader, open_store

# A sharded stage is three rules: the empty store, one job per shard, the finalising step.
MASKS = {"generate_masks_prepare", "generate_masks_shard", "generate_masks"}
CAMS = {"extract_cams_prepare", "extract_cams_shard", "extract_cams"}
PREDICT = {"predict_prepare", "predict_shard", "predict"}
AFTER_MASKS = {"refine_labels", "train_segmentation", *PREDICT, "evaluate", "report", "all"}
"""What a change of the masks reruns after them (the supervised bound reads no masks)."""


def test_stores_have_the_schema_shapes(chain):
    _, _, run = chain
    tiles = open_store(run / "tiles.zarr", "tiles")
    n = tiles["images"].shape[0]
    cams = open_store(run / "cams.zarr", "cams")
    assert cams["cams"].shape == (n, 5, 32, 32) and cams["cams_aux"].shape == (n, 5, 32, 32)
    assert cams["cams"].dtype == np.float16 and 0 <= float(cams["cams"][:].min()) <= float(cams["cams"][:].max()) <= 1
    assert cams.attrs["scales"] == [1.0, 0.5, 1.5] and cams.attrs["flip"] is True
    assert len(cams.attrs["classifier_sha256"]) == 64 and cams.attrs["config"]["cams"]["output_stride"] == 4
    masks = open_store(run / "masks.zarr", "masks")
    assert masks["objects"].shape == (n, 128, 128) and masks.attrs["generator"] == "felzenszwalb"
    assert int(masks["objects"][:].max()) <= 50
    pseudo = open_store(run / "pseudo_labels.zarr", "pseudo_labels")
    assert pseudo["labels"].shape == (n, 128, 128)
    assert set(np.unique(pseudo["labels"][:])) <= set(range(6)) | {255}
    assert pseudo.attrs["config"]["refine"]["par"] is True
    for name in ("predictions.zarr", "supervised_predictions.zarr"):
        pred = open_store(run / name, "predictions")
        assert pred["labels"].shape == (n, 128, 128) and int(pred["labels"][:].max()) < 6


_PLAIN_ZARR = """
import hashlib, importlib.abc, json, sys
class NoAtsg(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "atsg" or name.startswith("atsg."):
            raise ImportError(f"{name}: atsg is not installed here")
sys.meta_path.insert(0, NoAtsg())
import zarr
g = zarr.open_group(sys.argv[1], mode="r")
print(json.dumps({k: [list(a.shape), hashlib.sha256(a[:].tobytes()).hexdigest()] for k, a in g.arrays()}))
assert "atsg" not in sys.modules
"""


def test_every_store_opens_with_plain_zarr_without_atsg(chain):
    """Default stores use only codecs of the zarr v3 specification: a reader with zarr and no atsg gets the same
    arrays atsg's reader does (a store in the atsg.wavelet53 codec, say, fails here)."""
    _, _, run = chain
    for name, kind in (("tiles.zarr", "tiles"), ("cams.zarr", "cams"), ("pseudo_labels.zarr", "pseudo_labels")):
        out = subprocess.run(
            [sys.executable, "-c", _PLAIN_ZARR, str(run / name)], capture_output=True, text=True, check=False
        )
        assert out.returncode == 0, out.stderr[-3000:]
        plain = json.loads(out.stdout)
        store = open_store(run / name, kind)
        assert set(plain) == {k for k, _ in store.arrays()}
        for key, (shape, digest) in plain.items():
            array = store[key]
            ours = TileReader(array).read(range(array.shape[0])) if array.chunks[0] == 1 else array[:]
            assert list(ours.shape) == shape and hashlib.sha256(ours.tobytes()).hexdigest() == digest, (name, key)


def test_models_and_training_metrics(chain):
    _, _, run = chain
    for stage, key in (("classifier", "cam_miou_calibrated"), ("segmentation", "miou"), ("supervised", "miou")):
        metrics = json.loads((run / stage / "metrics.json").read_text())
        assert metrics["select_metric"] == key and [h["step"] for h in metrics["history"]] == [2, 4]
        assert metrics["best_step"] in (2, 4) and (run / stage / "model.pt").stat().st_size > 0
        assert (run / stage / "checkpoints" / "last.pt").exists()
    history = json.loads((run / "classifier" / "metrics.json").read_text())["history"]
    assert all(h["cam_miou_calibrated"] >= h["cam_miou"] and 0.05 <= h["bkg_thre_calibrated"] <= 0.6 for h in history)
    pretrain = json.loads((run / "pretrain" / "metrics.json").read_text())
    assert pretrain["method"] == "ibot" and pretrain["history"][-1]["step"] == 4


def test_geotiffs_carry_the_scene_georeference(chain):
    _, _, run = chain
    scenes = sorted((run / "scenes").glob("*_RGB.tif"))
    tifs = sorted((run / "predictions").glob("*.tif"))
    assert len(tifs) == len(scenes) == 3
    for scene, tif in zip(scenes, tifs):
        with rasterio.open(scene) as src, rasterio.open(tif) as pred:
            assert pred.crs == src.crs and pred.transform == src.transform
            assert (pred.width, pred.height) == (src.width, src.height) and pred.dtypes[0] == "uint8"
            assert pred.read(1).max() < 6


def test_scene_geotiff_agrees_with_tile_predictions(chain):
    _, _, run = chain
    tiles = open_store(run / "tiles.zarr", "tiles")
    pred = open_store(run / "predictions.zarr", "predictions")
    scene = tiles.attrs["scenes"][0]
    with rasterio.open(run / "predictions" / f"{scene['id']}.tif") as tif:
        full = tif.read(1)
    row, col, h, w = tiles.attrs["tiles"]["window"][scene["first_tile"]]
    assert (full[row : row + h, col : col + w] == pred["labels"][scene["first_tile"]]).mean() > 0.99


def test_evaluation_outputs(chain):
    _, _, run = chain
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert set(metrics) == {
        "cam",
        "cam_all_classes",
        "pseudo_labels",
        "predictions",
        "supervised",
        "majority",
        "classification",
        "lineage",
    }
    for entry in (v for k, v in metrics.items() if k not in ("lineage", "majority", "classification")):
        assert entry["split"] == "test" and 0 <= entry["miou"] <= 1 and 0 <= entry["oa"] <= 1
        assert set(entry["iou"]) == {"clutter", "impervious_surface", "building", "low_vegetation", "tree", "car"}
        assert "mean_f1" in entry and "val" in entry["splits"]
    assert "weak_to_supervised" in metrics["supervised"]
    # the baselines the report states beside the stages: the majority class, the all-classes classifier
    assert metrics["majority"]["class"] in metrics["cam"]["iou"] and 0 < metrics["majority"]["miou"] < 0.5
    for entry in metrics["classification"].values():
        assert 0 <= entry["f1"] <= 1 and 0 < entry["f1_all_classes"] <= 1 and entry["tiles"] > 0
    rows = (run / "eval" / "confusion.csv").read_text().splitlines()
    assert len(rows) == 7 and rows[0].split(",")[1] == "clutter"
    report = (run / "eval" / "report.md").read_text()
    assert "mIoU by stage and split" in report and "pseudo-labels" in report and "majority class" in report
    assert "| test |" in report.split("## Classifier")[1]
    for fig in ("samples.png", "confusion.png", "legend.png"):
        assert (run / "eval" / "figures" / fig).stat().st_size > 1000


def test_evaluation_scores_equal_a_per_pixel_count_of_the_stores(chain):
    """What evaluate reports for the stores it reads equals an independent per-pixel count (tests/oracles.py),
    split by split: one scoring path, checked end to end."""
    _, _, run = chain
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    tiles = open_store(run / "tiles.zarr", "tiles")
    truth, split = tiles["labels"][:], tiles["split"][:]
    classes = list(tiles.attrs["classes"])
    for source, store in (
        ("pseudo_labels", "pseudo_labels"),
        ("predictions", "predictions"),
        ("supervised", "supervised_predictions"),
    ):
        pred = open_store(run / f"{store}.zarr", "pseudo_labels" if store == "pseudo_labels" else "predictions")
        pred = pred["labels"][:]
        for code, name in enumerate(("train", "val", "test")):
            expected = iou_by_class(truth[split == code], pred[split == code], len(classes))
            got = metrics[source]["splits"][name]["iou"]
            assert [got[c] for c in classes] == pytest.approx(expected, abs=1e-9), (source, name)


def test_rerun_after_the_chain_schedules_nothing(chain):
    work, env, _ = chain
    result = run_snakemake(work, env, "-n")
    assert result.returncode == 0 and "Nothing to be done" in result.stdout + result.stderr


def _moved_away(path: Path):
    """Context: ``path`` is absent inside the block and back (same mtime) after it."""
    import contextlib

    @contextlib.contextmanager
    def ctx():
        aside = path.with_name(path.name + ".aside")
        os.replace(path, aside)
        try:
            yield
        finally:
            os.replace(aside, path)

    return ctx()


@pytest.mark.parametrize(
    "missing, rules",
    [
        ("segmentation/model.pt", {"train_segmentation", *PREDICT, "evaluate"}),
        (
            "classifier/metrics.json",
            {"train_classifier", *CAMS, "refine_labels", "train_segmentation", *PREDICT, "evaluate"},
        ),
        ("masks.zarr", {*MASKS, "refine_labels", "train_segmentation", *PREDICT, "evaluate"}),
        ("supervised/model.pt", {"train_supervised", "predict_supervised", "evaluate"}),
        ("predictions", {*PREDICT, "evaluate"}),
    ],
)
def test_a_missing_output_is_rebuilt_with_everything_after_it(chain, missing, rules):
    work, env, run = chain
    with _moved_away(run / missing):
        result = run_snakemake(work, env, "-n")
    assert scheduled_jobs(result) == rules | {"report", "all"}


def test_a_killed_training_after_a_config_change_is_redone_before_the_report(chain):
    """Snakemake removes the outputs of a killed job; the next run must rebuild them, not report the old rows."""
    work, env, run = chain
    seg = {**TINY["segmentation"], "seed": 5}
    flow = yaml.safe_dump(seg, default_flow_style=True, width=10_000).strip()
    with _moved_away(run / "segmentation" / "model.pt"), _moved_away(run / "segmentation" / "metrics.json"):
        result = run_snakemake(work, env, "-n", "--config", f"segmentation={flow}")
    assert scheduled_jobs(result) == {
        "train_segmentation",
        "train_supervised",
        *PREDICT,
        "predict_supervised",
        "evaluate",
        "report",
        "all",
    }


def test_every_artifact_records_the_key_of_the_current_config(chain):
    """Each stage computes its key from its own settings and its inputs' recorded keys; all equal the keys the
    config makes, and the report names the keys of everything it scored."""
    _, _, run = chain
    cfg = tiny_config()
    stores = {
        "tiles": "tiles.zarr",
        "cams": "cams.zarr",
        "masks": "masks.zarr",
        "pseudo_labels": "pseudo_labels.zarr",
        "predictions": "predictions.zarr",
        "supervised_predictions": "supervised_predictions.zarr",
    }
    for name, folder in stores.items():
        attrs = zarr.open_group(str(run / folder), mode="r").attrs
        assert attrs["artifact"] == name and attrs["artifact_key"] == artifact_key(cfg, name), name
    for name in ("classifier", "segmentation", "supervised"):
        model = torch.load(run / name / "model.pt", weights_only=False)
        assert model["artifact_key"] == artifact_key(cfg, name), name
    manifest = json.loads((run / "scenes" / "manifest.json").read_text())
    assert manifest["artifact_key"] == artifact_key(cfg, "scenes")
    lineage = json.loads((run / "eval" / "metrics.json").read_text())["lineage"]
    assert lineage["inputs"] == {a: artifact_key(cfg, a) for a in upstream(cfg, "eval")}
    assert lineage["artifact_key"] == artifact_key(cfg, "eval")
    assert artifact_key(cfg, "predictions")[:16] in (run / "eval" / "report.md").read_text()


def test_evaluate_refuses_an_input_made_with_other_settings(chain, tmp_path):
    work, env, run = chain
    cfg = tiny_config()
    expect = {a: artifact_key(cfg, a) for a in upstream(cfg, "eval")}
    expect["predictions"] = artifact_key(
        load_config([REPO / "config" / "config.yaml"], {**TINY, "predict": {"flip": True}}), "predictions"
    )
    log = tmp_path / "evaluate.log"
    result = subprocess.run(
        [
            "atsg",
            "evaluate",
            "--configfile",
            str(REPO / "config" / "config.yaml"),
            "--configfile",
            str(work / "tiny.yaml"),
            "--tiles",
            str(run / "tiles.zarr"),
            "--cams",
            str(run / "cams.zarr"),
            "--pseudo-labels",
            str(run / "pseudo_labels.zarr"),
            "--predictions",
            str(run / "predictions.zarr"),
            "--supervised",
            str(run / "supervised_predictions.zarr"),
            "--expect",
            json.dumps(expect),
            "--out",
            str(tmp_path / "eval"),
            "--log",
            str(log),
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    line = result.stderr.strip().splitlines()[-1]
    assert "predictions.zarr: made with other settings than this run's" in line and "rerun predict" in line
    assert not (tmp_path / "eval" / "metrics.json").exists()
    assert line.split("error: ", 1)[1] in log.read_text() and "Traceback" in log.read_text()


RUN_ONLY = {
    "tiling": "{gdal_cache_mb: 64, tiles_per_read: 2}",
    "classifier": "{device: cpu, threads: 1, workers: 0, log_every: 1, checkpoint_every: 3}",
    "cams": "{batch_size: 3, device: cpu, threads: 1}",
    "masks": "{batch_size: 2, points_per_batch: 8, device: cpu}",
    "refine": "{batch_size: 5, device: cpu, threads: 1}",
    "segmentation": "{device: cpu, threads: 1, workers: 0, log_every: 1, checkpoint_every: 3}",
    "predict": "{batch_size: 2, device: cpu, threads: 1}",
    "devices": "{count: 0, wait_seconds: 5}",
    "train": "{backend: gloo}",
}


@pytest.mark.parametrize("section", list(RUN_ONLY))
def test_changing_how_a_stage_runs_reruns_nothing(chain, section):
    work, env, _ = chain
    assert set(yaml.safe_load(RUN_ONLY[section])) <= run_keys().get(section, set(yaml.safe_load(RUN_ONLY[section])))
    result = run_snakemake(work, env, "-n", "--config", f"{section}={RUN_ONLY[section]}")
    assert result.returncode == 0 and "Nothing to be done" in result.stdout + result.stderr, (
        result.stdout + result.stderr
    )[-2000:]


def test_a_resumed_training_keeps_its_checkpoint_when_only_run_keys_change(chain, tmp_path):
    work, env, run = chain
    base = [
        sys.executable,
        "-m",
        "atsg.cli",
        "train_classifier",
        "--configfile",
        str(REPO / "config" / "config.yaml"),
        "--configfile",
        str(work / "tiny.yaml"),
        "--tiles",
        str(run / "tiles.zarr"),
        "--pretrain",
        str(run / "pretrain"),
        "--out",
        str(tmp_path),
    ]
    subprocess.run(base, env=env, check=True, capture_output=True)
    first = torch.load(tmp_path / "model.pt", weights_only=False)
    again = subprocess.run(
        base
        + [
            "--set",
            "classifier.log_every=1",
            "--set",
            "classifier.workers=1",
            "--set",
            "classifier.checkpoint_every=3",
            "--set",
            "classifier.threads=1",
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resuming from step 4" in again.stderr
    assert json.loads((tmp_path / "metrics.json").read_text())["resumed_from"] == 4
    second = torch.load(tmp_path / "model.pt", weights_only=False)
    assert all(torch.equal(first["state_dict"][k], second["state_dict"][k]) for k in first["state_dict"])
    assert second["artifact_key"] == first["artifact_key"] == artifact_key(tiny_config(), "classifier")


def test_refine_change_reruns_refine_and_what_follows_only(chain):
    work, env, _ = chain
    result = run_snakemake(work, env, "-n", "--config", "refine={par_iterations: 3, batch_size: 4}")
    assert scheduled_jobs(result) == {"refine_labels", "train_segmentation", *PREDICT, "evaluate", "report", "all"}


def test_masks_change_does_not_rerun_classifier_or_cams(chain):
    work, env, _ = chain
    result = run_snakemake(work, env, "-n", "--config", "masks={generator: slic}")
    assert scheduled_jobs(result) == {*MASKS, *AFTER_MASKS}


def test_forcerun_generate_masks_reruns_masks_and_what_follows_only(chain):
    work, env, _ = chain
    result = run_snakemake(work, env, "-n", "--forcerun", "generate_masks")
    assert scheduled_jobs(result) == {*MASKS, *AFTER_MASKS}


def test_weak_loss_change_retrains_the_weak_model_not_the_supervised_bound(chain):
    work, env, _ = chain
    seg = {**TINY["segmentation"], "object_loss": {"weight": 0.5}}
    flow = yaml.safe_dump(seg, default_flow_style=True, width=10_000).strip()
    result = run_snakemake(work, env, "-n", "--config", f"segmentation={flow}")
    assert scheduled_jobs(result) == {"train_segmentation", *PREDICT, "evaluate", "report", "all"}


def test_ablation_schedules_only_what_each_variant_changes(chain):
    work, env, _ = chain
    result = run_snakemake(work, env, "-n", "ablation")
    assert result.returncode == 0, result.stderr[-2000:]
    # 4 classifier variants (CTC, PTC, linking off, classifier seed) rerun from the classifier on; 4 refinement
    # variants (PAR, voting, the affinity walk, the CRF of the pseudo-labels) from the pseudo-labels on; 5 loss and
    # seed variants retrain the segmentation model (the segmentation seed also the supervised bound); the CRF
    # variant of the predictions only predicts again, with both models. Tiles and masks are the run's.
    assert job_counts(result) == {
        "train_classifier": 4,
        **dict.fromkeys(CAMS, 4),
        "refine_labels": 8,
        "train_segmentation": 13,
        **dict.fromkeys(PREDICT, 14),
        "evaluate": 14,
        "ablation": 1,
        "train_supervised": 1,
        "predict_supervised": 2,
    }


def test_ablation_table_from_shared_artifacts(chain):
    work, env, run = chain
    variants = (
        "{no_voting: {description: voting, set: {refine: {mask_voting: false}}}, "
        "same: {description: nothing, set: {refine: {mask_voting: true}}}}"
    )
    result = run_snakemake(work, env, "ablation", "--config", f"ablation={{splits: [test], variants: {variants}}}")
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert job_counts(result) == {
        "refine_labels": 1,
        "train_segmentation": 1,
        **dict.fromkeys(PREDICT, 1),
        "evaluate": 1,
        "ablation": 1,
    }  # "same" changes nothing: it is the run's own row
    assert not (run / "ablations" / "no_voting" / "cams.zarr").exists()
    assert (run / "ablations" / "no_voting" / "pseudo_labels.zarr").exists()
    assert (
        open_store(run / "ablations" / "no_voting" / "pseudo_labels.zarr", "pseudo_labels").attrs["config"]["refine"][
            "mask_voting"
        ]
        is False
    )
    table = json.loads((run / "eval" / "ablation.json").read_text())
    assert [r["variant"] for r in table["rows"]] == ["full", "no_voting", "same"]
    main = json.loads((run / "eval" / "metrics.json").read_text())
    assert table["rows"][0]["miou"]["test"]["predictions"] == pytest.approx(
        main["predictions"]["splits"]["test"]["miou"]
    )
    same = table["rows"][2]
    assert same["same_as_full"] and same["miou"] == table["rows"][0]["miou"]
    assert same["delta_predictions"]["test"] == 0.0 and not (run / "ablations" / "same").exists()
    voting = table["rows"][1]["miou"]["test"]
    assert voting["cam"] == table["rows"][0]["miou"]["test"]["cam"]  # CAMs are shared, so equal
    md = (run / "eval" / "ablation.md").read_text()
    assert "| no_voting | voting |" in md and "Δ pred. test" in md
    report = run_snakemake(
        work,
        env,
        "ablation",
        "--report",
        str(work / "ablation.html"),
        "--config",
        f"ablation={{splits: [test], variants: {variants}}}",
    )
    assert report.returncode == 0, report.stderr[-2000:]
    assert "Ablation" in (work / "ablation.html").read_text(errors="replace")


@pytest.fixture(scope="module")
def paper(tmp_path_factory):
    env = dict(os.environ, PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    work = tmp_path_factory.mktemp("paper")
    cfg = {
        **TINY,
        "run": "paper",
        "evaluate": {**TINY["evaluate"], "supervised_baseline": False},
        "classifier": {**TINY["classifier"], "joint_segmentation": True, "select_metric": "seg_miou"},
        "segmentation": {**TINY["segmentation"], "loss_warmup_iterations": 2},
    }
    (work / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    result = run_snakemake(work, env)
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    return work, env, work / "results" / "paper", result


def test_paper_mode_trains_one_network_and_predicts_with_it(paper):
    work, env, run, result = paper
    counts = job_counts(result)
    assert "train_segmentation" not in counts and "train_supervised" not in counts
    assert counts["train_classifier_joint"] == 1 and "train_classifier" not in counts
    assert all(counts[rule] == 1 for rule in MASKS)
    metrics = json.loads((run / "classifier" / "metrics.json").read_text())
    assert metrics["joint_segmentation"] is True and metrics["select_metric"] == "seg_miou"
    assert all("seg_miou" in h and "cam_miou" in h for h in metrics["history"])
    segmenter = torch.load(run / "classifier" / "segmenter.pt", weights_only=False)
    assert segmenter["atsg_model"] == "segmentation" and segmenter["joint"] is True
    assert not any(k.startswith("foreground.") for k in segmenter["state_dict"])
    pred = open_store(run / "predictions.zarr", "predictions")
    assert pred.attrs["model_sha256"] == file_sha256(run / "classifier" / "segmenter.pt")
    assert int(pred["labels"][:].max()) < 6
    eval_metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert set(eval_metrics) == {
        "cam",
        "cam_all_classes",
        "pseudo_labels",
        "predictions",
        "majority",
        "classification",
        "lineage",
    }


def test_paper_mode_retrains_on_a_segmentation_change_the_staged_mode_ignores(paper):
    work, env, run, _ = paper
    seg = {**TINY["segmentation"], "loss_warmup_iterations": 2, "seg_weight": 0.2}
    flow = yaml.safe_dump(seg, default_flow_style=True, width=10_000).strip()
    result = run_snakemake(work, env, "-n", "--config", f"segmentation={flow}")
    assert scheduled_jobs(result) == {
        "train_classifier_joint",
        *CAMS,
        "refine_labels",
        *PREDICT,
        "evaluate",
        "report",
        "all",
    }


def test_atsg_ablate_runs_the_ablation_target(chain):
    work, env, _ = chain
    result = subprocess.run(
        [
            "atsg",
            "ablate",
            "--cores",
            "1",
            "--configfile",
            str(REPO / "config" / "config.yaml"),
            "--configfile",
            "tiny.yaml",
            "--",
            "-n",
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert job_counts(result)["train_classifier"] == 4 and job_counts(result)["ablation"] == 1


def test_atsg_ablate_reports_a_failed_workflow(chain):
    work, env, _ = chain
    result = subprocess.run(
        [
            "atsg",
            "ablate",
            "--configfile",
            str(REPO / "config" / "config.yaml"),
            "--configfile",
            "tiny.yaml",
            "--",
            "-n",
            "--config",
            "tiling={size: x}",
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2 and "atsg ablate: error: snakemake exited with 1" in result.stderr
