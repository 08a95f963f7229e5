"""Run every stage benchmark and print one table (the one in benchmarks/README.md).

    python benchmarks/run_all.py            # the sizes of the README table (about 25 min on 2 CPU cores)
    python benchmarks/run_all.py --quick    # tiny sizes, about a minute: checks that everything runs

Each benchmark is its own script (see its docstring); this runs them one after
another in fresh processes and reads the JSON line each prints last.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = ("par", "masks", "cams", "tiling", "loader", "map", "crf", "cpu_amp")


def run(name: str, quick: bool, extra: list[str] | None = None) -> dict:
    cmd = [sys.executable, str(HERE / f"{name}.py")] + (["--quick"] if quick else []) + (extra or [])
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    print(out.rstrip(), file=sys.stderr)
    return json.loads(out.strip().splitlines()[-1])


def rows(results: dict) -> list[list[str]]:
    out = []
    if "par" in results:
        r = results["par"]
        out.append(
            [
                f"PAR, {r['size']} px x {r['batch']}, {r['classes']} maps",
                f"{r['published']['seconds']:.2f} s, +{r['published']['peak_mb']:.0f} MB",
                f"{r['atsg']['seconds']:.2f} s, +{r['atsg']['peak_mb']:.0f} MB",
                f"{r['speedup']:.1f}x, {r['memory_ratio']:.1f}x less memory",
                f"max diff {r['max_abs_difference']:.1e}",
            ]
        )
    if "masks" in results:
        m, s = results["masks"]["maps"], results["masks"]["sam"]
        out.append(
            [
                f"object/boundary maps, {m['masks_per_tile']} masks per {m['size']} px tile",
                f"{m['published_s_per_tile'] * 1e3:.1f} ms/tile",
                f"{m['atsg_s_per_tile'] * 1e3:.2f} ms/tile",
                f"{m['speedup']:.1f}x",
                "equal" if m["equal"] else "DIFFERENT",
            ]
        )
        out.append(
            [
                f"mask stage, SAM {s['model']}, {s['tile']} px tiles",
                f"{s['published_s_per_tile']:.2f} s/tile",
                f"{s['atsg_s_per_tile']:.2f} s/tile",
                f"{s['speedup']:.2f}x; stage = {s['overhead']:.3f}x its SAM calls",
                "equal maps" if s["equal"] else "DIFFERENT",
            ]
        )
        sc = s["scene"]
        out.append(
            [
                f"scene windows, SAM {s['model']}",
                f"{sc['per_tile_tiles_per_s']:.3f} tiles/s (per tile)",
                f"{sc['tiles_per_s']:.3f} tiles/s",
                f"{sc['ratio']:.1f}x",
                f"{sc['mean_objects']:.1f} vs {sc['per_tile_mean_objects']:.1f} objects/tile",
            ]
        )
    if "cams" in results:
        c = results["cams"]
        out.append(
            [
                f"CAM extraction, {c['backbone']}, {c['tiles']} x {c['tile']} px",
                f"{c['published_s']:.2f} s",
                f"{c['atsg_s']:.2f} s",
                f"{c['speedup']:.2f}x; stage = {c['overhead']:.3f}x its forwards",
                f"max diff {c['max_abs_difference']:.3f}",
            ]
        )
    if "tiling" in results:
        t = results["tiling"]
        big = t["sizes"][-1]
        out.append(
            [
                f"tiling, scenes of {', '.join(str(s['side']) for s in t['sizes'])} px, {t['tile']} px tiles",
                f"{big['published']['mb_per_s']:.1f} MB/s, +{', '.join(f'{m:.0f}' for m in t['published_peak_mb'])} MB",
                f"{big['atsg']['mb_per_s']:.1f} MB/s, +{', '.join(f'{m:.0f}' for m in t['atsg_peak_mb'])} MB",
                f"{t['speedup']:.1f}x; store {t['size_ratio']:.3f}x the PNG bytes",
                "equal tiles" if t["equal"] else "DIFFERENT",
            ]
        )
    if "loader" in results:
        r = results["loader"]
        out.append(
            [
                f"training loader, {r['tiles']} tiles of {r['tile']} px",
                f"{r['png']['read_s_per_tile'] * 1e3:.2f} ms/tile read, {r['png']['s_per_sample'] * 1e3:.2f} ms/sample",
                f"{r['zarr']['read_s_per_tile'] * 1e3:.2f} ms/tile read, "
                f"{r['zarr']['s_per_sample'] * 1e3:.2f} ms/sample",
                f"reads {r['read_speedup']:.2f}x, samples {r['sample_speedup']:.2f}x; {r['size_ratio']:.3f}x the bytes",
                "equal samples" if r["equal"] else "DIFFERENT",
            ]
        )
    if "map" in results:
        r = results["map"]
        both = [x for x in r["sizes"] if "whole" in x]
        big = both[-1]
        out.append(
            [
                f"mapping a GeoTIFF ({r['device']}), {', '.join(str(x['side']) for x in r['sizes'])} px",
                f"{big['whole']['mp_per_s']:.2f} MP/s at {big['side']} px, "
                f"+{', '.join(f'{m:.0f}' for m in r['whole_peak_mb'])} MB",
                f"{big['atsg']['mp_per_s']:.2f} MP/s at {big['side']} px, "
                f"+{', '.join(f'{m:.0f}' for m in r['atsg_peak_mb'])} MB",
                f"{big['atsg']['mp_per_s'] / big['whole']['mp_per_s']:.2f}x; peak RSS "
                f"{max(r['atsg_peak_rss_mb']):.0f} MB at {r['sizes'][-1]['side']} px",
                f"agreement {min(x['agreement'] for x in both):.5f}",
            ]
        )
    if "crf" in results:
        r = results["crf"]
        pub = r["published"]
        out.append(
            [
                f"dense CRF ({r['device']}), {r['tiles']} tiles of {r['size']} px, batch {r['batch']}",
                f"{pub['s_per_tile'] * 1e3:.1f} ms/tile ({pub['threads']} thread)" if pub else "not run",
                f"{r['atsg']['s_per_tile'] * 1e3:.1f} ms/tile ({r['atsg']['threads']} threads)",
                f"{r['speedup']:.2f}x" if pub else "-",
                (f"max diff {r['max_abs_difference']:.1e}; " if pub else "")
                + f"fixture {r['fixture_max_abs_difference']:.1e}",
            ]
        )
    if "cpu_amp" in results:
        r = results["cpu_amp"]
        out.append(
            [
                f"classifier step on CPU ({r['size']} ViT, {r['batch']} crops of {r['crop']} px): training pass; "
                "per-step multi-scale CAM",
                f"fp32: {r['fp32']['train_s']:.3f} s; {r['fp32']['band_cam_s']:.3f} s",
                f"bf16 (cpu_amp): {r['bf16']['train_s']:.3f} s; {r['bf16']['band_cam_s']:.3f} s",
                f"{r['speedup']['train_s']:.2f}x; {r['speedup']['band_cam_s']:.2f}x"
                + ("" if r["native_bf16"] else " (no native bf16)"),
                f"CAM max diff {r['max_abs_difference']:.1e}, same class {r['same_class']:.2%}",
            ]
        )
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes (seconds per benchmark)")
    p.add_argument("--only", nargs="+", choices=SCRIPTS, default=list(SCRIPTS))
    p.add_argument(
        "--crf-python", help="an interpreter with pydensecrf, for the published dense CRF (crf.py --published-python)"
    )
    args = p.parse_args(argv)
    extra = {"crf": ["--published-python", args.crf_python] if args.crf_python else []}
    results = {name: run(name, args.quick, extra.get(name)) for name in args.only}
    print("| step | published | atsg | ratio | agreement |")
    print("| --- | ---: | ---: | ---: | --- |")
    for row in rows(results):
        print("| " + " | ".join(row) + " |")
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()
