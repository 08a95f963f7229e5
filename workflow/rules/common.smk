# Paths, params and input functions shared by every rule file (functions live here only).
#
# The stages after tiling write under a `{root}` folder: the run's own (results/{run}) or, for an ablation
# variant, results/{run}/ablations/{name}. CONFIGS holds the config each root is made with; ROOTS tells where
# a root's upstream artifacts are (a variant reads whatever it shares with the run).
#
# One declaration, atsg.artifacts, says what each stage reads (`reads`: upstream artifacts, their files and
# options) and which config sections make it (`own_sections`). Rule inputs, params and command lines are
# derived from it here, as are artifact keys and ablation sharing in the package: they cannot drift apart.
import json
import os
import re
import shlex
from pathlib import Path
from types import SimpleNamespace

from snakemake.exceptions import WorkflowError

from atsg.ablation import artifact_roots, variant_configs
from atsg.artifacts import (
    REPORT_CATEGORIES,
    REPORT_SECTIONS,
    artifact_files,
    artifact_key,
    artifact_params,
    joint,
    needed,
    reads,
    report_reads,
    upstream,
)
from atsg.config import run_dir, run_json, section_json
from atsg.shards import partial_path
from atsg.stages.map import find_inputs

RUN = run_dir(config)
LOGS = RUN / "logs"
BENCH = RUN / "benchmarks"

# Mapping new imagery (the map stage): the rasters of map.inputs, the maps and the blocks' work stores.
MAP_RASTERS = [str(p) for p in find_inputs(config["map"]["inputs"])] if config["map"]["inputs"] else []
MAPS = RUN / "maps"
MAPS_WORK = RUN / ".maps.work"
# CPU threads of model stages: what a rule reserves (Snakemake scales it down to --cores) and, as --threads,
# the most torch threads a stage uses. A stage's torch thread count is its `threads` key, else the CPUs the
# process may use up to this limit: never --cores, so results do not depend on how Snakemake is started.
TRAIN_THREADS = 8
STAGE_THREADS = 4

# How stages run, not what they make (the run sections devices, train, shards and every `x-run` key of the
# schema): never params, so changing them reruns nothing. Every stage reads them from the environment variable
# ATSG_RUNTIME (`--params "$ATSG_RUNTIME"`), which Snakemake also passes on to cluster jobs.
os.environ["ATSG_RUNTIME"] = run_json(config)


envvars:
    "ATSG_RUNTIME",

SHARDS = config["shards"]
TRAIN_GPUS = config["train"]["gpus"]  # processes (one GPU each) of every training job
GPU_ENV = "../../envs/gpu.yaml"
CPU_ENV = "../../envs/cpu.yaml"

VARIANTS = variant_configs(config)  # a bad ablation variant stops here with one line
ROOTS = artifact_roots(config, VARIANTS)
VARIANT_ROOTS = {str(RUN): None, **{str(RUN / "ablations" / name): name for name in VARIANTS}}
CONFIGS = {str(RUN): config, **{str(RUN / "ablations" / name): cfg for name, cfg in VARIANTS.items()}}


wildcard_constraints:
    root="|".join(re.escape(root) for root in CONFIGS),
    shard=r"\d+",


def cfg_of(wildcards):
    """The config a root's artifacts are made with (the run's for rules without a root: synth, tile)."""
    return CONFIGS[root_of(wildcards)]


def root_of(wildcards):
    return getattr(wildcards, "root", str(RUN))


def artifact(wildcards, name, *parts):
    """Path of artifact `name` (then `parts`) as the root of `wildcards` reads it."""
    return ROOTS[VARIANT_ROOTS[root_of(wildcards)]][name].joinpath(*parts)


def every_output(variant=None):
    """Every file the rules declare for the evaluation of the run (variant None) or of an ablation variant.

    Targets of `all` and `ablation`: a missing model, store or metrics file anywhere in the chain is then
    rebuilt by a plain `snakemake`, and everything after it reruns because it is older (Snakemake alone skips
    a missing intermediate file whose consumers are up to date).
    """
    cfg = CONFIGS[str(RUN / "ablations" / variant)] if variant else config
    roots = ROOTS[variant]
    return [str(roots[a] / f) for a in needed(cfg, "eval") for f in artifact_files(cfg, a)]


def report_inputs():
    """The report's inputs: the files of atsg.artifacts.report_reads, where the run's artifacts are, and every
    file of the evaluation (its figures go into the page)."""
    roots = ROOTS[None]
    found = {name: str(roots[name] / f) for name, f in report_reads(config).items()}
    return {**found, "eval_files": [str(roots["eval"] / f) for f in artifact_files(config, "eval")]}


def report_args():
    """The options that hand the report its inputs: --tiles, --eval (the folder) and --training NAME=PATH."""
    found = {name: path for name, path in report_inputs().items() if name != "eval_files"}
    args = [f"--tiles {shlex.quote(found.pop('tiles'))}", f"--eval {shlex.quote(str(Path(found.pop('eval')).parent))}"]
    return " ".join(args + [f"--training {shlex.quote(f'{name}={path}')}" for name, path in found.items()])


