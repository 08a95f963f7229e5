"""Ablations: the run's config with one component switched off per variant, sharing every artifact it can.

A variant is the run's config deep-merged with ``ablation.variants.{name}.set``.
Its artifacts live under ``{run}/ablations/{name}/``, except those whose
:func:`~atsg.artifacts.artifact_key` equals the main run's (or an earlier
variant's): those are read from where they already are, so switching a
segmentation loss off retrains only the segmentation model.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from .artifacts import ARTIFACTS, artifact_key
from .config import deep_merge, run_dir, validate_config
from .errors import ConfigError
from .store import write_json, write_text

VARIANT_SECTIONS = ("pretrain", "classifier", "cams", "masks", "refine", "segmentation", "predict")
"""Sections a variant may change: tiles and evaluation stay those of the run, so rows compare."""

STAGES = (("cam", "CAM"), ("pseudo_labels", "pseudo-labels"), ("predictions", "predictions"))


def variant_configs(cfg: Mapping) -> dict[str, dict]:
    """Every variant's full, validated config, in the order of ``ablation.variants``."""
    out = {}
    for name, spec in cfg["ablation"]["variants"].items():
        outside = sorted(set(spec["set"]) - set(VARIANT_SECTIONS))
        if outside:
            raise ConfigError(
                f"config key ablation.variants.{name}.set: {', '.join(outside)} cannot change in an ablation "
                f"(only {', '.join(VARIANT_SECTIONS)}); every variant shares the run's tiles and evaluation"
            )
        merged = deep_merge(cfg, spec["set"])
        try:
            out[name] = validate_config(merged)
        except ConfigError as exc:
            raise ConfigError(f"ablation variant {name}: {exc}") from None
    return out


def artifact_roots(cfg: Mapping, variants: Mapping[str, Mapping] | None = None) -> dict[str | None, dict[str, Path]]:
    """For the run (key None) and each variant: the folder that holds each of its artifacts.

    A variant's artifact goes to ``{run}/ablations/{name}`` only when no config before it
    (the run's first, then earlier variants) makes the same artifact.
    """
    main = run_dir(cfg)
    variants = variant_configs(cfg) if variants is None else variants
    owner = {a: {artifact_key(cfg, a): main} for a in ARTIFACTS}
    roots: dict[str | None, dict[str, Path]] = {None: {a: main for a in ARTIFACTS}}
    for name, vcfg in variants.items():
        roots[name] = {a: owner[a].setdefault(artifact_key(vcfg, a), main / "ablations" / name) for a in ARTIFACTS}
    return roots


def _miou(metrics: Mapping, stage: str, split: str) -> float | None:
    entry = metrics.get(stage, {}).get("splits", {}).get(split)
    return None if entry is None or entry.get("miou") is None else float(entry["miou"])


def ablation_rows(metrics: Mapping[str, Mapping], cfg: Mapping, same_as_full: set[str] = frozenset()) -> list[dict]:
    """One row per config: the full one first (key ``full``), then the variants in the order of ``metrics``;
    mIoU per stage and split."""
    variants = cfg["ablation"]["variants"]
    if "full" not in metrics:
        raise ConfigError("ablation: no evaluation metrics for the full configuration ('full')")
    unknown = sorted(set(metrics) - {"full"} - set(variants))
    if unknown:
        raise ConfigError(f"ablation: {', '.join(unknown)} not in ablation.variants of the config")
    rows = []
    for name in ["full", *(n for n in metrics if n != "full")]:
        row = {
            "variant": name,
            "description": "every component on" if name == "full" else variants[name].get("description", ""),
            "same_as_full": name in same_as_full,
            "miou": {},
        }
        for split in cfg["ablation"]["splits"]:
            row["miou"][split] = {stage: _miou(metrics[name], stage, split) for stage, _ in STAGES}
        rows.append(row)
    full = rows[0]["miou"]
    for row in rows:
        row["delta_predictions"] = {
            split: None
            if row["miou"][split]["predictions"] is None or full[split]["predictions"] is None
            else row["miou"][split]["predictions"] - full[split]["predictions"]
            for split in cfg["ablation"]["splits"]
        }
    return rows


def _pct(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{100 * value:+.1f}" if signed else f"{100 * value:.1f}"


def ablation_markdown(rows: list[dict], splits: list[str], run: str) -> str:
    """The ablation table as Markdown (mIoU in %)."""
    head = ["variant", "switched off"]
    for split in splits:
        head += [f"{label} {split}" for _, label in STAGES] + [f"Δ pred. {split}"]
    lines = [
        f"# Ablations of run {run}",
        "",
        "mIoU (%) of CAM labels, pseudo-labels and segmentation predictions, each component switched "
        "off in turn; Δ pred. is the prediction mIoU minus that of the full configuration.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for row in rows:
        cells = [row["variant"], row["description"] + (" (same as full config)" if row["same_as_full"] else "")]
        for split in splits:
            cells += [_pct(row["miou"][split][stage]) for stage, _ in STAGES]
            cells.append(_pct(row["delta_predictions"][split], signed=True) if row["variant"] != "full" else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_ablation(metrics_paths: Mapping[str, str | Path], cfg: Mapping, out_dir: str | Path) -> list[dict]:
    """Read each config's eval/metrics.json, write ``ablation.json`` and ``ablation.md`` into ``out_dir``."""
    paths = {name: Path(p) for name, p in metrics_paths.items()}
    metrics = {}
    for name, path in paths.items():
        try:
            metrics[name] = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"ablation: {path} does not exist; run the ablation target") from None
    same = {name for name, path in paths.items() if name != "full" and path.resolve() == paths["full"].resolve()}
    rows = ablation_rows(metrics, cfg, same)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    splits = list(cfg["ablation"]["splits"])
    write_json(out_dir / "ablation.json", {"splits": splits, "rows": rows}, indent=2)
    write_text(out_dir / "ablation.md", ablation_markdown(rows, splits, cfg["run"]))
    return rows
