"""Which config sections make each artifact of a run, and the key that names what an artifact holds.

The key of an artifact is a digest of the artifact settings (run keys left out) of every section its stage
reads and of the keys of the artifacts it is made from. Two configs that agree on an artifact's key make the
same artifact, so an ablation variant reuses the main run's file (or another variant's) instead of computing it
again.

Every stage also records the key of what it made and the keys of what it read (its lineage) in its store
attributes or model file, computed from the settings it was given and the keys its inputs recorded. So an
artifact's recorded key equals :func:`artifact_key` of the current config exactly when it and everything
upstream of it were made with the current settings; evaluate checks this for every input it scores.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from .config import artifact_settings, canonical_json, supervised_section

log = logging.getLogger(__name__)

ARTIFACTS = (
    "scenes",
    "tiles",
    "pretrain",
    "classifier",
    "cams",
    "masks",
    "pseudo_labels",
    "segmentation",
    "supervised",
    "predictions",
    "supervised_predictions",
    "eval",
)
"""Every artifact of a run, upstream first (``scenes``: the synthetic demo's rasters only)."""

RULES = {
    "scenes": "synth",
    "tiles": "tile",
    "pretrain": "pretrain",
    "classifier": "train_classifier",
    "cams": "extract_cams",
    "masks": "generate_masks",
    "pseudo_labels": "refine_labels",
    "segmentation": "train_segmentation",
    "supervised": "train_supervised",
    "predictions": "predict",
    "supervised_predictions": "predict_supervised",
    "eval": "evaluate",
}
"""The rule that makes each artifact (what an error tells the user to rerun)."""


def joint(cfg: Mapping) -> bool:
    """Paper mode: the classifier stage also trains the segmentation decoders (METHOD.md's single stage)."""
    return bool(cfg["classifier"]["joint_segmentation"])


def needs_masks(cfg: Mapping) -> bool:
    """Whether segmentation training reads masks.zarr (SAM object or boundary loss on)."""
    seg = cfg["segmentation"]
    return bool(seg["object_loss"]["enabled"] or seg["boundary_loss"]["enabled"])


def uses_pretrain(cfg: Mapping, section: str) -> bool:
    """Whether a model section (classifier or segmentation) reads the pretrain stage's output: its weights, or
    (classifier) the frozen teacher that links tokens."""
    c = cfg[section]
    if c.get("weights") == "pretrain":
        return True
    if section != "classifier":
        return False
    return bool(c["ptc"]["enabled"] and c["linking"]["enabled"] and c["linking"]["features"] == "pretrain")


def synthetic(cfg: Mapping) -> bool:
    """The demo: scenes are drawn by rule synth (artifact ``scenes``) instead of read from dataset.root."""
    return cfg["dataset"]["preset"] == "synthetic"


def own_sections(cfg: Mapping, artifact: str) -> tuple[str, ...]:
    """The config sections an artifact's own rule receives as params."""
    if artifact == "scenes":
        return ("synthetic", "dataset")
    if artifact == "tiles":
        return ("dataset", "split", "tiling")
    if artifact == "classifier":  # paper mode: decoders, their losses and the on-the-fly pseudo-labels
        return ("classifier", "segmentation", "cams", "refine") if joint(cfg) else ("classifier",)
    if artifact in ("segmentation", "supervised"):
        return ("segmentation",)
    if artifact == "pseudo_labels":
        return ("refine",)
    if artifact in ("predictions", "supervised_predictions"):
        return ("predict",)
    if artifact == "eval":
        return ("evaluate", "refine")
    return (artifact,)


def own_settings(cfg: Mapping, artifact: str) -> dict:
    """The artifact settings of the sections that make ``artifact`` (the supervised bound: no weak-only keys)."""
    if artifact == "supervised":
        return {"segmentation": supervised_section(cfg)}
    return {s: artifact_settings(cfg, s) for s in own_sections(cfg, artifact)}


def artifact_params(cfg: Mapping, artifact: str) -> str:
    """The ``params`` of the rule that makes ``artifact``: its :func:`own_settings` as canonical JSON, so that
    Snakemake reruns the rule exactly when they change."""
    return canonical_json(own_settings(cfg, artifact))


def upstream(cfg: Mapping, artifact: str) -> tuple[str, ...]:
    """The artifacts ``artifact`` is made from (paper mode: predictions come from the classifier stage)."""
    masks = needs_masks(cfg)
    if artifact == "scenes":
        return ()
    if artifact == "tiles":
        return ("scenes",) if synthetic(cfg) else ()
    if artifact == "classifier":
        ups = ("tiles", "masks") if joint(cfg) and masks else ("tiles",)
        return ups + (("pretrain",) if uses_pretrain(cfg, "classifier") else ())
    if artifact == "cams":
        return ("tiles", "classifier")
    if artifact == "pseudo_labels":
        ups = ["tiles", "cams"]
        if cfg["refine"]["mask_voting"]:
            ups.append("masks")
        if cfg["refine"]["affinity"]:
            ups.append("classifier")
        return tuple(ups)
    pre = ("pretrain",) if uses_pretrain(cfg, "segmentation") else ()
    if artifact == "segmentation":
        return (("tiles", "pseudo_labels", "masks") if masks else ("tiles", "pseudo_labels")) + pre
    if artifact == "supervised":
        return ("tiles",) + pre
    if artifact == "predictions":
        return ("tiles", "classifier" if joint(cfg) else "segmentation")
    if artifact == "supervised_predictions":
        return ("tiles", "supervised")
    if artifact == "eval":
        ups = ["tiles", "cams", "pseudo_labels", "predictions"]
        if cfg["evaluate"]["supervised_baseline"]:
            ups.append("supervised_predictions")
        return tuple(ups)
    if artifact in ("masks", "pretrain"):
        return ("tiles",)
    raise KeyError(f"unknown artifact {artifact!r}; one of {ARTIFACTS}")


@dataclass(frozen=True)
class Read:
    """How a stage reads an artifact it is made from: ``file`` (relative to the folder that holds the artifact)
    is the rule's input, passed to the stage as ``option`` followed by ``file`` or, if set, its folder ``arg``."""

    file: str
    option: str
    arg: str | None = None


READS = {
    "scenes": Read("scenes", "--root"),
    "tiles": Read("tiles.zarr", "--tiles"),
    "pretrain": Read("pretrain/backbone.pt", "--pretrain", arg="pretrain"),
    "classifier": Read("classifier/model.pt", "--classifier"),
    "cams": Read("cams.zarr", "--cams"),
    "masks": Read("masks.zarr", "--masks"),
    "pseudo_labels": Read("pseudo_labels.zarr", "--pseudo-labels"),
    "segmentation": Read("segmentation/model.pt", "--model"),
    "supervised": Read("supervised/model.pt", "--model"),
    "predictions": Read("predictions.zarr", "--predictions"),
    "supervised_predictions": Read("supervised_predictions.zarr", "--supervised"),
}
"""How stages read each artifact (paper mode's predictions read the classifier stage's segmenter instead)."""


def reads(cfg: Mapping, artifact: str) -> dict[str, Read]:
    """What the stage that makes ``artifact`` reads: one :class:`Read` per artifact of :func:`upstream`. With
    :func:`own_sections` this is all a rule is derived from (its input, params and command line)."""
    out = {up: READS[up] for up in upstream(cfg, artifact)}
    if artifact == "predictions" and joint(cfg):
        out["classifier"] = Read("classifier/segmenter.pt", "--model")
    return out


TRAININGS = ("pretrain", "classifier", "segmentation", "supervised")
"""The artifacts that are trainings (their folder holds a metrics.json with the training curves)."""

REPORT_SECTIONS = (
    "run",
    "dataset",
    "tiling",
    "pretrain",
    "classifier",
    "masks",
    "refine",
    "segmentation",
    "predict",
    "evaluate",
)
"""The config sections the report's page describes. The report is a view of the run, not an artifact: it reads
the evaluation, the tiles and the metrics.json of every training the evaluation is made from
(:func:`report_reads`), and has no key."""


REPORT_CATEGORIES = ("1. Scores", "2. Training", "3. Sample tiles", "4. Confusion matrix")
"""The report's result categories, in order: the workflow files its figures under them and the run's page
links to them by name."""


def report_reads(cfg: Mapping) -> dict[str, str]:
    """The files the report reads, relative to the folders that hold their artifacts: {name: file}, names
    ``tiles``, ``eval`` (its metrics.json; the figures come with it) and each training of :func:`needed`."""
    out = {"tiles": READS["tiles"].file, "eval": "eval/metrics.json"}
    out.update({a: f"{a}/metrics.json" for a in needed(cfg, "eval") if a in TRAININGS})
    return out


def recorded_key(source: Mapping, where) -> str | None:
    """The artifact key a store's attrs, a model file or a manifest recorded (None, with a warning, for files
    made by an atsg that recorded none: whatever is made from them gets a key no config has)."""
    key = source.get("artifact_key")
    if key is None:
        log.warning("%s records no artifact key (made by an older atsg); rerun the stage that made it", where)
    return key


def make_key(own: Mapping, inputs: Mapping[str, str | None]) -> str:
    """The key of an artifact made with settings ``own`` from inputs whose keys are ``inputs``."""
    parts = {"self": own, "from": dict(inputs)}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def artifact_key(cfg: Mapping, artifact: str) -> str:
    """A digest of everything that makes ``artifact`` (its settings and its upstream keys): equal keys, equal
    artifacts."""
    return make_key(own_settings(cfg, artifact), {up: artifact_key(cfg, up) for up in upstream(cfg, artifact)})


def lineage(cfg: Mapping, artifact: str, inputs: Mapping[str, str | None]) -> dict:
    """What a stage records about the artifact it makes: its name, its key and the keys of its inputs.

    ``inputs`` are the keys the input artifacts recorded; with the stage's own settings from ``cfg`` they give
    the artifact's key the same way :func:`artifact_key` does from a whole config.
    """
    return {"artifact": artifact, "artifact_key": make_key(own_settings(cfg, artifact), inputs), "inputs": dict(inputs)}


def record(cfg: Mapping, artifact: str, inputs: Mapping[str, str | None]) -> dict:
    """What a store or model file records about how it was made: the settings of its sections (``config``)
    and its :func:`lineage`."""
    return {"config": own_settings(cfg, artifact), **lineage(cfg, artifact, inputs)}


def needed(cfg: Mapping, target: str = "eval") -> list[str]:
    """``target`` and every artifact it is made from, upstream first."""
    seen: list[str] = []

    def visit(a: str) -> None:
        for up in upstream(cfg, a):
            visit(up)
        if a not in seen:
            seen.append(a)

    visit(target)
    return seen


def artifact_files(cfg: Mapping, artifact: str) -> tuple[str, ...]:
    """The paths, relative to the folder that holds the artifact, of what its rule declares as output."""
    if artifact == "classifier":
        files = ("classifier/model.pt", "classifier/metrics.json")
        return files + (("classifier/segmenter.pt",) if joint(cfg) else ())
    if artifact in ("segmentation", "supervised"):
        return (f"{artifact}/model.pt", f"{artifact}/metrics.json")
    if artifact == "pretrain":
        return ("pretrain/backbone.pt", "pretrain/teacher.pt", "pretrain/metrics.json")
    if artifact == "predictions":
        return ("predictions.zarr", "predictions")
    if artifact == "eval":
        return (
            "eval/metrics.json",
            "eval/confusion.csv",
            "eval/report.md",
            "eval/figures/samples.png",
            "eval/figures/confusion.png",
            "eval/figures/legend.png",
        )
    if artifact == "scenes":
        return ("scenes",)
    return (f"{artifact}.zarr",)
