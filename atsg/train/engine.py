"""One training engine for both models (classifier and segmentation).

AdamW with a head learning-rate multiplier, linear warm-up then poly decay,
gradient clipping, mixed precision on CUDA, seeded batches and dropout,
resumable checkpoints every N steps, validation every N steps keeping the best
weights by a validation score (computed on the val split by the stage). With
``ema`` above 0 an exponential moving average of the weights is kept beside them,
and validation, selection and the returned weights are the average's.

Under torchrun (train.gpus > 1) the model runs inside DistributedDataParallel:
every process takes an equal, fixed share of each step's samples, gradients are
averaged across processes, and rank 0 alone validates and writes checkpoints.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .. import distributed
from ..device import autocast, autocast_dtype
from ..store import atomic_file
from .datasets import RangeSampler

log = logging.getLogger(__name__)

LossFn = Callable[[nn.Module, dict, int], tuple[torch.Tensor, dict]]
"""(model, batch on device, step) -> (loss, {name: float})."""
ValidateFn = Callable[[nn.Module], dict]
"""model -> metrics dict holding the selection score under the configured key (select None: the latest weights
are kept, the metrics only logged)."""


def lr_factor(step: int, cfg: Mapping) -> float:
    """Learning rate of ``step`` (0-based) relative to ``cfg['lr']``, as the published PolyWarmupAdamW: a linear
    warm-up from ``warmup_ratio``, 1 - (1 - step / W)(1 - warmup_ratio), then (1 - step / iterations) ^ power."""
    warm = cfg["lr_warmup_iterations"]
    if step < warm:
        return 1.0 - (1.0 - step / warm) * (1.0 - cfg["warmup_ratio"])
    return max(0.0, 1.0 - step / cfg["iterations"]) ** cfg["power"]


def save_atomic(obj, path: Path) -> None:
    """torch.save under a hidden temporary name, renamed into place when complete; a failed write (a full disk)
    leaves nothing behind and names ``path``."""
    with atomic_file(path) as tmp, open(tmp, "wb") as fh:  # through a Python file a full disk is an OSError
        torch.save(obj, fh)


class _Step(nn.Module):
    """One training step's forward (model + objective) as a module, so DistributedDataParallel sees every
    parameter the objective uses, however it calls the model."""

    def __init__(self, model: nn.Module, loss_fn: LossFn):
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(self, batch: dict, step: int):
        return self.loss_fn(self.model, batch, step)


@dataclass
class FitResult:
    best_state: dict
    best_score: float
    best_step: int
    history: list = field(default_factory=list)
    """One entry per validation: the step and the validation metrics."""
    losses: list = field(default_factory=list)
    """One entry per ``log_every`` steps: the step, the learning rate and the mean of each loss term since the
    previous entry (the training curve)."""
    seconds: float = 0.0
    resumed_from: int = 0
    steps_per_second: float = 0.0
    """Training steps (data, forward, backward, update) per second, validation and checkpoints excluded."""
    autocast: str | None = None
    """The steps' and validations' autocast dtype (``bfloat16``, ``float16``), None in full precision."""


class Engine:
    def __init__(
        self,
        model: nn.Module,
        cfg: Mapping,
        device: torch.device,
        workdir: Path,
        fingerprint: str,
        select: str,
        name: str,
        section: str = "classifier",
    ):
        self.model, self.cfg, self.device, self.section = model.to(device), cfg, device, section
        self.workdir, self.fingerprint, self.select, self.name = Path(workdir), fingerprint, select, name
        head_ids = {id(p) for p in model.head_parameters()}
        backbone = [p for p in model.parameters() if id(p) not in head_ids and p.requires_grad]
        heads = [p for p in model.head_parameters() if p.requires_grad]
        self.mults = [1.0, cfg["head_lr_mult"]]
        self.opt = torch.optim.AdamW(
            [{"params": backbone, "lr": cfg["lr"]}, {"params": heads, "lr": cfg["lr"] * cfg["head_lr_mult"]}],
            lr=cfg["lr"],
            weight_decay=cfg["weight_decay"],
            betas=tuple(cfg["betas"]),
        )
        self.autocast_dtype = autocast_dtype(device, cfg)  # None for full precision
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.autocast_dtype == torch.float16)
        self.average = None  # the moving average of the weights (cfg ema > 0): what is validated and kept
        if cfg["ema"]:
            self.average = copy.deepcopy(self.model).eval().requires_grad_(False)

    @property
    def scored(self) -> nn.Module:
        """The weights that are validated and kept: the moving average when there is one."""
        return self.model if self.average is None else self.average

    @torch.no_grad()
    def _update_average(self, step: int) -> None:
        """Move the average towards the weights after ``step`` steps, by 1 - min(ema, (1 + step) / (10 + step))
        (early steps, when the weights move most, get a shorter memory); integer buffers are copied."""
        momentum = min(self.cfg["ema"], (1 + step) / (10 + step))
        current = self.model.state_dict()
        for name, avg in self.average.state_dict().items():
            if avg.is_floating_point():
                avg.lerp_(current[name], 1.0 - momentum)
            else:
                avg.copy_(current[name])

    @property
    def last_path(self) -> Path:
        return self.workdir / "last.pt"

    def _save(self, step: int, best: dict, history: list, losses: list) -> None:
        save_atomic(
            {
                "fingerprint": self.fingerprint,
                "step": step,
                "model": self.model.state_dict(),
                "average": None if self.average is None else self.average.state_dict(),
                "opt": self.opt.state_dict(),
                "scaler": self.scaler.state_dict(),
                "best": best,
                "history": history,
                "losses": losses,
            },
            self.last_path,
        )

    def _resume(self) -> tuple[int, dict, list, list]:
        fresh = (0, {"score": -math.inf, "step": 0, "state": None}, [], [])
        if not self.last_path.exists():
            return fresh
        try:
            ck = torch.load(self.last_path, map_location=self.device, weights_only=False)
        except Exception as exc:  # a checkpoint cut short by a kill is never renamed into place, but be safe
            log.warning("%s: unreadable checkpoint %s (%s); starting over", self.name, self.last_path, exc)
            return fresh
        if ck.get("fingerprint") != self.fingerprint:
            log.info("%s: checkpoint %s was made with other settings or data; starting over", self.name, self.last_path)
            return fresh
        self.model.load_state_dict(ck["model"])
        if self.average is not None:
            self.average.load_state_dict(ck["average"])
        self.opt.load_state_dict(ck["opt"])
        self.scaler.load_state_dict(ck["scaler"])
        log.info("%s: resuming from step %d (%s)", self.name, ck["step"], self.last_path)
        return ck["step"], ck["best"], ck["history"], ck.get("losses", [])

    def _set_lr(self, step: int) -> float:
        factor = lr_factor(step, self.cfg)
        for group, mult in zip(self.opt.param_groups, self.mults):
            group["lr"] = self.cfg["lr"] * mult * factor
        return self.cfg["lr"] * factor

    def _validate(self, step: int, validate: ValidateFn, best: dict, history: list) -> dict:
        model = self.scored
        model.eval()
        with torch.no_grad(), autocast(self.device, self.autocast_dtype):
            metrics = validate(model)
        if self.average is None:
            self.model.train()
        score = float(metrics[self.select]) if self.select else float(step)  # no metric: the latest weights
        history.append({"step": step, **metrics})
        log.info(
            "%s: step %d validation %s",
            self.name,
            step,
            ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float)),
        )
        if score > best["score"] or best["state"] is None:
            best = {
                "score": score,
                "step": step,
                "state": {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()},
            }
        return best

    def _wrap(self, loss_fn: LossFn) -> nn.Module:
        step = _Step(self.model, loss_fn)
        if distributed.world_size() == 1:
            return step
        ids = [self.device.index] if self.device.type == "cuda" else None
        # some parameters sit out some steps (losses that start after a warm-up, switched-off heads)
        return DistributedDataParallel(step, device_ids=ids, find_unused_parameters=True)

    def fit(self, samples, loss_fn: LossFn, validate: ValidateFn) -> FitResult:
        cfg = self.cfg
        iters, batch = cfg["iterations"], cfg["batch_size"]
        world, rank, main = distributed.world_size(), distributed.rank(), distributed.is_main()
        share = distributed.check_batch(batch, self.section, world)
        start, best, history, losses = self._resume()
        resumed_from = start
        loader = DataLoader(
            samples,
            batch_size=share,
            sampler=RangeSampler(start, iters, batch, rank, world),
            num_workers=cfg["workers"],
            drop_last=True,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
        )
        forward = self._wrap(loss_fn)
        self.model.train()
        t0 = time.perf_counter()
        running: dict[str, float] = {}  # sums of the loss terms over the `counted` steps since the last log
        counted = 0
        side = 0.0  # seconds of validation and checkpointing
        bar = tqdm(
            total=iters, initial=start, desc=self.name, unit="step", mininterval=5, dynamic_ncols=True, disable=not main
        )
        step = start
        for batch_data in loader:
            lr = self._set_lr(step)
            torch.manual_seed(cfg["seed"] * 1_000_003 + step)  # dropout and any other randomness of this step
            batch_data = {
                k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch_data.items()
            }
            with autocast(self.device, self.autocast_dtype):
                loss, parts = forward(batch_data, step)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{self.name}: loss is {loss.item()} at step {step}; lower the learning rate")
            self.opt.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if cfg["clip_grad"]:
                self.scaler.unscale_(self.opt)
                nn.utils.clip_grad_norm_(self.model.parameters(), cfg["clip_grad"])
            self.scaler.step(self.opt)
            self.scaler.update()
            step += 1
            if self.average is not None:
                self._update_average(step)
            running["loss"] = running.get("loss", 0.0) + float(loss.detach())
            for k, v in parts.items():
                running[k] = running.get(k, 0.0) + v
            bar.update(1)
            counted += 1
            if main and (step % cfg["log_every"] == 0 or step == iters):
                means = {k: v / counted for k, v in running.items()}
                losses.append({"step": step, "lr": lr, **means})
                bar.set_postfix({k: f"{v:.3f}" for k, v in means.items()}, refresh=False)
                log.info(
                    "%s: step %d/%d lr %.2e %s",
                    self.name,
                    step,
                    iters,
                    lr,
                    " ".join(f"{k}={v:.4f}" for k, v in means.items()),
                )
                running, counted = {}, 0
            if main and (step % cfg["val_every"] == 0 or step == iters):
                t_side = time.perf_counter()
                best = self._validate(step, validate, best, history)
                side += time.perf_counter() - t_side
            if main and (step % cfg["checkpoint_every"] == 0 or step == iters):
                t_side = time.perf_counter()
                self._save(step, best, history, losses)
                side += time.perf_counter() - t_side
        bar.close()
        if main and best["state"] is None:  # resumed after the last step: validate once to pick the weights
            best = self._validate(step, validate, best, history)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - t0
        rate = (step - start) / max(seconds - side, 1e-9)
        if main and step > start:
            log.info(
                "%s: %.2f training steps per second (%d steps; validation and checkpoints excluded)",
                self.name,
                rate,
                step - start,
            )
        return FitResult(
            best_state=best["state"],
            best_score=best["score"],
            best_step=best["step"],
            history=copy.deepcopy(history),
            losses=copy.deepcopy(losses),
            seconds=seconds,
            resumed_from=resumed_from,
            steps_per_second=rate,
            autocast=str(self.autocast_dtype).removeprefix("torch.") if self.autocast_dtype else None,
        )
