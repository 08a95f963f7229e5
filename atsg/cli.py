"""`atsg`: one subcommand per pipeline stage, so every stage also runs without Snakemake.

Settings come from config files (``--configfile``), the JSON of config sections
a Snakemake rule passes (``--params``) and ``--set KEY=VALUE`` overrides, in that
order; the result is validated against the schema before anything runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
from pathlib import Path

import yaml

from . import __version__
from .artifacts import REPORT_SECTIONS
from .config import dataset_root, demo_configfile, load_config, run_dir
from .errors import AtsgError
from .gpus import claim_devices
from .logs import report_failure, setup_logging

log = logging.getLogger("atsg")

EPILOG = """\
examples:
  atsg synth --configfile config/config.yaml --out results/demo/scenes
  atsg tile --configfile config/potsdam.yaml --set dataset.root=/data/potsdam --out results/potsdam/tiles.zarr
  atsg train_classifier --configfile config/config.yaml      # then extract_cams, generate_masks,
  atsg refine_labels --configfile config/config.yaml         # train_segmentation, predict, evaluate
  atsg info results/demo/tiles.zarr
  atsg info --verify results/demo/cams.zarr         # every tile checked against the store's seal
  atsg config --configfile config/potsdam.yaml      # the full validated config with defaults
  atsg ablate --cores 2                              # each ATSG component off in turn -> eval/ablation.md

