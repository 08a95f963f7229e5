"""The evaluation as a document: the same headings, paragraphs, tables and figures rendered as Markdown
(``eval/report.md``) or reStructuredText (the landing page of ``snakemake --report``).

Text uses ``**bold**`` and ```code``` (one backtick) as in Markdown; :func:`to_rst` turns the latter into
reStructuredText's double backticks. Missing values are ``-`` in Markdown tables and an em dash in
reStructuredText ones (a cell ``-`` would open a bullet list there).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

SPLITS = ("train", "val", "test")
SOURCES = ("cam", "cam_all_classes", "pseudo_labels", "predictions", "supervised")
TITLES = {
    "cam": "CAM labels",
    "cam_all_classes": "CAM labels, every class (no image-level labels)",
    "pseudo_labels": "pseudo-labels",
    "predictions": "predictions (weak)",
    "supervised": "predictions (supervised)",
}
MAIN_SOURCES = ("cam", "pseudo_labels", "predictions", "supervised")
SHORT = {"cam": "CAM", "pseudo_labels": "pseudo-labels", "predictions": "weak", "supervised": "supervised"}
"""The rows of the headline table: what each stage of the method gives, and the fully supervised bound."""


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Para:
    text: str


@dataclass(frozen=True)
class Table:
    header: Sequence[str]
    rows: Sequence[Sequence[str]]
    title: str = ""


@dataclass(frozen=True)
class Figure:
    path: Path
    """The PNG, relative to the document's folder (Markdown) or anywhere (reStructuredText embeds it)."""
    alt: str
    caption: str = ""


@dataclass(frozen=True)
class Links:
    """A sentence that names targets of the document's host (the report's categories): ``before``, the names
    joined by commas (links in reStructuredText), ``after``."""

    before: str
    names: Sequence[str]
    after: str = ""


Block = Heading | Para | Table | Figure | Links


def pct(v) -> str:
    """A score in [0, 1] as a percentage with one decimal, ``-`` for a missing one."""
    return "-" if v is None else f"{100 * v:.1f}"


def headline(metrics: Mapping, classes: Sequence[str], split: str) -> list[Block]:
    """The mIoU table of the method's stages on the reported split (one column per source: CAM labels,
    pseudo-labels, weak and supervised predictions; one row per class, then mIoU), the weak / supervised ratio
    and the classifier's F1 beside its all-classes baseline."""
    sources = [s for s in MAIN_SOURCES if s in metrics]
    rows = [[c, *(pct(metrics[s]["iou"].get(c)) for s in sources)] for c in classes]
    rows.append(["**mIoU**", *(f"**{pct(metrics[s]['miou'])}**" for s in sources)])
    blocks: list[Block] = [
        Heading(f"IoU on the {split} split (%)"),
        Table(["class", *(SHORT[s] for s in sources)], rows),
    ]
    base = metrics.get("majority") or {}
    if base.get("class") is not None:
        blocks.append(Para(f"Baseline, {base['class']} everywhere: mIoU {pct(base['miou'])}."))
    ratio = metrics.get("supervised", {}).get("weak_to_supervised")
    if ratio is not None:
        blocks.append(Para(f"Weak / fully supervised mIoU on {split}: **{ratio:.3f}**"))
    cls = (metrics.get("classification") or {}).get(split)
    if cls:
        blocks.append(
            Para(
                f"Classifier F1 on {split} (image-level, probability > 0.5): **{pct(cls['f1'])}**, against "
                f"{pct(cls['f1_all_classes'])} for predicting every class on every tile."
            )
        )
    return blocks


