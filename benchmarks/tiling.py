"""Tiling: the published way (whole scene in memory, PNG tiles) against atsg's `tile` stage, same scenes.

The published way reads the whole image and label raster, turns the RGB label
into class indices with one comparison per palette colour, cuts the tiles and
writes each as a PNG image plus a PNG label (and the image-level labels as one
.npy), as the published preprocessing does. atsg's `atsg tile` writes
tiles.zarr reading a few tiles at a time (`tiling.tiles_per_read`), with the
lossless wavelet codec for images.

Scenes are square GeoTIFFs (uncompressed, as Potsdam's) mosaicked from one
synthetic aerial scene in the Potsdam palette, at several sizes. Each way runs
in its own fresh process; throughput counts the raster bytes read (image and
label, 3 bytes per pixel each) per second, and peak memory is the growth of the
process's maximum resident size while it runs. Both ways' tiles are checked
equal, pixel for pixel.

    python benchmarks/tiling.py            # scenes of 2048, 4096 and 8192 px, 256 px tiles
    python benchmarks/tiling.py --quick    # 256 and 512 px scenes, 128 px tiles (what the tests run)
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from atsg.config import validate_config  # noqa: E402

SOURCE = 1024  # px of the synthetic scene the mosaics repeat


def dataset_config(tile: int) -> dict:
    return validate_config(
        {
            "dataset": {"images": "*_RGB.tif", "scene_id": "^(?P<scene>.+)_RGB$", "labels": "{scene}_label.tif"},
            "split": {"method": "ratio", "ratios": [1.0, 0.0, 0.0]},
            "tiling": {"size": tile, "stride": tile},
        }
    )


def make_scene(root: Path, side: int, cfg: dict) -> None:
    """A side x side scene (image and RGB label GeoTIFF), written block by block from rotated copies of one
    synthetic scene, so writing it never holds the whole scene either."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    from atsg.data.synthetic.scene import generate_scene, to_class_indices

    source = min(SOURCE, side)
    image, semantic = generate_scene(
        source, np.random.default_rng(0), validate_config({})["synthetic"]["block_weights"]
    )
    palette = np.asarray(cfg["dataset"]["palette"], np.uint8)
    label = palette[to_class_indices(semantic, cfg["dataset"]["classes"])]
    root.mkdir(parents=True, exist_ok=True)
    profile = dict(
        driver="GTiff",
        width=side,
        height=side,
        count=3,
        dtype="uint8",
        crs="EPSG:32633",
        transform=from_origin(366000, 5808000, 0.05, 0.05),
    )
    with (
        rasterio.open(root / "scene_RGB.tif", "w", **profile) as im,
        rasterio.open(root / "scene_label.tif", "w", **profile) as lb,
    ):
        for r in range(0, side, source):
            for c in range(0, side, source):
                k = (r // source + c // source) % 4
                h, w = min(source, side - r), min(source, side - c)
                window = Window(c, r, w, h)
                im.write(np.ascontiguousarray(np.rot90(image, k)[:h, :w].transpose(2, 0, 1)), window=window)
                lb.write(np.ascontiguousarray(np.rot90(label, k)[:h, :w].transpose(2, 0, 1)), window=window)


def _rss_mb(key: str) -> float:
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024
    return float("nan")


def published(root: Path, out: Path, cfg: dict) -> None:
    """The published preprocessing: whole rasters in memory, a per-colour label loop, PNG tiles."""
    import rasterio
    from PIL import Image

    size, palette = cfg["tiling"]["size"], cfg["dataset"]["palette"]
    out.mkdir(parents=True)
    with rasterio.open(root / "scene_RGB.tif") as src:
        image = src.read().transpose(1, 2, 0)
    with rasterio.open(root / "scene_label.tif") as src:
        rgb = src.read().transpose(1, 2, 0)
    label = np.full(rgb.shape[:2], 255, np.uint8)
    for index, colour in enumerate(palette):
        label[np.all(rgb == np.asarray(colour, np.uint8), axis=-1)] = index
    cls_labels = {}
    n = 0
    for r in range(0, image.shape[0], size):
        for c in range(0, image.shape[1], size):
            tile_image = np.zeros((size, size, 3), np.uint8)
            tile_label = np.full((size, size), 255, np.uint8)
            part = image[r : r + size, c : c + size]
            tile_image[: part.shape[0], : part.shape[1]] = part
            tile_label[: part.shape[0], : part.shape[1]] = label[r : r + size, c : c + size]
            name = f"scene_{n:05d}"
            Image.fromarray(tile_image).save(out / f"{name}.png")
            Image.fromarray(tile_label).save(out / f"{name}_label.png")
            present = np.unique(tile_label[tile_label != 255])
            cls_labels[name] = present[present > 0] - 1
            n += 1
    np.save(out / "cls_labels.npy", cls_labels, allow_pickle=True)


def measure(way: str, root: Path, out: Path, tile: int) -> dict:
    cfg = dataset_config(tile)
    if way == "atsg":
        import rasterio  # noqa: F401  (imports counted in the baseline, as for the published way)

        from atsg.stages.tile import run_tile
    else:
        import rasterio  # noqa: F401
        from PIL import Image  # noqa: F401
    base = _rss_mb("VmRSS")
    start = time.perf_counter()
    if way == "atsg":
        run_tile(cfg, out, root)
    else:
        published(root, out, cfg)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak_mb": _rss_mb("VmHWM") - base}


def disk_bytes(path: Path, names=None) -> dict:
    """Bytes of the files (``names``: only files whose name matches one of these suffixes) and their blocks on
    disk, directories included."""
    files = [f for f in path.rglob("*") if f.is_file()]
    if names is not None:
        files = [f for f in files if f.name.endswith(names)]
    dirs = [d for d in path.rglob("*") if d.is_dir()] + [path]
    return {
        "bytes": sum(f.stat().st_size for f in files),
        "on_disk": sum(f.stat().st_blocks * 512 for f in files) + sum(d.stat().st_blocks * 512 for d in dirs),
    }


def check_equal(png_dir: Path, store: Path, sample: int = 64) -> bool:
    import zarr
    from PIL import Image

    g = zarr.open_group(str(store), mode="r")
    n = g["images"].shape[0]
    for i in np.linspace(0, n - 1, min(sample, n)).astype(int):
        image = np.asarray(Image.open(png_dir / f"scene_{i:05d}.png")).transpose(2, 0, 1)
        label = np.asarray(Image.open(png_dir / f"scene_{i:05d}_label.png"))
        if not (np.array_equal(image, g["images"][i]) and np.array_equal(label, g["labels"][i])):
            return False
    return True


def run_size(side: int, tile: int, workdir: Path) -> dict:
    root = workdir / f"scene{side}"
    make_scene(root, side, dataset_config(tile))
    rows = {}
    for way, out in (("published", workdir / f"png{side}"), ("atsg", workdir / f"tiles{side}.zarr")):
        cmd = [sys.executable, __file__, "--measure", way, "--root", str(root), "--out", str(out), "--tile", str(tile)]
        rows[way] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
    raster_mb = side * side * 6 / 1e6
    for r in rows.values():
        r["mb_per_s"] = raster_mb / r["seconds"]
    png, store = workdir / f"png{side}", workdir / f"tiles{side}.zarr"
    result = {
        "side": side,
        "tile": tile,
        "raster_mb": raster_mb,
        **rows,
        "equal": check_equal(png, store),
        "png": disk_bytes(png, (".png",)),
        "zarr": {k: disk_bytes(store / k) for k in ("images", "labels")},
    }
    shutil.rmtree(root)
    return result


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sides", type=int, nargs="+", default=[2048, 4096, 8192], help="scene edges in px")
    p.add_argument("--tile", type=int, default=256)
    p.add_argument("--quick", action="store_true", help="256 and 512 px scenes, 128 px tiles")
    p.add_argument("--keep", type=Path, help="work in this folder and keep it")
    p.add_argument("--measure", choices=["published", "atsg"], help=argparse.SUPPRESS)
    p.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.measure:
        result = measure(args.measure, args.root, args.out, args.tile)
        print(json.dumps(result))
        return result
    if args.quick:
        args.sides, args.tile = [256, 512], 128
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="atsg-bench-tiling-"))
    try:
        sizes = [run_size(side, args.tile, workdir) for side in args.sides]
    finally:
        if args.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"Tiling into {args.tile} px tiles; throughput in MB of raster (image + RGB label) per second")
    for s in sizes:
        for way in ("published", "atsg"):
            r = s[way]
            print(
                f"  {s['side']:>5} px  {way:<9} {r['seconds']:7.2f} s  {r['mb_per_s']:6.1f} MB/s  "
                f"peak +{r['peak_mb']:7.1f} MB"
            )
    last = sizes[-1]
    zarr_bytes = sum(v["bytes"] for v in last["zarr"].values())
    result = {
        "stage": "tiling",
        "tile": args.tile,
        "sizes": sizes,
        "speedup": last["published"]["seconds"] / last["atsg"]["seconds"],
        "atsg_mb_per_s": min(s["atsg"]["mb_per_s"] for s in sizes),
        "atsg_peak_mb": [s["atsg"]["peak_mb"] for s in sizes],
        "published_peak_mb": [s["published"]["peak_mb"] for s in sizes],
        "size_ratio": zarr_bytes / last["png"]["bytes"],
        "equal": all(s["equal"] for s in sizes),
    }
    print(
        f"  atsg: at least {result['atsg_mb_per_s']:.1f} MB/s, {result['speedup']:.1f}x the published way at "
        f"{last['side']} px; peak memory {', '.join(f'{m:.0f}' for m in result['atsg_peak_mb'])} MB against "
        f"{', '.join(f'{m:.0f}' for m in result['published_peak_mb'])} MB; store = {result['size_ratio']:.3f}x "
        f"the PNG tiles' bytes; tiles {'equal' if result['equal'] else 'DIFFERENT'}"
    )
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
