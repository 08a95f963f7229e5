"""Multi-process training: a training command with ``train.gpus > 1`` starts itself again through torchrun.

The first call (from the rule, or a user) claims the GPUs (atsg.gpus), then runs
``python -m torch.distributed.run --standalone --nproc-per-node N -m atsg.cli <the same arguments>``.
Each of the N processes it starts sees RANK / WORLD_SIZE / LOCAL_RANK, joins the
process group (NCCL on GPUs, gloo on CPU) and trains its share of every batch
under DistributedDataParallel; rank 0 alone validates, checkpoints and writes
the outputs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence

from .errors import ConfigError, DataError

log = logging.getLogger(__name__)

ARGV = "ATSG_TORCHRUN_ARGV"
"""Environment variable that hands the command's arguments to the torchrun processes."""


def torchrun_argv() -> list[str] | None:
    """The arguments of the command a torchrun process runs (None outside a launch)."""
    return json.loads(os.environ[ARGV]) if under_torchrun() and ARGV in os.environ else None


def under_torchrun() -> bool:
    """True in a process torchrun started (it sets WORLD_SIZE and RANK)."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def _dist():
    """torch.distributed, imported when first needed: the CLI's bookkeeping steps start without torch."""
    import torch.distributed as dist

    return dist


def rank() -> int:
    dist = _dist()
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else int(os.environ.get("RANK", 0))


def world_size() -> int:
    dist = _dist()
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", 1)) if under_torchrun() else 1


def is_main() -> bool:
    """The process that validates, checkpoints, logs to the file and writes outputs."""
    return rank() == 0


def all_sum(tensor):
    """The sum of ``tensor`` over every training process (itself when there is one)."""
    dist = _dist()
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    tensor = tensor.clone()
    dist.all_reduce(tensor)
    return tensor


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def check_batch(batch_size: int, section: str, processes: int) -> int:
    """Tiles per step of each process: ``batch_size`` split evenly over the processes."""
    if batch_size % processes:
        raise ConfigError(
            f"config key {section}.batch_size: {batch_size} tiles cannot be split evenly over "
            f"train.gpus={processes} processes; use a multiple of {processes}"
        )
    return batch_size // processes


@contextlib.contextmanager
def process_group(backend: str) -> Iterator[None]:
    """Join the process group of this torchrun launch for the block (a no-op outside torchrun)."""
    if not under_torchrun() or int(os.environ["WORLD_SIZE"]) == 1:
        yield
        return
    import torch

    dist = _dist()
    if backend == "auto":
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend=backend)
    log.info("process %d of %d joined (%s)", dist.get_rank(), dist.get_world_size(), backend)
    try:
        yield
    finally:
        dist.destroy_process_group()


def launch(argv: Sequence[str], processes: int) -> None:
    """Run this command again as ``processes`` torchrun processes and wait for them."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={processes}",
        "-m",
        "atsg.cli",
    ]
    # torchrun's own parser would read (and reject) options of ours such as --log: the processes get them here
    env = dict(os.environ, **{ARGV: json.dumps(list(argv))})
    log.info("starting %d training processes: %s (atsg %s)", processes, " ".join(cmd), " ".join(argv))
    code = subprocess.run(cmd, env=env).returncode
    if code:
        raise DataError(f"torchrun with {processes} processes exited with {code}; see the log above")