The Snakemake workflow (snakemake --cores 2) runs these stages in order and caches their outputs.
"""


def _config_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("configuration")
    g.add_argument(
        "--configfile",
        action="append",
        default=[],
        metavar="FILE",
        help="YAML config file laid over the schema defaults (the published settings); repeat to overlay "
        "(e.g. a preset then config/cpu.yaml). Without it (and without --params): the demo, "
        "config/config.yaml",
    )
    g.add_argument(
        "--params",
        metavar="JSON",
        action="append",
        default=[],
        help="config sections as JSON (what Snakemake rules pass); repeat to add sections",
    )
    g.add_argument(
        "--set",
        dest="assignments",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one key, e.g. --set tiling.size=512 (value read as YAML)",
    )
    g.add_argument("--log", metavar="FILE", help="also write the log to FILE")
    g.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="at most N CPU threads (torch) or processes (synth); a stage's `threads` key, when set, "
        "fixes torch's count (default: the CPUs this process may use)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="atsg",
        description=__doc__.splitlines()[0] + "\n\n" + "\n".join(__doc__.splitlines()[2:]),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"atsg {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "synth",
        help="write the synthetic demo scenes (GeoTIFF images + RGB labels)",
        description="Write procedural Potsdam-style aerial scenes as georeferenced GeoTIFFs "
        "with RGB-coded label rasters (config sections synthetic, dataset).",
    )
    _config_args(p)
    p.add_argument("--out", type=Path, help="output folder (default: results/{run}/scenes)")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser(
        "tile",
        help="cut scenes into tiles -> tiles.zarr",
        description="Read every scene window by window and write tiles.zarr: images, labels, "
        "image-level labels and splits (config sections dataset, split, tiling).",
    )
    _config_args(p)
    p.add_argument("--root", type=Path, help="dataset folder (default: dataset.root, or the synthetic scenes)")
    p.add_argument("--out", type=Path, help="output store (default: results/{run}/tiles.zarr)")
    p.set_defaults(func=cmd_tile)

    p = sub.add_parser(
        "pretrain",
        help="self-supervised pretraining of the backbone on the tiles' images",
        description="DINO / iBOT self-distillation with multi-crop views of the tiles of "
        "pretrain.splits (labels are never read) -> backbone.pt and teacher.pt, which "
        "weights: pretrain and linking.features: pretrain read (config section pretrain).",
    )
    _config_args(p)
    _stage_io(p, tiles=True)
    p.add_argument("--out", type=Path, help="output folder (default: results/{run}/pretrain)")
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser(
        "train_classifier",
        help="train the CAM classifier on image-level labels",
        description="Train the ViT CAM classifier (final + auxiliary heads, multi-label soft margin "
        "loss) on the train split; keep the best checkpoint by validation on the val split "
        "(config section classifier).",
    )
    _config_args(p)
    _stage_io(p, tiles=True, pretrain=True)
    p.add_argument(
        "--masks",
        type=Path,
        help="masks.zarr for the SAM losses in paper mode "
        "(classifier.joint_segmentation; default: results/{run}/masks.zarr)",
    )
    p.add_argument("--out", type=Path, help="output folder (default: results/{run}/classifier)")
    p.set_defaults(func=cmd_train_classifier)

    p = sub.add_parser(
        "extract_cams",
        help="multi-scale CAMs of every tile -> cams.zarr",
        description="Multi-scale, flip-fused, min-max normalised CAMs of both classifier heads (config section cams).",
    )
    _config_args(p)
    _stage_io(p, tiles=True, classifier=True)
    p.add_argument("--out", type=Path, help="output store (default: results/{run}/cams.zarr)")
    _shard_args(p)
    p.set_defaults(func=cmd_extract_cams)

    p = sub.add_parser(
        "generate_masks",
        help="class-agnostic masks (SAM or superpixels) -> masks.zarr",
        description="Object and boundary maps per tile from SAM's automatic mask generator or "
        "scikit-image superpixels (config section masks).",
    )
    _config_args(p)
    _stage_io(p, tiles=True)
    p.add_argument("--out", type=Path, help="output store (default: results/{run}/masks.zarr)")
    _shard_args(p)
    p.set_defaults(func=cmd_generate_masks)

    p = sub.add_parser(
        "refine_labels",
        help="CAMs -> pseudo-labels (affinity walk, PAR, mask voting)",
        description="Pseudo-labels from the CAMs: affinity random walk, PAR with the two-threshold "
        "background rule and mask voting (config section refine).",
    )
    _config_args(p)
    _stage_io(p, tiles=True, classifier=True)
    p.add_argument("--cams", type=Path, help="cams.zarr (default: results/{run}/cams.zarr)")
    p.add_argument("--masks", type=Path, help="masks.zarr (default: results/{run}/masks.zarr)")
    p.add_argument("--out", type=Path, help="output store (default: results/{run}/pseudo_labels.zarr)")
    p.set_defaults(func=cmd_refine_labels)

    p = sub.add_parser(
        "train_segmentation",
        help="train the segmentation model on the pseudo-labels",
        description="Train ViT + LargeFOV on the pseudo-labels with the SAM object and boundary, "
        "energy and joint losses (or, with --supervised, on the ground truth with the "
        "cross-entropy alone: the upper bound), with the shared engine (config section "
        "segmentation).",
    )
    _config_args(p)
    _stage_io(p, tiles=True, pretrain=True)
    p.add_argument(
        "--pseudo-labels",
        "--labels",
        dest="labels",
        type=Path,
        help="pseudo_labels.zarr (default: results/{run}/pseudo_labels.zarr)",
    )
    p.add_argument(
        "--masks", type=Path, help="masks.zarr for the object and boundary losses (default: results/{run}/masks.zarr)"
    )
    p.add_argument("--supervised", action="store_true", help="train on the ground truth (fully supervised)")
    p.add_argument("--out", type=Path, help="output folder (default: results/{run}/segmentation)")
    p.set_defaults(func=cmd_train_segmentation)

    p = sub.add_parser(
        "predict",
        help="predict every tile -> predictions.zarr + GeoTIFF per scene",
        description="Per-tile predictions and one georeferenced GeoTIFF per source scene, "
        "overlapping tiles blended (config section predict).",
    )
    _config_args(p)
    _stage_io(p, tiles=True)
    p.add_argument("--model", type=Path, help="segmentation model (default: results/{run}/segmentation/model.pt)")
    p.add_argument("--out", type=Path, help="output store (default: results/{run}/predictions.zarr)")
    p.add_argument("--geotiffs", type=Path, help="GeoTIFF folder (default: results/{run}/predictions)")
    p.add_argument("--no-geotiffs", action="store_true", help="write no GeoTIFFs (only predictions.zarr)")
    _shard_args(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser(
        "map",
        help="apply a trained model to new GeoTIFFs -> Cloud-Optimized GeoTIFF maps (+ polygons)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Map new imagery with a trained segmentation model: each INPUT (a GeoTIFF, a VRT, a folder "
        "of them or a glob) becomes OUT/<name>.tif, a Cloud-Optimized GeoTIFF of class indices with "
        "the input's CRS, transform and size, the class palette as colour map, class names in its "
        "metadata and 255 where the input is nodata. The input is read in windows of overlapping "
        "model tiles (blended as predict does), so memory does not grow with its size. Inputs "
        "already mapped with the same model and settings are skipped; a killed run resumes. "
        "Settings: config section map, overridden by the options below.",
        epilog="examples:\n"
        "  atsg map --model results/demo/segmentation/model.pt --out maps/ new_scene.tif\n"
        "  atsg map --model model.pt --out maps/ --vector --simplify 0.5 --min-area 4 tiles/*.tif\n"
        "  atsg map --model model.pt --out maps/ --probabilities --scales 0.75 1 1.25 --flip mosaic.vrt",
    )
    _config_args(p)
    p.add_argument(
        "inputs",
        nargs="*",
        metavar="INPUT",
        help="GeoTIFF, VRT, folder of them or glob (default: config key map.inputs)",
    )
    p.add_argument("--model", type=Path, help="segmentation model file (default: the run's, by map.model)")
    p.add_argument("--out", type=Path, help="output folder (default: results/{run}/maps)")
    p.add_argument("--work", type=Path, help="folder of the work stores (default: OUT/.atsg-map)")
    p.add_argument(
        "--redo",
        action="store_true",
        help="map every input again, even those already mapped with this model and settings",
    )
    p.add_argument(
        "--probabilities",
        action="store_true",
        default=None,
        help="also write <name>.probabilities.tif (one uint8 band per class)",
    )
    p.add_argument(
        "--vector",
        action="store_true",
        default=None,
        help="also write <name>.gpkg (polygons per class, with class name and area)",
    )
    p.add_argument("--simplify", type=float, metavar="UNITS", help="polygon simplification tolerance, map units")
    p.add_argument("--min-area", type=float, metavar="UNITS2", help="drop polygons smaller than this, map units^2")
    p.add_argument("--scales", type=float, nargs="+", metavar="S", help="inference scales (e.g. 0.75 1 1.25)")
    p.add_argument("--flip", action="store_true", default=None, help="add horizontal flips")
    p.add_argument("--overlap", type=int, metavar="PX", help="overlap of neighbouring model tiles in pixels")
    p.add_argument(
        "--resample",
        action="store_true",
        default=None,
        help="map at the model's training ground sample distance, then back to the input's grid",
    )
    p.add_argument(
        "--value-range",
        type=float,
        nargs=2,
        metavar=("LOW", "HIGH"),
        help="input values mapped to 0-255 (default: the model's own)",
    )
    p.add_argument("--batch-size", type=int, metavar="N", help="tiles per forward pass")
    p.add_argument("--device", help="auto, cpu or cuda[:N]")
    _shard_args(p)
    p.set_defaults(func=cmd_map)

    p = sub.add_parser(
        "evaluate",
        help="metrics, confusion matrix, report and figures",
        description="Score CAM labels, pseudo-labels and predictions against the ground truth "
        "(config sections evaluate, refine).",
    )
    _config_args(p)
    _stage_io(p, tiles=True)
    p.add_argument("--cams", type=Path, help="cams.zarr (default: results/{run}/cams.zarr)")
    p.add_argument("--pseudo-labels", type=Path, help="pseudo_labels.zarr (default: results/{run}/pseudo_labels.zarr)")
    p.add_argument("--predictions", type=Path, help="predictions.zarr (default: results/{run}/predictions.zarr)")
    p.add_argument("--supervised", type=Path, help="predictions of the supervised model (optional)")
    p.add_argument(
        "--expect",
        metavar="JSON",
        help="artifact keys this run's config makes, {artifact: key}: an input with another key is an "
        "error (the workflow passes them; default with --configfile: computed from the config)",
    )
    p.add_argument("--out", type=Path, help="output folder (default: results/{run}/eval)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "report",
        help="the page snakemake --report opens on: the run, its mIoU table and figures",
        description="Write report/run.rst (the description of the run, then the mIoU and per-class IoU of "
        "CAM labels, pseudo-labels, weak and supervised predictions, the weak / supervised ratio, the "
        "classifier's F1, IoU bars, training curves, legend, sample tiles and confusion matrix, figures "
        "embedded), report/iou.png and report/training.png from an evaluation and the run's trainings "
        "(config sections " + ", ".join(REPORT_SECTIONS) + ").",
    )
    _config_args(p)
    _stage_io(p, tiles=True)
    p.add_argument("--eval", type=Path, help="the evaluation's folder (default: results/{run}/eval)")
    p.add_argument(
        "--training",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="metrics.json of a training to draw (NAME: pretrain, classifier, segmentation or supervised); "
        "default: those under results/{run}/",
    )
    p.add_argument("--out", type=Path, help="output folder (default: results/{run}/report)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser(
        "ablate",
        help="run the ablation target of the workflow and print its table",
        description="Run the Snakemake target `ablation`: the run, then the run again with each "
        "variant of ablation.variants (default: each ATSG component switched off in "
        "turn), reusing every artifact a variant shares with the run; then print "
        "eval/ablation.md. Arguments after -- go to snakemake unchanged.",
        epilog="example: atsg ablate --cores 2 --configfile config/cpu.yaml -- --dry-run",
    )
    p.add_argument("--cores", default="all", help="snakemake --cores (default: all)")
    p.add_argument(
        "--configfile",
        action="append",
        default=[],
        metavar="FILE",
        help="config file, as with snakemake (without one: the demo, config/config.yaml); repeat to overlay",
    )
    p.add_argument(
        "--snakefile", type=Path, help="the workflow (default: ./Snakefile, else the one beside the installed package)"
    )
    p.add_argument(
        "snakemake_args",
        nargs=argparse.REMAINDER,
        metavar="-- ARGS",
        help="further snakemake arguments, e.g. -- --resources gpu=4 --profile profiles/slurm",
    )
    p.set_defaults(func=cmd_ablate)

    p = sub.add_parser(
        "ablation_table",
        help="the ablation table from each variant's eval/metrics.json",
        description="Write eval/ablation.md and eval/ablation.json: CAM, pseudo-label and "
        "prediction mIoU of the full configuration and of each ablation variant "
        "(config sections run, ablation). The rule `ablation` calls this.",
    )
    _config_args(p)
    p.add_argument(
        "--metrics",
        action="append",
        default=[],
        metavar="NAME=PATH",
        required=True,
        help="eval/metrics.json of the full configuration (NAME full) and of each variant",
    )
    p.add_argument("--out", type=Path, help="output folder (default: results/{run}/eval)")
    p.set_defaults(func=cmd_ablation_table)

    p = sub.add_parser(
        "info",
        help="arrays, shapes, dtypes, chunks and attrs of a store (--verify: check it)",
        description="Describe a Zarr store written by atsg. With --verify, check every chunk of it "
        "against its seal (missing, truncated or corrupt tiles, chunks that do not "
        "decode, arrays of the wrong dtype or dimensions) and exit with status 2 on any defect.",
    )
    p.add_argument("store", type=Path)
    p.add_argument("--verify", action="store_true", help="check every tile of the store; exit 2 on any defect")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser(
        "import_checkpoint",
        help="a published ATSG checkpoint -> atsg model files",
        description="Read a state dict of the official network (model_seg_neg_fp.py) into the paper-"
        "mode model the config describes (e.g. --configfile config/potsdam.yaml "
        "config/paper.yaml): a segmentation model file for predict, and with "
        "--classifier-out the classifier's.",
    )
    _config_args(p)
    p.add_argument("checkpoint", type=Path, help="the official .pth file")
    p.add_argument("--out", type=Path, required=True, help="segmentation model file to write")
    p.add_argument("--classifier-out", type=Path, help="also write the classifier model file (for extract_cams)")
    p.set_defaults(func=cmd_import_checkpoint)

    p = sub.add_parser(
        "config",
        help="print the validated configuration with all defaults",
        description="Merge and validate the configuration and print it as YAML.",
    )
    _config_args(p)
    p.set_defaults(func=cmd_config)
    return parser


def _shard_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "sharding",
        "Without these options the stage runs whole in this process. Snakemake splits it into "
        "--prepare, one --shard per shard (config section shards) and --finalise.",
    )
    g.add_argument("--prepare", action="store_true", help="write the empty store under its partial name, then stop")
    g.add_argument("--shard", metavar="K/S", help="fill shard K of S into the partial store")
    g.add_argument("--marker", type=Path, metavar="FILE", help="with --shard: written when the shard has finished")
    g.add_argument("--finalise", action="store_true", help="check every shard's marker and move the store into place")
    g.add_argument("--markers", type=Path, nargs="+", default=[], metavar="FILE", help="with --finalise: the markers")


def _step(args):
    from .shards import Step

    return Step.from_args(args.prepare, args.shard, args.marker, args.finalise, args.markers)


def _on_devices(cfg, step, section: str, job: str, gpus: int = 1):
    """The GPU claim of a stage run (see atsg.gpus); preparing and finalising a store need none."""
    working = step is None or step.part in ("all", "shard")
    return claim_devices(gpus if working else 0, cfg["devices"], job, cfg[section].get("device", "auto"))


def _stage_io(
    p: argparse.ArgumentParser, tiles: bool = False, classifier: bool = False, pretrain: bool = False
) -> None:
    if tiles:
        p.add_argument("--tiles", type=Path, help="tiles.zarr (default: results/{run}/tiles.zarr)")
        if pretrain:
            p.add_argument(
                "--pretrain",
                type=Path,
                help="the pretrain stage's folder, for weights: pretrain and "
                "linking.features: pretrain (default: results/{run}/pretrain)",
            )
    if classifier:
        p.add_argument("--classifier", type=Path, help="classifier model (default: results/{run}/classifier/model.pt)")


def _config(args, section: str | None = None) -> dict:
    """The validated config of a command: its config files (the demo's when neither a file nor --params is
    given), then --params, then --set. With ``section``, torch's CPU threads are fixed for the stage."""
    files = args.configfile or ([] if args.params else [demo_configfile()])
    cfg = load_config(files, args.params, args.assignments)
    if section is not None and not (getattr(args, "prepare", False) or getattr(args, "finalise", False)):
        from .device import set_torch_threads  # imports torch: not for the bookkeeping steps of sharded stages

        set_torch_threads(cfg[section], args.threads)
    return cfg


