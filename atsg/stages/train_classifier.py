"""Stage train_classifier: tiles.zarr (train split, image-level labels) -> classifier/model.pt + metrics.json."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .. import factory
from ..artifacts import record, recorded_key
from ..cam import cam_to_label, fuse_heads, minmax_normalise, multiscale_cams
from ..device import select_device
from ..distributed import is_main
from ..geo.imagery import imagery_record, model_normalisation
from ..inference import input_scale
from ..losses.classification import multilabel_f1
from ..models.classifier import CAMClassifier
from ..models.joint import JointModel
from ..scoring.metrics import ConfusionAccumulator
from ..train.classifier_objective import ClassifierObjective
from ..train.datasets import TrainSamples
from ..train.engine import Engine
from ..train.joint_objective import JointObjective
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
from .train_segmentation import SegmentationValidation

log = logging.getLogger(__name__)


def build_classifier(cfg: Mapping, tiles: Tiles) -> CAMClassifier:
    return factory.classifier(cfg, tiles.bands, tiles.n_targets)


def load_classifier(path: str | Path, tiles: Tiles, device: torch.device) -> tuple[CAMClassifier, dict]:
    """The trained classifier of ``path`` (its own saved settings, never random weights)."""
    return load_trained(path, "classifier", tiles, lambda cfg: build_classifier(cfg, tiles), device)


class ClassifierValidation:
    """Classification F1 and CAM mIoU on (a sample of) the val split, with the tiles resized to
    ``val_input_size`` and the CAM that ``val_cam`` says (multi-scale with flips, or one forward pass), resized
    back to the tiles."""

    def __init__(self, tiles: Tiles, indices: np.ndarray, cfg: Mapping, device: torch.device):
        self.tiles, self.indices, self.cfg, self.device = tiles, indices, cfg, device
        self.scale = input_scale(cfg["val_input_size"], tiles.size[-1], cfg["crop_size"])

    def _cams(self, model, images: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, dict]:
        """(final, auxiliary) CAMs in [0, 1] at the tiles' size and the forward pass at the input size; the
        single-scale auxiliary CAM is None when ``cam_aux_weight`` is 0."""
        size = tuple(images.shape[-2:])
        x = images.float()
        if self.scale != 1.0:
            x = F.interpolate(
                x, size=[max(1, round(d * self.scale)) for d in size], mode="bilinear", align_corners=False
            )
        out = model(x)
        if self.cfg["val_cam"] == "multiscale":  # as published validate() and extract_cams make them
            cams = multiscale_cams(
                model.classifier, x, self.cfg["cam_scales"], True, tuple(x.shape[-2:]), valid=valid, aux_groups="image"
            )
            cam, aux = (
                F.interpolate(c, size=size, mode="bilinear", align_corners=False).masked_fill(~valid[:, None], 0.0)
                for c in cams
            )
            return cam, aux, out

        def tile_cam(maps):
            return minmax_normalise(
                F.interpolate(F.relu(maps).float(), size=size, mode="bilinear", align_corners=False), valid
            )

        # the auxiliary CAM only when it is mixed in (fuse_heads leaves it out at weight 0)
        return tile_cam(out["maps"]), tile_cam(out["maps_aux"]) if self.cfg["cam_aux_weight"] else None, out

    def __call__(self, model) -> dict:
        g = self.tiles.group
        acc = ConfusionAccumulator(self.tiles.classes)
        by_threshold = {float(t): ConfusionAccumulator(self.tiles.classes) for t in self.cfg["bkg_candidates"]}
        preds, targets = [], []
        for idx in batches(self.indices, self.cfg["batch_size"], "validate"):
            images = torch.from_numpy(read_tiles(g["images"], idx)).to(self.device)
            cls = torch.from_numpy(read_tiles(g["cls_labels"], idx)).to(self.device)
            valid = torch.from_numpy(read_tiles(g["valid"], idx)).to(self.device).bool()
            cam, aux, out = self._cams(model, images, valid)
            preds.append((out["logits"] > 0).cpu())
            targets.append(cls.cpu())
            cam = fuse_heads(cam, aux, self.cfg["cam_aux_weight"])
            truth = read_tiles(g["labels"], idx)
            label = cam_to_label(cam, cls, self.cfg["bkg_thre"], self.tiles.background)
            acc.update(truth, label.cpu().numpy())
            for t, a in by_threshold.items():
                a.update(truth, cam_to_label(cam, cls, t, self.tiles.background).cpu().numpy())
        scores = acc.scores()
        out = {
            "f1": multilabel_f1(torch.cat(preds), torch.cat(targets)),
            "cam_miou": scores.miou(),
            "cam_oa": scores.oa,
        }
        if by_threshold:  # the CAM labels at the background threshold that suits this checkpoint best
            best = max(by_threshold, key=lambda t: (by_threshold[t].scores().miou(), -t))
            out.update(cam_miou_calibrated=by_threshold[best].scores().miou(), bkg_thre_calibrated=float(best))
        return out


class JointValidation:
    """Paper mode: the classifier's scores plus the segmentation decoder's val mIoU (``seg_miou``)."""

    def __init__(self, classifier: ClassifierValidation, segmentation: SegmentationValidation):
        self.classifier, self.segmentation = classifier, segmentation

    def __call__(self, model: JointModel) -> dict:
        def segment(images):
            return model.segment(model(images)["tokens"], tuple(images.shape[-2:]))[0]

        scores = self.segmentation(segment)
        return {**self.classifier(model), "seg_miou": scores["miou"], "seg_oa": scores["oa"]}


def run_train_classifier(
    cfg: Mapping, tiles_path: Path, out_dir: Path, masks_path: Path | None = None, pretrain_dir: Path | None = None
) -> dict:
    """Train the CAM classifier; in paper mode (``classifier.joint_segmentation``) also the segmentation
    decoders, written as ``segmenter.pt`` beside the classifier's ``model.pt``. ``pretrain_dir``: the pretrain
    stage's folder (read with ``weights: pretrain`` or ``linking.features: pretrain``)."""
    out_dir = Path(out_dir)
    tiles = Tiles.open(tiles_path)
    inputs = {"tiles": recorded_key(tiles.attrs, tiles.path)}
    config = cfg  # the settings as given: what the artifact key records
    cfg = {**cfg, "classifier": with_pretrain(cfg, "classifier", pretrain_dir, tiles.bands, inputs)}
    c = cfg["classifier"]
    train_idx = tiles.require("train", "classifier training")
    val_idx = evenly_spaced(tiles.require("val", "checkpoint selection"), c["val_tiles"])
    device = select_device(c, "classifier")
    torch.manual_seed(c["seed"])
    classifier = build_classifier(c, tiles)
    joint = c["joint_segmentation"]
    log.info(
        "train_classifier%s: %s (%d blocks, dim %d, patch %d), %d train / %d val tiles, device %s",
        " + segmentation (paper mode)" if joint else "",
        c["backbone"],
        classifier.backbone.depth,
        classifier.backbone.embed_dim,
        classifier.backbone.patch_size,
        len(train_idx),
        len(val_idx),
        device,
    )

    validation = ClassifierValidation(tiles, val_idx, c, device)
    if joint:
        objective = JointObjective(cfg, tiles.background, tiles.bands, len(tiles.classes)).to(device)
        model = factory.joint(
            classifier, c["ctc"], cfg["segmentation"], len(tiles.classes), objective.segmentation.joint
        )
        if objective.needs_masks:
            masks = open_masks(masks_path, tiles, "segmentation.object_loss / boundary_loss (paper mode)")
            inputs["masks"] = recorded_key(masks.attrs, masks_path)
        else:
            masks_path = None
        seg_val = SegmentationValidation(  # at the one network's training crop
            tiles, val_idx, c["batch_size"], device, cfg["segmentation"]["val_input_size"], c["crop_size"]
        )
        validation = JointValidation(validation, seg_val)
    else:
        objective = ClassifierObjective(c, tiles.background, tiles.bands).to(device)
        model = factory.contrastive(classifier, c["ctc"])
        masks_path = None
    made = record(config, "classifier", inputs)
    engine = Engine(
        model, c, device, out_dir / "checkpoints", made["artifact_key"], c["select_metric"], "train_classifier"
    )
    result = engine.fit(TrainSamples(tiles.path, train_idx, c, "cls", masks_path=masks_path), objective, validation)
    if not is_main():
        return {}
    save_model_file(
        out_dir / "model.pt",
        model.classifier_state(result.best_state),
        "classifier",
        c,
        made,
        classes=tiles.classes,
        in_chans=tiles.bands,
        n_targets=tiles.n_targets,
        best_step=result.best_step,
    )
    if joint:
        save_model_file(
            out_dir / "segmenter.pt",
            JointModel.segmenter_state(result.best_state),
            "segmentation",
            factory.segmenter_config(c, cfg["segmentation"]),
            made,
            classes=tiles.classes,
            in_chans=tiles.bands,
            supervised=False,
            joint=True,
            best_step=result.best_step,
            imagery=imagery_record(tiles.attrs, model_normalisation(classifier)),
        )
    return write_training_metrics(
        out_dir / "metrics.json",
        result,
        select_metric=c["select_metric"],
        best_score=result.best_score,
        best_step=result.best_step,
        joint_segmentation=joint,
        train_tiles=int(len(train_idx)),
        val_tiles=int(len(val_idx)),
    )