REPORT = RUN / "report"
REPORT_FILES = [str(REPORT / f) for f in ("run.rst", "iou.png", "training.png")]


def report_page():
    """The page `snakemake --report` opens on: the run's report/run.rst once rule report has made it, else the
    workflow's description (which says to run the workflow first)."""
    page = REPORT / "run.rst"
    return str(page.resolve()) if page.is_file() else "workflow/report/workflow.rst"


def stage_inputs(name):
    """Input function of the stage making artifact `name` (its rule): the file of each artifact its stage reads."""

    def inputs(wildcards):
        return {up: artifact(wildcards, up, read.file) for up, read in reads(cfg_of(wildcards), name).items()}

    return inputs


def stage_args(name):
    """The options that hand a rule's inputs to its stage (`--tiles PATH ...`), as one shell-quoted string."""

    def args(wildcards):
        found = reads(cfg_of(wildcards), name).items()
        return " ".join(f"{r.option} {shlex.quote(str(artifact(wildcards, up, r.arg or r.file)))}" for up, r in found)

    return args


def stage_params(name):
    """The artifact settings of the sections that make artifact `name`, as canonical JSON: Snakemake reruns the
    stage when they change. A function, so that braces in the JSON (e.g. "{scene}") are not read as wildcards.
    """
    return lambda wildcards: artifact_params(cfg_of(wildcards), name)


def expected_keys(target):
    """`--expect` of a stage: the artifact keys this root's config makes for the inputs of `target`."""

    def keys(wildcards):
        cfg = cfg_of(wildcards)
        return json.dumps({up: artifact_key(cfg, up) for up in upstream(cfg, target)}, sort_keys=True)

    return keys


def out_dir(name):
    """`--out` of a stage that writes a folder of files: {root}/{name}."""
    return lambda wildcards: f"{wildcards.root}/{name}"


def partial(path):
    """The hidden name a sharded store (or folder) is built under until its stage finalises it."""
    return str(partial_path(path))


def roots_where(paper_mode):
    """A regex of the roots whose config is (or is not) in paper mode; one that never matches if none."""
    roots = [re.escape(root) for root, cfg in CONFIGS.items() if joint(cfg) == paper_mode]
    return "|".join(roots) if roots else "(?!)"


def gpus_of(stage):
    """GPUs of one job of a sharded stage: SAM runs on one, superpixel masks on none."""

    def gpus(wildcards):
        return 0 if stage == "generate_masks" and cfg_of(wildcards)["masks"]["generator"] != "sam" else 1

    return gpus


def threads_of(stage):
    """CPU threads of one job of a sharded stage: torch stages STAGE_THREADS, superpixels one core."""
    return lambda wildcards: STAGE_THREADS if gpus_of(stage)(wildcards) else 1


def map_inputs(wildcards):
    """The run's model that `map.model` names, and the input rasters."""
    if not MAP_RASTERS:
        raise WorkflowError(
            "map.inputs is empty: set it to the rasters to map (files, folders or globs) in a "
            "--configfile or with --config, e.g. map='{inputs: [new/*.tif]}'"
        )
    run = SimpleNamespace(root=str(RUN))
    name = "supervised_predictions" if config["map"]["model"] == "supervised" else "predictions"
    models = [artifact(run, up, r.file) for up, r in reads(config, name).items() if r.option == "--model"]
    return {"model": models[0], "rasters": MAP_RASTERS}


def map_args(wildcards, input):
    """`--model`, `--out`, `--work` and the rasters of the map stage (--redo: Snakemake decides what reruns)."""
    rasters = " ".join(shlex.quote(p) for p in MAP_RASTERS)
    paths = " ".join(f"{k} {shlex.quote(str(v))}" for k, v in (("--model", input.model), ("--out", MAPS), ("--work", MAPS_WORK)))
    return f"{paths} --redo {rasters}"


def store_args(name, outputs):
    """Input options plus `--out` (and predict's `--geotiffs`) of a sharded stage on a root."""
    derived = stage_args(name)
    options = {"store": "--out", "geotiffs": "--geotiffs"}

    def args(wildcards, input):
        made = " ".join(f"{options[k]} {shlex.quote(v.format(root=wildcards.root))}" for k, v in outputs.items())
        return f"{derived(wildcards)} {made}"

    return args


def shard_markers(where, stage, shards):
    """Input of a finalising rule: the marker of each of the stage's `shards` jobs."""
    return lambda wildcards: [f"{where}/shards/{stage}/{k}.json".format(root=root_of(wildcards)) for k in range(shards)]


def shard_of(shards):
    """`K/S` of a shard job."""
    return lambda wildcards: f"{wildcards.shard}/{shards}"