def cmd_synth(args) -> None:
    from .artifacts import record
    from .stages.synth import run_synth

    cfg = _config(args)
    out = args.out or run_dir(cfg) / "scenes"
    run_synth(cfg["synthetic"], cfg["dataset"], out, workers=args.threads or 1, record=record(cfg, "scenes", {}))


def cmd_tile(args) -> None:
    from .stages.tile import run_tile

    cfg = _config(args)
    root = args.root or dataset_root(cfg)
    out = args.out or run_dir(cfg) / "tiles.zarr"
    summary = run_tile(cfg, out, root)
    print(json.dumps(summary))


def _paths(args, cfg) -> dict:
    """Stage inputs and outputs: the arguments given, else the standard places under results/{run}/."""
    run = run_dir(cfg)
    default = {
        "tiles": run / "tiles.zarr",
        "pretrain": run / "pretrain",
        "classifier": run / "classifier" / "model.pt",
        "cams": run / "cams.zarr",
        "masks": run / "masks.zarr",
        "labels": run / "pseudo_labels.zarr",
        "pseudo_labels": run / "pseudo_labels.zarr",
        "model": run / "segmentation" / "model.pt",
        "predictions": run / "predictions.zarr",
        "geotiffs": run / "predictions",
    }
    return {k: (getattr(args, k, None) or v) for k, v in default.items()}


