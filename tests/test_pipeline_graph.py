"""One declaration of the pipeline graph (atsg.artifacts: `reads` and `own_sections`) makes the rules' inputs,
params and command lines, the artifact keys and ablation sharing. These tests parse the Snakefile in-process
(Snakemake's API) and compare every rule with the declaration, then change the declaration and see all three
follow."""

import json
import os
import re
import shlex
import subprocess
import sys

import pytest
from conftest import REPO, loaded_workflow, rule_io

from atsg import artifacts
from atsg.ablation import artifact_roots, variant_configs
from atsg.artifacts import artifact_key, artifact_params, reads
from atsg.config import load_config, run_json

# the rule that reads its inputs, per artifact made on a root (sharded stages: their shard jobs)
READING_RULE = {
    "pretrain": "pretrain",
    "classifier": "train_classifier",
    "cams": "extract_cams_shard",
    "masks": "generate_masks_shard",
    "pseudo_labels": "refine_labels",
    "segmentation": "train_segmentation",
    "supervised": "train_supervised",
    "predictions": "predict_shard",
    "supervised_predictions": "predict_supervised",
    "eval": "evaluate",
}
SHARDED = ("extract_cams", "generate_masks", "predict", "map")
VARIANTS = {
    "ablation": {
        "variants": {
            "no_par": {"set": {"refine": {"par": False}}},
            "pre": {"set": {"classifier": {"weights": "pretrain"}, "segmentation": {"weights": "pretrain"}}},
        }
    }
}


def _options(args: str) -> dict:
    toks = shlex.split(args)
    return {toks[i]: toks[i + 1] for i in range(0, len(toks), 2)}


@pytest.mark.parametrize("preset", ["demo", "paper", "variants"])
def test_every_rule_is_what_the_declaration_says(tmp_path, preset):
    files = (REPO / "config" / "config.yaml", REPO / "config" / "paper.yaml") if preset == "paper" else ()
    over = VARIANTS if preset == "variants" else {}
    cfg = load_config(files or [REPO / "config" / "config.yaml"], [over])
    configs = {"results/demo": cfg}
    configs.update({f"results/demo/ablations/{n}": v for n, v in variant_configs(cfg).items()})
    roots = artifact_roots(cfg)
    with loaded_workflow(tmp_path, over, files) as wf:
        for root, rcfg in configs.items():
            variant = root.rsplit("/", 1)[1] if "ablations" in root else None
            for art, rule in READING_RULE.items():
                if rule == "train_classifier" and rcfg["classifier"]["joint_segmentation"]:
                    rule = "train_classifier_joint"
                inputs, params = rule_io(wf, rule, root=root, shard="0")
                declared = reads(rcfg, art)
                where = {up: str(roots[variant][up] / r.file) for up, r in declared.items()}
                assert {k: v for k, v in inputs.items() if k in declared} == where, (root, rule)
                assert set(inputs) - set(declared) <= {"store", "geotiffs"}, (root, rule)  # a shard's work store
                assert params["cfg"] == artifact_params(rcfg, art), (root, rule)
                given = _options(params.get("reads") or params["args"])
                for up, r in declared.items():
                    assert given[r.option] == str(roots[variant][up] / (r.arg or r.file)), (root, rule, up)


