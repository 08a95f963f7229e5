# Paths, params and input functions shared by every rule.
#
# Every rule after tiling writes under a `{root}` folder: the run's own (results/{run}) or, for an
# ablation variant, results/{run}/ablations/{name}. CONFIGS holds the config each root is made with;
# ARTIFACT tells where a root's upstream artifacts are (a variant reads whatever it shares with the run).
import json
import re
from pathlib import Path

from atsg.ablation import artifact_roots, variant_configs
from atsg.artifacts import artifact_files, artifact_key, joint, needed, needs_masks, upstream, uses_pretrain
from atsg.config import dataset_root, run_dir, run_json, section_json, supervised_json
from atsg.shards import partial_path

RUN = run_dir(config)
LOGS = RUN / "logs"
BENCH = RUN / "benchmarks"
SYNTHETIC = config["dataset"]["preset"] == "synthetic"
# CPU threads of model stages: what a rule reserves (Snakemake scales it down to --cores) and, as --threads,
# the most torch threads a stage uses. A stage's torch thread count is its `threads` key, else the CPUs the
# process may use up to this limit: never --cores, so results do not depend on how Snakemake is started.
TRAIN_THREADS = 8
STAGE_THREADS = 4

# How stages run, not what they make (the run sections devices, train, shards and every `x-run` key of the
# schema): passed on the command line, never as params, so changing them reruns nothing.
RUNTIME = run_json(config)
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


def every_output(variant=None):
    """Every file the rules declare for the evaluation of the run (variant None) or of an ablation variant.

    Targets of `all` and `ablation`: a missing model, store or metrics file anywhere in the chain is then
    rebuilt by a plain `snakemake`, and everything after it reruns because it is older (Snakemake alone skips
    a missing intermediate file whose consumers are up to date).
    """
    cfg = CONFIGS[str(RUN / "ablations" / variant)] if variant else config
    roots = ROOTS[variant]
    return [str(roots[a] / f) for a in needed(cfg, "eval") for f in artifact_files(cfg, a)]


def expected_keys(target):
    """`--expect` of a stage: the artifact keys this root's config makes for the inputs of `target`."""

    def keys(wildcards):
        cfg = cfg_of(wildcards)
        return json.dumps({up: artifact_key(cfg, up) for up in upstream(cfg, target)}, sort_keys=True)

    return keys


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