def _report(summary) -> None:
    if not summary:  # a training process other than rank 0
        return
    print(json.dumps(summary))
    log.info("summary: %s", json.dumps(summary))


@contextlib.contextmanager
def _training(cfg, section: str, job: str):
    """A training command's processes and devices. With train.gpus > 1 (and not yet under torchrun) it claims
    the GPUs, runs the same command as that many torchrun processes and yields False: nothing left to do here.
    Otherwise it yields True inside the process group (a no-op for one process) holding the device it needs."""
    from . import distributed

    gpus = cfg["train"]["gpus"]
    device = cfg[section].get("device", "auto")
    if distributed.under_torchrun():  # one of the processes: the launcher holds the devices
        with distributed.process_group(cfg["train"]["backend"]):
            yield True
    elif gpus > 1:
        distributed.check_batch(cfg[section]["batch_size"], section, gpus)
        with claim_devices(gpus, cfg["devices"], job, device):
            distributed.launch(sys.argv[1:], gpus)
        yield False
    else:
        with claim_devices(1, cfg["devices"], job, device):
            yield True


def cmd_pretrain(args) -> None:
    cfg = _config(args, "pretrain")
    io = _paths(args, cfg)
    with _training(cfg, "pretrain", "pretrain") as here:
        if here:
            from .stages.pretrain import run_pretrain

            _report(run_pretrain(cfg, io["tiles"], args.out or io["pretrain"]))