def score_blocks(metrics: Mapping, classes: Sequence[str], split: str) -> list[Block]:
    """Every table of the evaluation: mIoU by stage and split, the classifier, per-class IoU of every source."""
    rows = [
        [
            TITLES[s],
            *(pct(metrics[s]["splits"][sp]["miou"]) if sp in metrics[s]["splits"] else "-" for sp in SPLITS),
            pct(metrics[s]["oa"]),
            pct(metrics[s]["mean_f1"]),
        ]
        for s in SOURCES
        if s in metrics
    ]
    base = metrics.get("majority") or {}
    if base.get("class") is not None:
        by_split = (pct(base["splits"][sp]["miou"]) if sp in base["splits"] else "-" for sp in SPLITS)
        rows.append([f"majority class ({base['class']} everywhere; baseline)", *by_split, "-", "-"])
    blocks: list[Block] = [Heading("mIoU by stage and split"), Table(["stage", *SPLITS, "OA", "mean F1"], rows)]
    ratio = metrics.get("supervised", {}).get("weak_to_supervised")
    if ratio is not None:
        blocks.append(Para(f"Weak / fully supervised mIoU on {split}: **{ratio:.3f}**"))
    cls = metrics.get("classification") or {}
    if cls:
        blocks += [
            Heading("Classifier (image-level labels)"),
            Para(
                "Mean F1 over classes of the classifier's image-level predictions (probability > 0.5), beside "
                "the all-classes baseline that predicts every class for every tile."
            ),
            Table(
                ["split", "classifier F1", "all-classes F1", "tiles"],
                [[sp, pct(v["f1"]), pct(v["f1_all_classes"]), str(v["tiles"])] for sp, v in cls.items()],
            ),
        ]
    shown = [s for s in SOURCES if s in metrics]
    blocks += [
        Heading(f"Per-class IoU ({split})"),
        Table(
            ["class", *(TITLES[s] for s in shown)],
            [[c, *(pct(metrics[s]["iou"].get(c)) for s in shown)] for c in classes],
        ),
    ]
    return blocks


def lineage_blocks(made: Mapping) -> list[Block]:
    return [
        Heading("Made from"),
        Para(
            "Artifact keys (a digest of the settings that made each input and of everything upstream of it): "
            "every number above comes from these."
        ),
        Table(
            ["artifact", "key"],
            [[name, f"`{(key or 'none')[:16]}`"] for name, key in made["inputs"].items()]
            + [["eval (this report)", f"`{made['artifact_key'][:16]}`"]],
        ),
    ]


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")  # a bar in a class name is no column


def to_markdown(blocks: Sequence[Block], title: str) -> str:
    lines = [f"# {title}", ""]
    for b in blocks:
        if isinstance(b, Heading):
            lines += ["#" * b.level + " " + b.text, ""]
        elif isinstance(b, Para):
            lines += [b.text, ""]
        elif isinstance(b, Links):
            lines += [b.before + ", ".join(b.names) + b.after, ""]
        elif isinstance(b, Table):
            lines += [
                "| " + " | ".join(map(_md_cell, b.header)) + " |",
                "| --- | " + " | ".join("---:" for _ in b.header[1:]) + " |",
                *("| " + " | ".join(map(_md_cell, row)) + " |" for row in b.rows),
                "",
            ]
        else:
            lines += [f"![{b.alt}]({Path(b.path).as_posix()})", ""]
            if b.caption:
                lines += [b.caption, ""]
    return "\n".join(lines)


_CODE = re.compile(r"(?<!`)`([^`]+)`(?!`)")
_UNDERLINE = {1: "=", 2: "-", 3: "~"}


def _rst_text(text: str) -> str:
    return _CODE.sub(r"``\1``", text)


_BOLD = re.compile(r"\*\*([^*]+)\*\*")
_LITERAL = re.compile(r"`([^`]+)`")
_SPECIAL = re.compile(r"([\\`*_|])")


def _escape(text: str) -> str:
    return _SPECIAL.sub(r"\\\1", text)


def _rst_cell(text: str) -> str:
    """A table cell: ``-`` as an em dash, ``**x**`` bold, ```x``` code, anything else literal (a class named
    ``car_`` or ``a*b`` is no reference or emphasis)."""
    if text == "-":
        return "\u2014"
    bold, literal = _BOLD.fullmatch(text), _LITERAL.fullmatch(text)
    if bold:
        return f"**{_escape(bold.group(1))}**"
    if literal:
        return f"``{literal.group(1)}``"
    return _escape(text)


def to_rst(blocks: Sequence[Block], title: str) -> str:
    """reStructuredText of headings, paragraphs and tables."""
    lines = [title, "=" * len(title), ""]
    for b in blocks:
        if isinstance(b, Heading):
            lines += [b.text, _UNDERLINE.get(b.level, "-") * len(b.text), ""]
        elif isinstance(b, Para):
            lines += [_rst_text(b.text), ""]
        elif isinstance(b, Links):
            lines += [_rst_text(b.before) + ", ".join(f"`{name}`_" for name in b.names) + _rst_text(b.after), ""]
        elif isinstance(b, Table):
            lines += [f".. list-table:: {b.title}".rstrip(), "   :header-rows: 1", ""]
            for row in [b.header, *b.rows]:
                lines.append("   * - " + _rst_cell(row[0]))
                lines += ["     - " + _rst_cell(cell) for cell in row[1:]]
            lines.append("")
        else:
            raise TypeError(f"{type(b).__name__}: the reStructuredText page has no figures (the report shows them)")
    return "\n".join(lines)
