"""Write the stage graph of docs/architecture.md from the one declaration of the pipeline (atsg.artifacts).

    python scripts/update_architecture.py          # rewrite the table between the markers
    python scripts/update_architecture.py --check  # exit 1 if the page is out of date (tests run this check)

Each row is an artifact: the rule that makes it, what it writes, the config sections whose artifact keys make
it, and what its stage reads. A read that only some configurations make is marked with them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from atsg.artifacts import ARTIFACTS, RULES, artifact_files, own_sections, reads  # noqa: E402
from atsg.config import load_config  # noqa: E402

PAGE = REPO / "docs" / "architecture.md"
BEGIN, END = "<!-- stage graph: begin -->", "<!-- stage graph: end -->"
DEMO = REPO / "config" / "config.yaml"
CASES = {  # configurations whose reads are merged into the table, the demo first
    "demo": ([DEMO], {}),
    "paper mode": ([DEMO, REPO / "config" / "paper.yaml"], {}),
    "weights: pretrain": ([DEMO], {"classifier": {"weights": "pretrain"}, "segmentation": {"weights": "pretrain"}}),
    "refine.affinity": ([DEMO], {"refine": {"affinity": True}}),
    "no SAM guidance": (
        [DEMO],
        {
            "refine": {"mask_voting": False},
            "segmentation": {"object_loss": {"enabled": False}, "boundary_loss": {"enabled": False}},
        },
    ),
}


def _marked(found: dict[str, list[str]], every: int) -> str:
    """Values in the order met, each marked with the configurations it holds in unless it holds in all."""
    return "; ".join(k if len(v) == every else f"{k} [{', '.join(v)}]" for k, v in found.items()) or "-"


def graph_markdown() -> str:
    configs = {name: load_config(files, [over]) for name, (files, over) in CASES.items()}
    lines = [
        "| artifact | rule | writes | made by sections | reads |",
        "| --- | --- | --- | --- | --- |",
    ]
    for art in ARTIFACTS:
        found: dict[str, dict[str, list[str]]] = {"writes": {}, "sections": {}, "reads": {}}
        for name, cfg in configs.items():
            for f in artifact_files(cfg, art):
                found["writes"].setdefault(f, []).append(name)
            for s in own_sections(cfg, art):
                found["sections"].setdefault(s, []).append(name)
            for up, r in reads(cfg, art).items():
                found["reads"].setdefault(f"`{up}` ({r.file})", []).append(name)
        cells = [_marked(found[k], len(configs)) for k in ("writes", "sections", "reads")]
        lines.append(f"| `{art}` | `{RULES[art]}` | {' | '.join(cells)} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="only check that the page is up to date")
    args = ap.parse_args()
    text = PAGE.read_text()
    head, rest = text.split(BEGIN)
    _, tail = rest.split(END)
    new = f"{head}{BEGIN}\n{graph_markdown()}\n{END}{tail}"
    if args.check:
        if new != text:
            print(f"{PAGE} is out of date: run python scripts/update_architecture.py", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