def cmd_train_classifier(args) -> None:
    cfg = _config(args, "classifier")
    io = _paths(args, cfg)
    with _training(cfg, "classifier", "train_classifier") as here:
        if here:
            from .stages.train_classifier import run_train_classifier

            _report(
                run_train_classifier(
                    cfg, io["tiles"], args.out or run_dir(cfg) / "classifier", io["masks"], io["pretrain"]
                )
            )


def cmd_extract_cams(args) -> None:
    cfg = _config(args, "cams")
    io = _paths(args, cfg)
    step = _step(args)
    with _on_devices(cfg, step, "cams", "extract_cams"):
        from .stages.extract_cams import run_extract_cams  # after the claim: CUDA starts with the claimed devices

        _report(run_extract_cams(cfg, io["tiles"], io["classifier"], args.out or io["cams"], step))


def cmd_generate_masks(args) -> None:
    cfg = _config(args, "masks")
    io = _paths(args, cfg)
    step = _step(args)
    with _on_devices(cfg, step, "masks", "generate_masks", 1 if cfg["masks"]["generator"] == "sam" else 0):
        from .stages.generate_masks import run_generate_masks  # after the claim: CUDA starts with the claimed devices

        _report(run_generate_masks(cfg, io["tiles"], args.out or io["masks"], step))


