"""Stage pretrain: tiles.zarr (images of the chosen splits, never labels) -> pretrain/backbone.pt, teacher.pt,
metrics.json: self-supervised pretraining of the backbone (DINO / iBOT self-distillation, multi-crop).

backbone.pt and teacher.pt hold the timm state dicts of the student's and the teacher's ViT (under
``state_dict``, with the settings and artifact record beside them): ``weights: pretrain`` of the classifier and
the segmenter starts from backbone.pt, ``linking.features: pretrain`` links tokens by the frozen teacher.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from ..artifacts import record, recorded_key, uses_pretrain
from ..device import select_device
from ..distributed import is_main
from ..errors import ConfigError, DataError
from ..factory import ARCH_KEYS, self_distillation
from ..losses.selfsup import dino_loss, teacher_probs
from ..models.pretrain import SelfDistillation
from ..train.engine import Engine
from ..train.pretrain_data import PretrainSamples, multicrop
from ..train.pretrain_objective import PretrainObjective, teacher_temperature, view_major
from .common import Tiles, evenly_spaced, load_model_file, read_tiles, save_model_file, write_training_metrics

log = logging.getLogger(__name__)

SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
FILES = {"student": "backbone.pt", "teacher": "teacher.pt"}


class PretrainValidation:
    """Label-free scores on fixed multi-crop views of val tiles: the self-distillation loss, the teacher's
    entropy (a collapse to one prototype drives it to 0, a uniform collapse to log K) and the std over tiles of
    the teacher's L2-normalised class tokens (0 when every tile gets the same embedding)."""

    def __init__(self, tiles: Tiles, indices: np.ndarray, cfg: Mapping, device: torch.device):
        self.cfg, self.device = cfg, device
        images = read_tiles(tiles.group["images"], indices)
        views = [
            multicrop(torch.from_numpy(img).float(), np.random.default_rng([cfg["seed"], 7, int(t)]), cfg)
            for img, t in zip(images, indices)
        ]
        self.globals = torch.stack([g for g, _ in views])
        self.locals = torch.stack([loc for _, loc in views])

    def __call__(self, model: SelfDistillation) -> dict:
        temp = self.cfg["teacher_temp"]
        losses, entropies, embeddings = [], [], []
        for start in range(0, len(self.globals), self.cfg["batch_size"]):
            g = self.globals[start : start + self.cfg["batch_size"]].to(self.device)
            loc = self.locals[start : start + self.cfg["batch_size"]].to(self.device)
            globals_, locals_ = view_major(g), view_major(loc)
            t_cls, _ = model.teach(globals_)
            targets = teacher_probs(t_cls, model.center, temp)
            student = list(model(globals_)[0].chunk(2)) + list(model(locals_)[0].chunk(loc.shape[1]))
            losses.append(float(dino_loss(student, list(targets.chunk(2)), self.cfg["student_temp"])) * len(g))
            entropies.append(float(-(targets * targets.clamp_min(1e-12).log()).sum(-1).mean()) * len(g))
            x = model.teacher.backbone.prepare(g[:, 0])
            embeddings.append(model.teacher.backbone.forward_with_class_token(x, [-1])[1].float().cpu())
        n = len(self.globals)
        emb = torch.nn.functional.normalize(torch.cat(embeddings), dim=-1)
        return {
            "val_loss": sum(losses) / n,
            "teacher_entropy": sum(entropies) / n,
            "embedding_std": float(emb.std(0).mean()),
        }


def pretrain_indices(tiles: Tiles, cfg: Mapping) -> np.ndarray:
    splits = tiles.group["split"][:]
    idx = np.flatnonzero(np.isin(splits, [SPLIT_CODES[s] for s in cfg["splits"]]))
    if not len(idx):
        raise DataError(
            f"{tiles.path}: no tiles in split(s) {', '.join(cfg['splits'])} for pretraining "
            f"(config key pretrain.splits)"
        )
    return idx


