"""Debian packages the tests need (SLURM, Chromium), installed with apt when missing, as root."""

from __future__ import annotations

import os
import shutil
import subprocess


def can_install() -> str | None:
    """Why packages cannot be installed here (None when they can)."""
    if os.geteuid() != 0:
        return "installing Debian packages needs root"
    if shutil.which("apt-get") is None:
        return "there is no apt-get"
    return None


def install(*packages: str) -> None:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", *packages]
    if subprocess.run(cmd, env=env, capture_output=True, timeout=900).returncode != 0:  # stale package lists
        subprocess.run(["apt-get", "update"], env=env, check=True, capture_output=True, timeout=600)
        subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=900)
