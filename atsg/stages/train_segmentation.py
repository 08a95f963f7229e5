"""Stage train_segmentation: tiles + pseudo-labels (or the ground truth, for the supervised upper bound)
-> segmentation/model.pt + metrics.json."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from ..artifacts import record, recorded_key
from ..cam import class_argmax
from ..device import select_device
from ..distributed import is_main
from ..errors import DataError
from ..factory import segmenter
from ..geo.imagery import imagery_record, model_normalisation
from ..inference import input_scale, predict_probs
from ..models.segmenter import Segmenter
from ..scoring.metrics import ConfusionAccumulator
from ..store import open_store
from ..train.datasets import TrainSamples
from ..train.engine import Engine
from ..train.segmentation_objective import SegmentationObjective
from .common import (
    Tiles,
    batches,
    evenly_spaced,
    load_trained,
    open_masks,
    read_tiles,
    save_model_file,
    write_training_metrics,
)
from .pretrain import with_pretrain

log = logging.getLogger(__name__)


def load_segmenter(path: str | Path, tiles: Tiles, device: torch.device) -> tuple[Segmenter, dict]:
    return load_trained(
        path, "segmentation", tiles, lambda cfg: segmenter(cfg, tiles.bands, len(tiles.classes)), device
    )


class SegmentationValidation:
    """Val mIoU of the argmax, one scale, no flip, no CRF (the published ``validate()``), with the tiles resized
    to the ``input_size`` setting (px; ``crop``: ``crop_size``, the model's training crop; None: their own size)
    and the logits back."""

    def __init__(
        self,
        tiles: Tiles,
        indices: np.ndarray,
        batch_size: int,
        device: torch.device,
        input_size: int | str | None,
        crop_size: int,
    ):
        self.tiles, self.indices, self.batch_size, self.device = tiles, indices, batch_size, device
        self.scale = input_scale(input_size, tiles.size[-1], crop_size)

    def __call__(self, model) -> dict:
        g = self.tiles.group
        acc = ConfusionAccumulator(self.tiles.classes)
        for idx in batches(self.indices, self.batch_size, "validate"):
            images = torch.from_numpy(read_tiles(g["images"], idx)).to(self.device)
            pred = class_argmax(predict_probs(model, images, [self.scale]))
            acc.update(read_tiles(g["labels"], idx), pred.cpu().numpy())
        s = acc.scores()
        return {"miou": s.miou(), "oa": s.oa}


def run_train_segmentation(
    cfg: Mapping,
    tiles_path: Path,
    labels_path: Path | None,
    out_dir: Path,
    supervised: bool | None = None,
    masks_path: Path | None = None,
    pretrain_dir: Path | None = None,
) -> dict:
    supervised = cfg["segmentation"]["supervised"] if supervised is None else supervised
    out_dir = Path(out_dir)
    tiles = Tiles.open(tiles_path)
    train_idx = tiles.require("train", "segmentation training")
    val_idx = evenly_spaced(tiles.require("val", "checkpoint selection"), cfg["segmentation"]["val_tiles"])
    inputs = {"tiles": recorded_key(tiles.attrs, tiles.path)}
    c = with_pretrain(cfg, "segmentation", pretrain_dir, tiles.bands, inputs)
    if not supervised:
        if labels_path is None:
            raise DataError("train_segmentation needs a pseudo-label store (--labels) unless it is supervised")
        store = open_store(labels_path, "pseudo_labels")
        if store["labels"].shape[0] != tiles.n:
            raise DataError(
                f"{labels_path}: {store['labels'].shape[0]} tiles, {tiles.path} holds {tiles.n}; rerun refine_labels"
            )
        inputs["pseudo_labels"] = recorded_key(store.attrs, labels_path)
    objective = SegmentationObjective(c, tiles.background, supervised)
    if objective.needs_masks:
        masks = open_masks(masks_path, tiles, "segmentation.object_loss / boundary_loss")
        inputs["masks"] = recorded_key(masks.attrs, masks_path)
    else:
        masks_path = None
    device = select_device(c, "segmentation")
    torch.manual_seed(c["seed"])
    model = segmenter(c, tiles.bands, len(tiles.classes), foreground=objective.joint)
    name = "train_segmentation" + (" (supervised)" if supervised else "")
    log.info(
        "%s: %s + %s decoder, %d train / %d val tiles, device %s",
        name,
        c["backbone"],
        c["decoder"],
        len(train_idx),
        len(val_idx),
        device,
    )

    made = record(cfg, "supervised" if supervised else "segmentation", inputs)
    engine = Engine(model, c, device, out_dir / "checkpoints", made["artifact_key"], "miou", name, "segmentation")
    samples = TrainSamples(
        tiles.path, train_idx, c, "truth" if supervised else "pseudo", None if supervised else labels_path, masks_path
    )
    validation = SegmentationValidation(tiles, val_idx, c["batch_size"], device, c["val_input_size"], c["crop_size"])
    result = engine.fit(samples, objective, validation)
    if not is_main():
        return {}
    # the foreground decoder only trains (joint loss): the model file holds what inference uses
    state = {k: v for k, v in result.best_state.items() if not k.startswith("foreground.")}
    save_model_file(
        out_dir / "model.pt",
        state,
        "segmentation",
        c,
        made,
        classes=tiles.classes,
        in_chans=tiles.bands,
        supervised=supervised,
        best_step=result.best_step,
        imagery=imagery_record(tiles.attrs, model_normalisation(model)),
    )
    return write_training_metrics(
        out_dir / "metrics.json",
        result,
        supervised=supervised,
        select_metric="miou",
        best_score=result.best_score,
        best_step=result.best_step,
        train_tiles=int(len(train_idx)),
        val_tiles=int(len(val_idx)),
    )
