from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from atsg.config import load_config

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))


def preset_config(name: str, root: Path | str | None = None, **sections) -> dict:
    """The demo config overlaid with config/{name}.yaml (as users run it), then ``sections`` merged in."""
    files = [REPO / "config" / "config.yaml"]
    if name != "config":
        files.append(REPO / "config" / f"{name}.yaml")
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
    cmd = ["snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--configfile",
           str(workdir / "tiny.yaml"), "--cores", "2", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