def cmd_refine_labels(args) -> None:
    cfg = _config(args, "refine")
    io = _paths(args, cfg)
    r = cfg["refine"]
    with _on_devices(cfg, None, "refine", "refine_labels"):
        from .stages.refine_labels import run_refine_labels  # after the claim: CUDA starts with the claimed devices

        _report(
            run_refine_labels(
                cfg,
                io["tiles"],
                io["cams"],
                io["masks"] if r["mask_voting"] else None,
                io["classifier"] if r["affinity"] else None,
                args.out or io["pseudo_labels"],
            )
        )


def cmd_train_segmentation(args) -> None:
    cfg = _config(args, "segmentation")
    io = _paths(args, cfg)
    supervised = True if args.supervised else None
    default_out = run_dir(cfg) / ("supervised" if args.supervised else "segmentation")
    with _training(cfg, "segmentation", "train_segmentation") as here:
        if here:
            from .stages.train_segmentation import run_train_segmentation

            _report(
                run_train_segmentation(
                    cfg,
                    io["tiles"],
                    io["labels"],
                    args.out or default_out,
                    supervised,
                    None if args.supervised else io["masks"],
                    io["pretrain"],
                )
            )


def cmd_predict(args) -> None:
    cfg = _config(args, "predict")
    io = _paths(args, cfg)
    geotiffs = None if args.no_geotiffs else io["geotiffs"]
    step = _step(args)
    with _on_devices(cfg, step, "predict", "predict"):
        from .stages.predict import run_predict  # after the claim: CUDA starts with the claimed devices

        _report(run_predict(cfg, io["tiles"], io["model"], args.out or io["predictions"], geotiffs, step))


MAP_OPTIONS = (
    "probabilities",
    "vector",
    "simplify",
    "min_area",
    "scales",
    "flip",
    "overlap",
    "resample",
    "value_range",
    "batch_size",
    "device",
)


def cmd_map(args) -> None:
    args.assignments = list(args.assignments) + [
        f"map.{key}={json.dumps(getattr(args, key))}" for key in MAP_OPTIONS if getattr(args, key) is not None
    ]
    cfg = _config(args, "map")
    run = run_dir(cfg)
    model = args.model or (run / ("supervised" if cfg["map"]["model"] == "supervised" else "segmentation") / "model.pt")
    step = _step(args)
    with _on_devices(cfg, step, "map", "map"):
        from .stages.map import run_map

        _report(
            run_map(
                cfg,
                model,
                args.inputs or cfg["map"]["inputs"],
                args.out or run / "maps",
                args.work,
                step,
                redo=args.redo,
            )
        )


def cmd_evaluate(args) -> None:
    from .stages.evaluate import run_evaluate

    cfg = _config(args, "evaluate")
    io = _paths(args, cfg)
    if args.expect:
        try:
            expect = json.loads(args.expect)
        except json.JSONDecodeError as exc:
            raise AtsgError(f"--expect is not valid JSON: {exc}") from None
    elif args.configfile and not args.params:  # a whole config: the keys it makes
        from .artifacts import artifact_key, upstream

        expect = {name: artifact_key(cfg, name) for name in upstream(cfg, "eval")}
    else:
        expect = None
    _report(
        run_evaluate(
            cfg,
            io["tiles"],
            io["cams"],
            io["pseudo_labels"],
            io["predictions"],
            args.supervised,
            args.out or run_dir(cfg) / "eval",
            expect,
        )
    )


