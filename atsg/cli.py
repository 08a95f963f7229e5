"""`atsg`: one subcommand per pipeline stage, so every stage also runs without Snakemake.

Settings come from config files (``--configfile``), the JSON of config sections
a Snakemake rule passes (``--params``) and ``--set KEY=VALUE`` overrides, in that
order; the result is validated against the schema before anything runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import yaml

from . import __version__
from .config import dataset_root, load_config, run_dir
from .errors import AtsgError

log = logging.getLogger("atsg")

EPILOG = """\
examples:
  atsg synth --configfile config/config.yaml --out results/demo/scenes
  atsg tile --configfile config/potsdam.yaml --set dataset.root=/data/potsdam --out results/potsdam/tiles.zarr
  atsg info results/demo/tiles.zarr
  atsg config --configfile config/potsdam.yaml      # the full validated config with defaults

The Snakemake workflow (snakemake --cores 2) runs these stages in order and caches their outputs.
"""


def _config_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("configuration")
    g.add_argument("--configfile", action="append", default=[], metavar="FILE",
                   help="YAML config file; repeat to overlay (e.g. a preset then config/cpu.yaml)")
    g.add_argument("--params", metavar="JSON", help="config sections as JSON (what Snakemake rules pass)")
    g.add_argument("--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE",
                   help="override one key, e.g. --set tiling.size=512 (value read as YAML)")
    g.add_argument("--log", metavar="FILE", help="also write the log to FILE")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="atsg", description=__doc__.splitlines()[0] + "\n\n" + "\n".join(__doc__.splitlines()[2:]),
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"atsg {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("synth", help="write the synthetic demo scenes (GeoTIFF images + RGB labels)",
                       description="Write procedural Potsdam-style aerial scenes as georeferenced GeoTIFFs "
                                   "with RGB-coded label rasters (config sections synthetic, dataset).")
    _config_args(p)
    p.add_argument("--out", type=Path, help="output folder (default: results/{run}/scenes)")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("tile", help="cut scenes into tiles -> tiles.zarr",
                       description="Read every scene window by window and write tiles.zarr: images, labels, "
                                   "image-level labels and splits (config sections dataset, split, tiling).")
    _config_args(p)
    p.add_argument("--root", type=Path, help="dataset folder (default: dataset.root, or the synthetic scenes)")
    p.add_argument("--out", type=Path, help="output store (default: results/{run}/tiles.zarr)")
    p.set_defaults(func=cmd_tile)

    p = sub.add_parser("info", help="arrays, shapes, dtypes, chunks and attrs of a store",
                       description="Describe a Zarr store written by atsg.")
    p.add_argument("store", type=Path)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("config", help="print the validated configuration with all defaults",
                       description="Merge and validate the configuration and print it as YAML.")
    _config_args(p)
    p.set_defaults(func=cmd_config)
    return parser


def _setup_logging(verbose: bool, logfile: str | None) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if logfile:
        Path(logfile).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(logfile, mode="w"))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=handlers, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not verbose:  # GDAL's own messages repeat what our one-line errors say
        logging.getLogger("rasterio").setLevel(logging.WARNING)


def _config(args) -> dict:
    return load_config(args.configfile, args.params, args.assignments)


def cmd_synth(args) -> None:
    from .data.synthetic import run_synth

    cfg = _config(args)
    out = args.out or run_dir(cfg) / "scenes"
    run_synth(cfg["synthetic"], cfg["dataset"], out)


def cmd_tile(args) -> None:
    from .data.tiling import run_tile

    cfg = _config(args)
    root = args.root or dataset_root(cfg)
    out = args.out or run_dir(cfg) / "tiles.zarr"
    summary = run_tile(cfg, out, root)
    print(json.dumps(summary))


def cmd_info(args) -> None:
    from .store import describe

    print(describe(args.store))


def cmd_config(args) -> None:
    print(yaml.safe_dump(_config(args), sort_keys=False), end="")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose, getattr(args, "log", None))
    start = time.perf_counter()
    try:
        args.func(args)
    except AtsgError as exc:
        log.debug("failed", exc_info=True)
        line = f"atsg {args.command}: error: {exc}"
        print(line, file=sys.stderr)
        if getattr(args, "log", None):
            with open(args.log, "a", encoding="utf-8") as fh:
                fh.write(line + "\n")
        return 2
    log.debug("%s took %.1f s", args.command, time.perf_counter() - start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
