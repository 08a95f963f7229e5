"""Device choice and CPU threads from a stage's config section."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

import torch

from .errors import ConfigError

log = logging.getLogger(__name__)


def select_device(cfg: Mapping, section: str) -> torch.device:
    """``auto`` -> cuda if available, else cpu; an explicit cuda device that is missing is an error."""
    name = cfg.get("device", "auto")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and "LOCAL_RANK" in os.environ:  # one of several torchrun processes: its own GPU
        name = f"cuda:{os.environ['LOCAL_RANK']}"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"config key {section}.device: {name!r} is not a device (auto, cpu, cuda, cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"config key {section}.device: {name} requested but no CUDA device is available")
    return device


def available_cpus() -> int:
    """CPUs this process may run on (its affinity: what a SLURM allocation or taskset gives it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def set_torch_threads(section: Mapping, limit: int | None = None) -> int:
    """Fix torch's CPU threads for a stage: its ``threads`` key if set, else the CPUs this process may use (at
    most ``limit``, what the rule passes). Results on CPU depend on the thread count in the last bits, so it
    never depends on how many cores Snakemake was given or what else runs."""
    n = int(section.get("threads") or min(limit or available_cpus(), available_cpus()))
    torch.set_num_threads(n)
    log.info("torch CPU threads: %d", n)
    return n


def cpu_bf16_supported() -> bool:
    """Whether this CPU runs bf16 matrix products natively (AVX512-BF16 or AMX), as oneDNN sees it."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch without oneDNN
        return False


def autocast_dtype(device: torch.device, cfg: Mapping) -> torch.dtype | None:
    """The autocast dtype of a training section on ``device``: on CUDA with ``amp`` bf16 where the GPU supports
    it (else fp16), on CPU with ``cpu_amp`` bf16; None for full precision."""
    if device.type == "cuda":
        if not cfg.get("amp"):
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if cfg.get("cpu_amp"):
        if not cpu_bf16_supported():
            log.warning("cpu_amp: this CPU has neither AVX512-BF16 nor AMX; bf16 autocast will be slower than fp32")
        return torch.bfloat16
    return None


def autocast(device: torch.device, dtype: torch.dtype | None):
    """Autocast to ``dtype`` on ``device`` (autocast_dtype); a no-op context for None."""
    if dtype is None:
        return torch.autocast(device_type=device.type, enabled=False)
    return torch.autocast(device_type=device.type, dtype=dtype)