def _named_paths(items, option: str, example: str) -> dict[str, Path]:
    """``NAME=PATH`` arguments as {name: path}."""
    paths = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise AtsgError(f"{option} {item!r}: write NAME=PATH, e.g. {option} {example}")
        paths[name] = Path(path)
    return paths


def cmd_report(args) -> None:
    from .artifacts import TRAININGS
    from .stages.report import run_report

    cfg = _config(args)
    run = run_dir(cfg)
    trainings = _named_paths(args.training, "--training", "classifier=results/demo/classifier/metrics.json")
    unknown = sorted(set(trainings) - set(TRAININGS))
    if unknown:
        raise AtsgError(f"--training {unknown[0]}=...: not a training; one of {', '.join(TRAININGS)}")
    if not args.training:
        found = {name: run / name / "metrics.json" for name in TRAININGS}
        trainings = {name: path for name, path in found.items() if path.is_file()}
    _report(
        run_report(cfg, _paths(args, cfg)["tiles"], args.eval or run / "eval", trainings, args.out or run / "report")
    )


def _snakefile(given: Path | None) -> Path:
    candidates = [given] if given else [Path("Snakefile"), Path(__file__).resolve().parents[1] / "Snakefile"]
    for path in candidates:
        if path.is_file():
            return path
    raise AtsgError(f"no Snakefile at {candidates[0]}; run from the atsg checkout or pass --snakefile")


def cmd_ablate(args) -> None:
    import subprocess

    snakefile = _snakefile(args.snakefile)
    extra = args.snakemake_args[1:] if args.snakemake_args[:1] == ["--"] else args.snakemake_args
    cmd = [sys.executable, "-m", "snakemake", "ablation", "--snakefile", str(snakefile), "--cores", str(args.cores)]
    if args.configfile:  # one --configfile with every file: snakemake reads them in order
        cmd += ["--configfile", *map(str, args.configfile)]
    cmd += extra
    log.info("running %s", " ".join(cmd))
    code = subprocess.run(cmd).returncode
    if code:
        raise AtsgError(f"snakemake exited with {code}; see its output above and results/{{run}}/logs/")
    cfg = load_config(args.configfile or [demo_configfile()])
    table = run_dir(cfg) / "eval" / "ablation.md"
    if table.exists():
        print(table.read_text(encoding="utf-8"), end="")


def cmd_ablation_table(args) -> None:
    from .ablation import write_ablation

    cfg = _config(args)
    paths = {
        k: str(v) for k, v in _named_paths(args.metrics, "--metrics", "full=results/demo/eval/metrics.json").items()
    }
    if "full" not in paths:
        raise AtsgError("--metrics full=PATH (the full configuration's eval/metrics.json) is missing")
    rows = write_ablation(paths, cfg, args.out or run_dir(cfg) / "eval")
    _report({"rows": len(rows), "out": str(args.out or run_dir(cfg) / "eval")})


def cmd_info(args) -> None:
    from .store import describe, verify_store

    print(describe(args.store))
    if args.verify:
        defects, checked = verify_store(args.store)
        if defects:
            print("\n".join(["defects:", *(f"  {d}" for d in defects)]))
            raise AtsgError(f"{args.store}: {len(defects)} defect(s); see above")
        print(f"verified: {checked}")


def cmd_import_checkpoint(args) -> None:
    from .stages.import_checkpoint import run_import_checkpoint

    _report(run_import_checkpoint(_config(args), args.checkpoint, args.out, args.classifier_out))


def cmd_config(args) -> None:
    print(yaml.safe_dump(_config(args), sort_keys=False), end="")


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        from .distributed import torchrun_argv

        argv = torchrun_argv()
    args = build_parser().parse_args(argv)
    to_file = setup_logging(args.verbose, getattr(args, "log", None))
    start = time.perf_counter()
    try:
        args.func(args)
    except BrokenPipeError:  # the reader of our output closed it (`atsg info STORE | head`): not a failure
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (Exception, KeyboardInterrupt) as exc:
        return report_failure(f"atsg {args.command}", exc, to_file, getattr(args, "log", None), args.verbose)
    log.debug("%s took %.1f s", args.command, time.perf_counter() - start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
