"""Mapping a large GeoTIFF: the usual whole-raster way against `atsg map` (windowed, flat memory), same model.

The whole-raster way is how a sliding-window inference over a scene is usually written (and how the published
code's test-time inference treats an image): read the whole raster, pad it, accumulate the Hann-weighted class
probabilities of every tile in scene-sized arrays, take the argmax and write one GeoTIFF. Its memory grows with
the raster (classes x 4 bytes per pixel for the probabilities alone). `atsg map` reads the tiles of one output
block at a time, writes blocks to a work store and then a Cloud-Optimized GeoTIFF, so its memory depends on the
block and tile sizes only.

Inputs are square RGB GeoTIFFs mosaicked from one synthetic aerial scene (as the tiling benchmark's); the model
is the demo's segmentation network (config/config.yaml) with random weights (asked for explicitly: throughput
and memory do not depend on the weights), 128 px tiles at 5 cm. Each way runs in its own fresh process;
throughput is megapixels of input per second, peak memory the growth of the process's maximum resident size
while it runs. Both ways' class maps are compared pixel by pixel.

    python benchmarks/map.py                 # 4096, 8192 and 16384 px; the whole-raster way up to 8192 px
    python benchmarks/map.py --whole-max 16384
    python benchmarks/map.py --device cuda   # on a GPU
    python benchmarks/map.py --quick         # 256 and 512 px (what the tests run)
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from tiling import _rss_mb, dataset_config, make_scene  # noqa: E402

TILE, OVERLAP, GSD = 128, 32, 0.05


def make_model(path: Path) -> None:
    import torch

    from atsg.config import load_config
    from atsg.factory import segmenter
    from atsg.geo.imagery import imagery_record, model_normalisation
    from atsg.stages.common import save_model_file

    cfg = load_config([HERE.parent / "config" / "config.yaml"])
    c = dict(cfg["segmentation"], weights="random_init", random_init=True, pretrained=False, checkpoint=None)
    torch.manual_seed(0)
    model = segmenter(c, 3, len(cfg["dataset"]["classes"]))
    attrs = {
        "classes": cfg["dataset"]["classes"],
        "palette": cfg["dataset"]["palette"],
        "background": True,
        "bands": ["R", "G", "B"],
        "raster_bands": [1, 2, 3],
        "value_range": None,
        "tile_size": TILE,
        "scenes": [{"crs": "EPSG:32633", "transform": [GSD, 0, 366000, 0, -GSD, 5808000], "width": 1, "height": 1}],
    }
    save_model_file(
        path,
        model.state_dict(),
        "segmentation",
        c,
        {"artifact": "segmentation", "artifact_key": "b"},
        classes=attrs["classes"],
        in_chans=3,
        supervised=False,
        best_step=0,
        imagery=imagery_record(attrs, model_normalisation(model)),
    )


def whole_raster(model_path: Path, image_path: Path, out: Path, batch: int, device: str) -> None:
    """The whole-raster way: scene-sized image, probabilities and weights in memory."""
    import rasterio
    import torch

    from atsg.factory import segmenter
    from atsg.geo.windows import hann_window
    from atsg.inference import predict_probs
    from atsg.stages.common import build_trained, load_model_file

    ck = load_model_file(model_path, "segmentation")
    model = build_trained(ck, lambda c: segmenter(c, 3, len(ck["classes"])), torch.device(device))
    with rasterio.open(image_path) as src:
        image, profile = src.read(), src.profile
    _, h, w = image.shape
    stride = TILE - OVERLAP
    starts = lambda n: [0] if n <= TILE else list(range(0, n - TILE + stride, stride))  # noqa: E731
    rows, cols = starts(h), starts(w)
    ph, pw = rows[-1] + TILE, cols[-1] + TILE
    padded = np.zeros((3, ph, pw), np.uint8)
    padded[:, :h, :w] = image
    del image
    acc = np.zeros((len(ck["classes"]), ph, pw), np.float32)
    total = np.zeros((ph, pw), np.float32)
    win = hann_window(TILE)
    inside = np.zeros((ph, pw), np.float32)
    inside[:h, :w] = 1
    grid = [(r, c) for r in rows for c in cols]
    for k in range(0, len(grid), batch):
        part = grid[k : k + batch]
        x = torch.from_numpy(np.stack([padded[:, r : r + TILE, c : c + TILE] for r, c in part])).to(device)
        probs = predict_probs(model, x).float().cpu().numpy()
        for (r, c), p in zip(part, probs):
            wt = win * inside[r : r + TILE, c : c + TILE]
            acc[:, r : r + TILE, c : c + TILE] += p * wt
            total[r : r + TILE, c : c + TILE] += wt
    labels = (acc / np.maximum(total, 1e-12)).argmax(0)[:h, :w].astype(np.uint8)
    profile.update(count=1, dtype="uint8", nodata=255, compress="deflate", tiled=True, blockxsize=512, blockysize=512)
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(labels, 1)


def measure(way: str, model: Path, image: Path, out: Path, batch: int, device: str) -> dict:
    import rasterio  # noqa: F401  (imports counted in the baseline of both ways)
    import torch  # noqa: F401

    from atsg.config import load_config
    from atsg.stages.map import run_map

    torch.set_num_threads(torch.get_num_threads())
    base = _rss_mb("VmRSS")
    start = time.perf_counter()
    if way == "atsg":
        cfg = load_config(
            [HERE.parent / "config" / "config.yaml"],
            # the dense CRF (map.crf) works per tile, the same in either way: both ways map without it
            {"map": {"overlap": OVERLAP, "batch_size": batch, "device": device, "crf": {"enabled": False}}},
        )
        run_map(cfg, model, [image], out.parent / "atsg", redo=True)
    else:
        whole_raster(model, image, out, batch, device)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak_mb": _rss_mb("VmHWM") - base, "peak_rss_mb": _rss_mb("VmHWM")}


def run_size(side: int, workdir: Path, model: Path, whole: bool, batch: int, device: str) -> dict:
    import rasterio

    root = workdir / f"scene{side}"
    make_scene(root, side, dataset_config(TILE))
    (root / "scene_label.tif").unlink()
    image = root / "scene_RGB.tif"
    rows = {}
    for way in ("whole", "atsg") if whole else ("atsg",):
        out = workdir / f"out{side}" / f"{way}.tif"
        out.parent.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable,
            __file__,
            "--measure",
            way,
            "--model",
            str(model),
            "--image",
            str(image),
            "--out",
            str(out),
            "--batch",
            str(batch),
            "--device",
            device,
        ]
        rows[way] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
        rows[way]["mp_per_s"] = side * side / 1e6 / rows[way]["seconds"]
    result = {"side": side, "megapixels": side * side / 1e6, **rows}
    if whole:
        with (
            rasterio.open(workdir / f"out{side}" / "whole.tif") as a,
            rasterio.open(workdir / f"out{side}" / "atsg" / "scene_RGB.tif") as b,
        ):
            same = 0
            for _, window in a.block_windows(1):
                same += int((a.read(1, window=window) == b.read(1, window=window)).sum())
        result["agreement"] = same / (side * side)
    shutil.rmtree(root)
    shutil.rmtree(workdir / f"out{side}")
    return result


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sides", type=int, nargs="+", default=[4096, 8192, 16384], help="input edges in px")
    p.add_argument("--whole-max", type=int, default=8192, help="largest input the whole-raster way runs on")
    p.add_argument("--batch", type=int, default=16, help="tiles per forward pass (both ways)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--quick", action="store_true", help="256 and 512 px inputs")
    p.add_argument("--keep", type=Path, help="work in this folder and keep it")
    p.add_argument("--measure", choices=["whole", "atsg"], help=argparse.SUPPRESS)
    p.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--image", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.measure:
        result = measure(args.measure, args.model, args.image, args.out, args.batch, args.device)
        print(json.dumps(result))
        return result
    if args.quick:
        args.sides, args.whole_max = [256, 512], 512
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="atsg-bench-map-"))
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        model = workdir / "model.pt"
        make_model(model)
        sizes = [run_size(side, workdir, model, side <= args.whole_max, args.batch, args.device) for side in args.sides]
    finally:
        if args.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"Mapping RGB GeoTIFFs with the demo's segmentation network ({TILE} px tiles, overlap {OVERLAP}), "
        f"device {args.device}; megapixels of input per second, peak memory growth"
    )
    for s in sizes:
        whole = s.get("whole")
        print(
            f"{s['side']:>6} px: atsg {s['atsg']['mp_per_s']:.2f} MP/s, +{s['atsg']['peak_mb']:.0f} MB "
            f"(peak RSS {s['atsg']['peak_rss_mb']:.0f} MB)"
            + (
                f"; whole raster {whole['mp_per_s']:.2f} MP/s, +{whole['peak_mb']:.0f} MB (peak RSS "
                f"{whole['peak_rss_mb']:.0f} MB); agreement "
                f"{s['agreement']:.5f}"
                if whole
                else ""
            )
        )
    result = {
        "device": args.device,
        "tile": TILE,
        "overlap": OVERLAP,
        "sizes": sizes,
        "atsg_peak_mb": [s["atsg"]["peak_mb"] for s in sizes],
        "atsg_peak_rss_mb": [s["atsg"]["peak_rss_mb"] for s in sizes],
        "whole_peak_mb": [s["whole"]["peak_mb"] for s in sizes if "whole" in s],
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
