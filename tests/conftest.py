from __future__ import annotations

import contextlib
import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from atsg.config import load_config

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))


def preset_config(name: str, root: Path | str | None = None, **sections) -> dict:
    """config/{name}.yaml over the schema defaults (as users run it), then ``sections`` merged in."""
    files = [REPO / "config" / f"{name}.yaml"]
    params = {k: v for k, v in sections.items()}
    if root is not None:
        params.setdefault("dataset", {})["root"] = str(root)
    return load_config(files, params)


@pytest.fixture
def repo() -> Path:
    return REPO


@pytest.fixture
def cli_env() -> dict:
    """Environment whose PATH finds this interpreter's `atsg` and `snakemake`."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def job_counts(result) -> dict[str, int]:
    """Rule name -> job count from the 'Job stats' table of a snakemake (dry-)run's output."""
    text = result.stdout + result.stderr
    assert "Job stats:" in text, text[-3000:]
    jobs = text.split("Job stats:")[1].split("total")[0]
    return {line.split()[0]: int(line.split()[1]) for line in jobs.splitlines()[3:] if line.strip()}


def scheduled_jobs(result) -> set[str]:
    """Rule names in the 'Job stats' table of a snakemake (dry-)run's output."""
    return set(job_counts(result))


def run_snakemake(workdir: Path, env: dict, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    """This repository's workflow in ``workdir`` with ``workdir/tiny.yaml`` laid over the demo config."""
    cmd = [
        "snakemake",
        "-s",
        str(REPO / "Snakefile"),
        "-d",
        str(workdir),
        "--configfile",
        str(REPO / "config" / "config.yaml"),
        str(workdir / "tiny.yaml"),
        "--cores",
        "2",
        *args,
    ]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


TINY_VIT = {
    "backbone": "vit_tiny_patch16_224",
    "pretrained": False,
    "random_init": True,
    "img_size": 128,
    "patch_size": 16,
    "embed_dim": 32,
    "depth": 3,
    "num_heads": 2,
    "iterations": 4,
    "batch_size": 2,
    "crop_size": 64,
    "workers": 0,
    "val_every": 2,
    "checkpoint_every": 2,
    "lr_warmup_iterations": 1,
    "log_every": 2,
}
TINY_PRETRAIN = {
    **TINY_VIT,
    "views": {"global_size": 64, "local_crops": 2, "local_size": 32},
    "head": {"hidden_dim": 32, "bottleneck_dim": 16, "out_dim": 64},
    "val_tiles": 4,
}
"""A tiny pretrain section of TINY_VIT's architecture (config/config.yaml starts both models from it)."""
TINY = {
    "run": "tiny",
    "synthetic": {"scenes": 3, "size": 256, "seed": 1},
    "pretrain": TINY_PRETRAIN,
    "tiling": {"size": 128, "stride": 128},
    "split": {"ratios": [1, 1, 1]},
    "classifier": {**TINY_VIT, "linking": {"enabled": True}},
    "segmentation": {**TINY_VIT, "decoder_channels": 16},
    "cams": {"batch_size": 4},
    "refine": {"batch_size": 4},
    "evaluate": {"split": "test", "supervised_baseline": True, "figure_tiles": 2},
}
"""The tiny end-to-end config (over config/config.yaml) of the chain fixture; tokens linked by the pretrain
stage's teacher as published (the demo measured linking off)."""


def run_workflow(tmp_path_factory, name: str, cfg: dict) -> tuple[Path, dict, Path]:
    """The whole workflow run once with ``cfg`` over the demo config in a fresh folder: (work folder,
    environment, results/{run})."""
    env = dict(os.environ, PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    env.pop("CUDA_VISIBLE_DEVICES", None)
    work = tmp_path_factory.mktemp(name)
    (work / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    result = run_snakemake(work, env)
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    return work, env, work / "results" / cfg["run"]


@pytest.fixture(scope="session")
def chain(tmp_path_factory):
    """The whole workflow run once on TINY: (work folder, environment, results/tiny). Tests that change files
    work on a copy (copy_chain)."""
    return run_workflow(tmp_path_factory, "chain", TINY)


def tiny_config() -> dict:
    """The config the chain's jobs ran with (config/config.yaml with TINY over it)."""
    return load_config([REPO / "config" / "config.yaml"], TINY)


@contextlib.contextmanager
def loaded_workflow(workdir: Path, config: dict | None = None, configfiles: tuple[Path, ...] = ()):
    """The Snakefile parsed in this process (Snakemake's API) with ``config`` as --config: its rules can be
    inspected without running anything."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import (
        ConfigSettings,
        ResourceSettings,
        StorageSettings,
        WorkflowSettings,
    )

    here, env = Path.cwd(), dict(os.environ)
    try:
        with SnakemakeApi() as api:
            wf = api.workflow(
                resource_settings=ResourceSettings(cores=1),
                config_settings=ConfigSettings(config=config or {}, configfiles=list(configfiles)),
                storage_settings=StorageSettings(),
                workflow_settings=WorkflowSettings(),
                snakefile=REPO / "Snakefile",
                workdir=workdir,
            )
            yield wf._workflow
    finally:
        os.chdir(here)
        os.environ.clear()
        os.environ.update(env)


def rule_io(workflow, name: str, **wildcards) -> tuple[dict, dict]:
    """(named input, params) of rule ``name`` for ``wildcards``, with every input and params function applied."""
    from snakemake.iocontainers import Wildcards

    rule = workflow.get_rule(name)
    wc = Wildcards(fromdict=wildcards)
    inputs = rule.expand_input(wc)[0]
    files = {"input": inputs, "output": rule.expand_output(wc)[0]}
    params = {}
    for key, value in rule.params.items():
        if callable(value):  # Snakemake passes wildcards, then input, output, ... by their parameter names
            value = value(wc, *(files[name] for name in list(inspect.signature(value).parameters)[1:]))
        params[key] = value
    return dict(inputs.items()), params
