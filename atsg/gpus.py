"""One GPU per job on a local machine: a job claims free devices through lock files.

Snakemake's ``--resources gpu=N`` bounds how many GPUs the running jobs ask for
together; which device each job gets is decided here. A job takes an exclusive
``flock`` on ``{lock_dir}/gpu{i}.lock`` for each device it uses and exports
``CUDA_VISIBLE_DEVICES`` to them before CUDA starts. The kernel drops the lock
when the process ends, even on SIGKILL, so a killed job never leaves a device
claimed. When ``CUDA_VISIBLE_DEVICES`` is already set (SLURM sets it for every
job with a GPU request) the job uses what it was given and claims nothing.
Settings: config section ``devices``.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from .errors import ConfigError, DataError

log = logging.getLogger(__name__)

VISIBLE = "CUDA_VISIBLE_DEVICES"


def device_count(setting) -> int:
    """GPUs on this machine: ``devices.count`` when it is a number, else what ``nvidia-smi -L`` lists (0 without
    it). Counted without touching CUDA in this process, so CUDA_VISIBLE_DEVICES can still be set afterwards."""
    if setting != "auto":
        return int(setting)
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return 0
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def lock_dir(cfg: Mapping) -> Path:
    """Folder of the lock files: ``devices.lock_dir``, else one per machine in the temporary folder."""
    path = Path(cfg["lock_dir"]) if cfg.get("lock_dir") else Path(tempfile.gettempdir()) / "atsg-gpu-locks"
    path.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(PermissionError):  # shared by every user of the machine
        os.chmod(path, 0o1777)
    return path


def _try_lock(path: Path) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _release(fds: dict[int, int]) -> None:
    for fd in fds.values():
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _holders(folder: Path, count: int) -> str:
    text = []
    for i in range(count):
        with contextlib.suppress(OSError):
            text.append(f"gpu{i}: {(folder / f'gpu{i}.lock').read_text().strip() or '?'}")
    return "; ".join(text)


@contextlib.contextmanager
def claim_devices(n: int, cfg: Mapping, job: str, stage_device: str = "auto") -> Iterator[list[str] | None]:
    """Hold ``n`` free devices for the block and make them the only ones CUDA sees.

    Yields the device ids, or None when nothing is claimed: no GPU asked for, the stage set to run on the CPU,
    a machine without GPUs, or CUDA_VISIBLE_DEVICES already set (then used as given).
    """
    if n <= 0 or stage_device == "cpu":
        yield None
        return
    given = os.environ.get(VISIBLE)
    if given is not None:
        log.info("%s: using CUDA_VISIBLE_DEVICES=%s as given", job, given)
        yield None
        return
    count = device_count(cfg["count"])
    if count == 0:
        yield None
        return
    if n > count:
        raise ConfigError(f"{job} asks for {n} GPUs but this machine has {count} (config key devices.count)")
    folder = lock_dir(cfg)
    deadline = time.monotonic() + cfg["wait_seconds"]
    waited = False
    while True:
        fds: dict[int, int] = {}
        for i in range(count):
            fd = _try_lock(folder / f"gpu{i}.lock")
            if fd is not None:
                fds[i] = fd
                if len(fds) == n:
                    break
        if len(fds) == n:
            break
        _release(fds)
        if time.monotonic() > deadline:
            raise DataError(
                f"{job}: no {n} free GPU(s) of {count} after {cfg['wait_seconds']} s "
                f"(lock files in {folder}: {_holders(folder, count)}); "
                "lower --resources gpu or set devices.count"
            )
        if not waited:
            log.info("%s: waiting for %d free GPU(s) (lock files in %s)", job, n, folder)
            waited = True
        time.sleep(0.5)
    ids = [str(i) for i in fds]
    for fd in fds.values():
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} {job}\n".encode(), 0)
    os.environ[VISIBLE] = ",".join(ids)
    log.info("%s: claimed GPU(s) %s (CUDA_VISIBLE_DEVICES=%s)", job, ", ".join(ids), os.environ[VISIBLE])
    try:
        yield ids
    finally:
        os.environ.pop(VISIBLE, None)
        _release(fds)
