"""atsg import_checkpoint: a checkpoint of the published ATSG network -> atsg model files.

The published training saves ``model.state_dict()`` of its ``network`` (model/model_seg_neg_fp.py), under
DistributedDataParallel (``module.`` prefixes). The architecture is not in the file: it is the one the config
describes (paper mode over a dataset preset: DeiT-B/16, the dataset's classes and bands), built without any
weight source, and every tensor must come from the file with the shape the config gives it. Written: a
segmentation model file (``predict`` and ``atsg map`` read it) and, optionally, the classifier's (for
``extract_cams``).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from pathlib import Path

from ..errors import DataError
from .common import save_model_file

log = logging.getLogger(__name__)


def _read(path: Path) -> dict:
    import torch

    if not path.is_file():
        raise DataError(f"{path}: no such checkpoint file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad file
        raise DataError(f"{path}: not a readable torch checkpoint ({exc})") from None
    for sub in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(sub), dict):
            state = state[sub]
    if not isinstance(state, dict) or not all(hasattr(v, "shape") for v in state.values()):
        raise DataError(f"{path}: not a state dict of the published network")
    return state


def run_import_checkpoint(cfg: Mapping, path: Path, out: Path, classifier_out: Path | None = None) -> dict:
    from .. import factory
    from ..geo.imagery import dataset_imagery, imagery_record, model_normalisation
    from ..models.joint import JointModel
    from ..models.official import from_official, official_key

    path = Path(path)
    ds = cfg["dataset"]
    classes, in_chans = list(ds["classes"]), len(ds["bands"])
    n_targets = len(classes) - 1 if ds["background"] else len(classes)
    # every weight comes from the file: the network is built without pretrained weights or a checkpoint
    c = {**cfg["classifier"], "pretrained": False, "checkpoint": None, "random_init": True, "weights": None}
    seg = cfg["segmentation"]
    model = factory.joint(factory.classifier(c, in_chans, n_targets), c["ctc"], seg, len(classes), foreground=True)
    official = {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in _read(path).items()}
    names = {official_key(k): k for k in official if official_key(k) is not None}
    state, ours = from_official(official), model.state_dict()
    described = f"classifier.backbone {c['backbone']}, {len(classes)} classes, {in_chans} bands"
    for key, value in state.items():
        if key not in ours:
            raise DataError(
                f"{path}: tensor {names[key]} has no place in the published network of this config "
                f"({described}); is it a checkpoint of model_seg_neg_fp.network?"
            )
        if tuple(value.shape) != tuple(ours[key].shape):
            raise DataError(
                f"{path}: tensor {names[key]} is {tuple(value.shape)}, the network of this config "
                f"({described}) has {tuple(ours[key].shape)}; a checkpoint of another model or class "
                f"count?"
            )
    missing = [k for k in ours if k not in state and not k.startswith("teacher.backbone.")]
    if missing:
        raise DataError(
            f"{path}: {len(missing)} tensors of the published network are missing (e.g. {missing[0]} in "
            f"atsg's names); is it a checkpoint of model_seg_neg_fp.network?"
        )
    model.load_state_dict(state, strict=False)
    full = model.state_dict()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    made = {
        "artifact": "classifier",
        "artifact_key": f"imported-{digest[:16]}",
        "inputs": {},
        "imported_from": str(path),
        "imported_sha256": digest,
    }
    save_model_file(
        out,
        JointModel.segmenter_state(full),
        "segmentation",
        factory.segmenter_config(c, seg),
        made,
        classes=classes,
        in_chans=in_chans,
        supervised=False,
        joint=True,
        best_step=None,
        imagery=imagery_record(dataset_imagery(ds, cfg["tiling"]), model_normalisation(model.classifier)),
    )
    written = [str(out)]
    if classifier_out is not None:
        save_model_file(
            classifier_out,
            model.classifier_state(full),
            "classifier",
            c,
            made,
            classes=classes,
            in_chans=in_chans,
            n_targets=n_targets,
            best_step=None,
        )
        written.append(str(classifier_out))
    log.info("import_checkpoint: %d tensors of %s -> %s", len(state), path, ", ".join(written))
    return {"tensors": len(state), "written": written, "sha256": digest}