def run_pretrain(cfg: Mapping, tiles_path: Path, out_dir: Path) -> dict:
    c = cfg["pretrain"]
    out_dir = Path(out_dir)
    tiles = Tiles.open(tiles_path)
    train_idx = pretrain_indices(tiles, c)
    val = tiles.group["split"][:] == SPLIT_CODES["val"]
    val_idx = evenly_spaced(np.flatnonzero(val) if val.any() else train_idx, c["val_tiles"])
    device = select_device(c, "pretrain")
    torch.manual_seed(c["seed"])
    model = self_distillation(c, tiles.bands)
    log.info(
        "pretrain (%s): %s (%d blocks, dim %d, patch %d) on %d tiles of %s, %d global + %d local views, device %s",
        c["method"],
        c["backbone"],
        model.backbone.depth,
        model.backbone.embed_dim,
        model.backbone.patch_size,
        len(train_idx),
        "+".join(c["splits"]),
        2,
        c["views"]["local_crops"],
        device,
    )
    made = record(cfg, "pretrain", {"tiles": recorded_key(tiles.attrs, tiles.path)})
    engine = Engine(
        model, c, device, out_dir / "checkpoints", made["artifact_key"], None, "pretrain", section="pretrain"
    )
    result = engine.fit(
        PretrainSamples(tiles.path, train_idx, c), PretrainObjective(c), PretrainValidation(tiles, val_idx, c, device)
    )
    if not is_main():
        return {}
    model.load_state_dict(result.best_state)  # the last step's weights (no selection)
    arch = {k: c.get(k) for k in ("backbone", *ARCH_KEYS, "model_kwargs")}
    for which, name in FILES.items():
        save_model_file(
            out_dir / name,
            model.backbone_state(teacher=which == "teacher"),
            "pretrained_backbone",
            c,
            made,
            arch=arch,
            which=which,
            in_chans=tiles.bands,
            band_names=tiles.attrs.get("band_names"),
        )
    return write_training_metrics(
        out_dir / "metrics.json",
        result,
        method=c["method"],
        train_tiles=int(len(train_idx)),
        val_tiles=int(len(val_idx)),
        final_teacher_temp=teacher_temperature(c["iterations"], c),
    )


def pretrained_file(pretrain_dir: Path | None, which: str, in_chans: int, key: str) -> tuple[Path, dict]:
    """(path, contents) of the pretrain stage's ``which`` file (student or teacher) for tiles of ``in_chans``
    bands; ``key`` names the setting that needs it."""
    if pretrain_dir is None:
        raise ConfigError(
            f"config key {key}: pretrain needs the pretrain stage's output; give its folder with "
            f"--pretrain DIR (the workflow does)"
        )
    path = Path(pretrain_dir) / FILES[which]
    ck = load_model_file(path, "pretrained_backbone")
    if ck.get("in_chans") not in (None, in_chans):
        raise DataError(f"{path}: pretrained on {ck.get('in_chans')} bands, the tiles have {in_chans}; rerun pretrain")
    return path, ck


def pretrained_weights(cfg: Mapping, section: str, path: Path, ck: Mapping) -> dict:
    """``cfg`` (a model section) with ``weights: pretrain`` resolved to the pretrain stage's student (``path``,
    its contents ``ck``) as its checkpoint, checked against the section's architecture."""
    arch = ck.get("arch", {})
    wanted = {k: cfg.get(k) for k in ("backbone", *ARCH_KEYS, "model_kwargs")}
    differ = [k for k in wanted if k in arch and arch[k] != wanted[k]]
    if differ:
        k = differ[0]
        raise ConfigError(
            f"config key {section}.{k}: {wanted[k]!r}, but {path} was pretrained with pretrain.{k} "
            f"{arch[k]!r}; the architectures must match (set pretrain.{k} like {section}.{k})"
        )
    return {**cfg, "weights": "checkpoint", "checkpoint": str(path), "pretrained": False, "random_init": False}


def with_pretrain(cfg: Mapping, section: str, pretrain_dir: Path | None, in_chans: int, inputs: dict) -> dict:
    """Section ``section`` of ``cfg`` with its pretrain references resolved to files of ``pretrain_dir``:
    ``weights: pretrain`` to the student's backbone (a checkpoint), ``linking.features: pretrain`` to the frozen
    teacher's ViT; the pretrain artifact's key goes into ``inputs``. Unchanged when it reads no pretraining."""
    c = dict(cfg[section])
    if not uses_pretrain(cfg, section):
        return c
    key = f"{section}.weights" if c.get("weights") == "pretrain" else f"{section}.linking.features"
    path, student = pretrained_file(pretrain_dir, "student", in_chans, key)
    inputs["pretrain"] = recorded_key(student, path)
    if c.get("weights") == "pretrain":
        c = pretrained_weights(c, section, path, student)
    if (
        section == "classifier"
        and c["ptc"]["enabled"]
        and c["linking"]["enabled"]
        and c["linking"]["features"] == "pretrain"
    ):
        # the teacher's file says how its ViT is built (the pretrain section is not this stage's setting)
        path, ck = pretrained_file(pretrain_dir, "teacher", in_chans, "classifier.linking.features")
        c["linking"] = {
            **c["linking"],
            **ck["arch"],
            "pos_embed_resize": ck["config"]["pos_embed_resize"],
            "checkpoint": str(path),
            "pretrained": False,
        }
    return c
