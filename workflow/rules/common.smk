# Paths, params and input functions shared by every rule.
from pathlib import Path

from atsg.config import dataset_root, run_dir, section_json, supervised_json

RUN = run_dir(config)
LOGS = RUN / "logs"
BENCH = RUN / "benchmarks"
SYNTHETIC = config["dataset"]["preset"] == "synthetic"
# Threads asked for by model stages; Snakemake scales them down to --cores.
TRAIN_THREADS = 8
STAGE_THREADS = 4


def stage_params(*sections):
    """The config sections a stage depends on, as canonical JSON: Snakemake reruns the stage when they change.

    Returned through a function so that braces in the JSON (e.g. "{scene}") are not read as wildcards.
    """
    value = section_json(config, *sections)
    return lambda wildcards: value


def supervised_params(wildcards):
    """The segmentation settings the supervised upper bound depends on (no weak-only losses)."""
    return supervised_json(config)


def scenes_input(wildcards):
    """The demo scenes when the dataset is synthetic; real data lies outside the workflow."""
    return [RUN / "scenes"] if SYNTHETIC else []
