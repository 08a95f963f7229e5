"""Seconds spent inside model calls, so a stage can show its overhead beyond the model (benchmarks/)."""

from __future__ import annotations

import time


class ModelClock:
    """Calls ``fn(*args, **kwargs)`` and, when enabled, adds its seconds to ``seconds``, synchronising a
    GPU before and after so that the time is the call's own."""

    def __init__(self, device, enabled: bool = True):
        self.enabled, self.seconds = enabled, 0.0
        self._sync = lambda: None
        if enabled and getattr(device, "type", str(device)).startswith("cuda"):
            import torch

            self._sync = torch.cuda.synchronize

    def __call__(self, fn, *args, **kwargs):
        if not self.enabled:
            return fn(*args, **kwargs)
        self._sync()
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        self._sync()
        self.seconds += time.perf_counter() - start
        return out
