"""Device choice and CPU threads from a stage's config section."""

from __future__ import annotations

import os
from typing import Mapping

import torch

from .errors import ConfigError


def select_device(cfg: Mapping, section: str) -> torch.device:
    """``auto`` -> cuda if available, else cpu; an explicit cuda device that is missing is an error."""
    name = cfg.get("device", "auto")
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
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


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on CUDA devices that support it (else fp16); a no-op context on CPU."""
    if device.type != "cuda" or not enabled:
        return torch.autocast(device_type="cpu", enabled=False)
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast(device_type="cuda", dtype=dtype)
