# Paths, params and input functions shared by every rule.
#
# Every rule after tiling writes under a `{root}` folder: the run's own (results/{run}) or, for an
# ablation variant, results/{run}/ablations/{name}. CONFIGS holds the config each root is made with;
# ARTIFACT tells where a root's upstream artifacts are (a variant reads whatever it shares with the run).
import re
from pathlib import Path

from atsg.ablation import artifact_roots, variant_configs
from atsg.artifacts import joint, needs_masks
from atsg.config import dataset_root, run_dir, section_json, supervised_json
from atsg.shards import partial_path

RUN = run_dir(config)
LOGS = RUN / "logs"
BENCH = RUN / "benchmarks"
SYNTHETIC = config["dataset"]["preset"] == "synthetic"
# Threads asked for by model stages; Snakemake scales them down to --cores.
TRAIN_THREADS = 8
STAGE_THREADS = 4

# Execution settings, not stage settings: passed on the command line, never as params, so changing them
# reruns nothing. Every GPU job reads `devices` (its local GPU claim) and `train` (its process count).
RUNTIME = section_json(config, "devices", "train")
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
    return CONFIGS[getattr(wildcards, "root", str(RUN))]


def artifact(wildcards, name, *parts):
    """Path of artifact `name` (then `parts`) as the root of `wildcards` reads it."""
    return ROOTS[VARIANT_ROOTS[wildcards.root]][name].joinpath(*parts)


def stage_params(*sections):
    """The config sections a stage depends on, as canonical JSON: Snakemake reruns the stage when they change.

    Returned through a function so that braces in the JSON (e.g. "{scene}") are not read as wildcards.
    """
    return lambda wildcards: section_json(cfg_of(wildcards), *sections)


def supervised_params(wildcards):
    """The segmentation settings the supervised upper bound depends on (no weak-only losses)."""
    return supervised_json(cfg_of(wildcards))


def out_dir(name):
    """`--out` of a stage that writes a folder of files: {root}/{name}."""
    return lambda wildcards: f"{wildcards.root}/{name}"


def scenes_input(wildcards):
    """The demo scenes when the dataset is synthetic; real data lies outside the workflow."""
    return [RUN / "scenes"] if SYNTHETIC else []


def partial(path):
    """The hidden name a sharded store (or folder) is built under until its stage finalises it."""
    return str(partial_path(path))


def shard_markers(stage):
    """Input of a finalising rule: the marker of each of the stage's `shards` jobs."""
    return lambda wildcards: [f"{wildcards.root}/shards/{stage}/{k}.json" for k in range(SHARDS[stage])]


def shard_of(stage):
    """`K/S` of a shard job."""
    return lambda wildcards: f"{wildcards.shard}/{SHARDS[stage]}"