def test_one_declaration_moves_rules_keys_and_sharing(tmp_path, monkeypatch):
    """Declare that CAM extraction also reads masks.zarr: the rule gets the input and the option, the CAMs' key
    depends on the masks settings, and a variant that changes masks no longer shares the run's CAMs."""
    over = {"ablation": {"variants": {"fine": {"set": {"masks": {"min_area": 20}}}}}}
    cfg = load_config([REPO / "config" / "config.yaml"], [over])
    variant = variant_configs(cfg)["fine"]
    assert artifact_key(cfg, "cams") == artifact_key(variant, "cams")
    assert artifact_roots(cfg)["fine"]["cams"] == artifact_roots(cfg)[None]["cams"]
    with loaded_workflow(tmp_path / "before", over) as wf:
        inputs, params = rule_io(wf, "extract_cams_shard", root="results/demo", shard="0")
    assert "masks" not in inputs and "--masks" not in params["args"]

    upstream = artifacts.upstream
    monkeypatch.setattr(artifacts, "upstream", lambda c, a: upstream(c, a) + (("masks",) if a == "cams" else ()))
    assert artifact_key(cfg, "cams") != artifact_key(variant, "cams")
    roots = artifact_roots(cfg)
    assert roots["fine"]["cams"] == roots[None]["cams"] / "ablations" / "fine"
    with loaded_workflow(tmp_path / "after", over) as wf:
        inputs, params = rule_io(wf, "extract_cams_shard", root="results/demo", shard="0")
        assert inputs["masks"] == "results/demo/masks.zarr"
        assert _options(params["args"])["--masks"] == "results/demo/masks.zarr"
        inputs, _ = rule_io(wf, "extract_cams_shard", root="results/demo/ablations/fine", shard="0")
        assert inputs["masks"] == "results/demo/ablations/fine/masks.zarr"


def test_sharded_stages_come_from_one_definition(tmp_path):
    """prepare / shard / finalise of every sharded stage: the same command, local bookkeeping (map's finalising
    step writes the COGs: a cluster job), GPU shards."""
    with loaded_workflow(tmp_path) as wf:
        for part in ("_prepare", "_shard", ""):
            commands = {wf.get_rule(f"{s}{part}").shellcmd for s in SHARDED}
            assert len(commands) == 1, part
        for stage in SHARDED:
            assert f"{stage}_prepare" in wf._localrules and (stage in wf._localrules) == (stage != "map")
            assert f"{stage}_shard" not in wf._localrules
            assert "gpu" in wf.get_rule(f"{stage}_shard").resources


def test_every_rule_runs_in_the_environment_of_its_kind_and_says_what_it_does(tmp_path, cli_env):
    """`--sdm conda`: GPU rules use envs/gpu.yaml, the others envs/cpu.yaml; `--list-rules` describes each."""
    with loaded_workflow(tmp_path) as wf:
        rules = [r for r in wf.rules if r.name != "all"]
        assert len(rules) == 24
        for rule in rules:
            kind = "gpu" if "gpu" in rule.resources else "cpu"
            assert rule.conda_env == f"../../envs/{kind}.yaml", rule.name
        names = {r.name for r in wf.rules}
    listed = subprocess.run(
        ["snakemake", "--list-rules"], cwd=REPO, env=cli_env, capture_output=True, text=True, check=True
    ).stdout
    described = dict(re.fullmatch(r"(\w+) \((.+)\)", line).groups() for line in listed.splitlines() if line)
    assert set(described) == names
    assert all(len(text) > 20 for text in described.values()), described
    assert described["train_supervised"] != described["train_segmentation"]


def test_how_stages_run_reaches_every_stage_and_no_params(tmp_path):
    """Run keys (devices, shards, threads, ...) go to the stages as $ATSG_RUNTIME, which Snakemake passes on to
    cluster jobs, and never into params: changing them reruns nothing."""
    runtime = {"shards": {"extract_cams": 3}, "cams": {"batch_size": 7}, "devices": {"wait_seconds": 5}}
    cfg = load_config([REPO / "config" / "config.yaml"], [runtime])
    with loaded_workflow(tmp_path / "a") as wf:
        plain = {
            r.name: rule_io(wf, r.name, root="results/demo", shard="0")[1]
            for r in wf.rules
            if r.name != "all" and not r.name.startswith("map")
        }
    with loaded_workflow(tmp_path / "b", runtime) as wf:
        assert json.loads(os.environ["ATSG_RUNTIME"]) == json.loads(run_json(cfg))
        assert "ATSG_RUNTIME" in wf.envvars
        for name, params in plain.items():  # a shard job's K/S aside: its marker is temporary
            now = rule_io(wf, name, root="results/demo", shard="0")[1]
            assert {k: v for k, v in now.items() if k != "shard"} == {k: v for k, v in params.items() if k != "shard"}
        assert rule_io(wf, "extract_cams_shard", root="results/demo", shard="0")[1]["shard"] == "0/3"
        for rule in wf.rules:
            if rule.name not in ("all", "synth", "ablation", "evaluate", "report"):  # these read no run key
                assert '--params "$ATSG_RUNTIME"' in rule.shellcmd, rule.name


# rules that run another stage's subcommand: variants of a stage, the steps of a sharded stage, the ablation table
RUNS_OTHER = {"train_supervised": "train_segmentation", "predict_supervised": "predict", "ablation": "ablation_table"}


def test_rule_subcommand_and_stage_module_share_a_name(tmp_path):
    from atsg.cli import build_parser

    subcommands = set(build_parser()._subparsers._group_actions[0].choices)
    with loaded_workflow(tmp_path) as wf:
        for rule in wf.rules:
            if rule.name == "all":
                continue
            command = rule.shellcmd.split()[1]
            if command == "{params.stage}":
                command = rule.params["stage"]
            assert command in subcommands, rule.name
            stage = rule.name.removesuffix("_prepare").removesuffix("_shard").removesuffix("_joint")
            assert RUNS_OTHER.get(stage, stage) == command, rule.name
            if stage not in RUNS_OTHER:
                assert (REPO / "atsg" / "stages" / f"{stage}.py").is_file(), rule.name
    packages = {p.parent.name for p in (REPO / "atsg").rglob("__init__.py")}
    modules = {p.stem for p in (REPO / "atsg").rglob("*.py") if p.name != "__init__.py"}
    assert packages & modules == set()


def test_the_architecture_page_is_true():
    """docs/architecture.md: its stage graph is what the declaration makes, and every path it names exists."""
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "update_architecture.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    page = (REPO / "docs" / "architecture.md").read_text()
    paths = set(re.findall(r"`((?:atsg|workflow|tests|scripts|config|docs)/[^`\s<]*)`", page))
    assert len(paths) > 20
    assert [p for p in paths if not (REPO / p).exists()] == []
    with_rules = set(re.findall(r"\| `\w+` \| `(\w+)` \|", page))
    assert with_rules >= {"tile", "train_classifier", "extract_cams", "evaluate"}


@pytest.mark.parametrize(
    "over, trainings",
    [
        ({}, ["pretrain", "classifier", "segmentation", "supervised"]),
        (
            {
                "classifier": {"weights": "random_init", "linking": {"enabled": False}},
                "segmentation": {"weights": "random_init"},
                "evaluate": {"supervised_baseline": False},
            },
            ["classifier", "segmentation"],
        ),
    ],
    ids=["demo", "no-pretrain-no-bound"],
)
def test_the_report_reads_what_the_declaration_says(tmp_path, over, trainings):
    """Rule report reads the tiles, every evaluation file and the metrics.json of each training the evaluation
    is made from (artifacts.report_reads), and hands them to `atsg report` as --tiles, --eval, --training."""
    cfg = load_config([REPO / "config" / "config.yaml"], [over])
    assert list(artifacts.report_reads(cfg)) == ["tiles", "eval", *trainings]
    with loaded_workflow(tmp_path, over) as wf:
        inputs, params = rule_io(wf, "report")
    run = "results/demo"
    expected = {"tiles": f"{run}/tiles.zarr", "eval": f"{run}/eval/metrics.json"}
    expected.update({t: f"{run}/{t}/metrics.json" for t in trainings})
    assert {k: v for k, v in inputs.items() if k != "eval_files"} == expected
    assert set(inputs["eval_files"]) == {f"{run}/{f}" for f in artifacts.artifact_files(cfg, "eval")}
    toks = shlex.split(params["reads"])
    assert toks[:4] == ["--tiles", f"{run}/tiles.zarr", "--eval", f"{run}/eval"]
    assert toks[4::2] == ["--training"] * len(trainings) and toks[5::2] == [f"{t}={expected[t]}" for t in trainings]
    assert set(json.loads(params["cfg"])) == set(artifacts.REPORT_SECTIONS)
