"""Training data loader: PNG tiles (the published way) against tiles.zarr, same tiles, same samples.

The published dataset opens one PNG image and one PNG label per sample and
decodes them; atsg's `TrainSamples` reads the tile's chunks from tiles.zarr
(images in plain zstd, or ``--codec wavelet``: the lossless wavelet codec). Both then apply the same seeded random
rescale, crop and flip (`atsg.train.datasets.rescale_crop_flip`), so sample i of
both loaders is the same tile with the same augmentation, and the benchmark
checks that the samples are equal. It reports samples per second of the whole
loader, tiles per second of the reads alone (decode only, no augmentation), and
the size of both tile sets: bytes of the files, and blocks on disk including
directories.

The tiles are those of `benchmarks/tiling.py`'s synthetic scene, written by
the `tile` stage (tiles.zarr) and by the published preprocessing (PNG).

    python benchmarks/loader.py            # 256 tiles of 256 px (a 4096 px scene)
    python benchmarks/loader.py --quick    # 16 tiles of 128 px
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from tiling import dataset_config, disk_bytes, make_scene, published  # noqa: E402

from atsg.stages.tile import run_tile  # noqa: E402
from atsg.train.datasets import TrainSamples  # noqa: E402


class PngSamples(TrainSamples):
    """The same samples, read the published way: one PNG image and one PNG label per tile."""

    def __init__(self, png_dir: Path, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.png_dir = png_dir

    def _open(self):
        if self._tiles is None:
            self._tiles = _PngTiles(self.png_dir)


class _PngTiles(dict):
    def __init__(self, png_dir: Path):
        labels = _PngArray(png_dir, "{:05d}_label.png", image=False)
        super().__init__(
            images=_PngArray(png_dir, "{:05d}.png", image=True), labels=labels, valid=_AllValid(labels)
        )  # the published tiles have no nodata mask: every pixel is data


class _AllValid:
    def __init__(self, labels: _PngArray):
        self.labels = labels

    def __getitem__(self, i: int) -> np.ndarray:
        return np.ones(self.labels[i].shape, np.uint8)


class _PngArray:
    def __init__(self, png_dir: Path, pattern: str, image: bool):
        self.png_dir, self.pattern, self.image = png_dir, "scene_" + pattern, image

    def __getitem__(self, i: int) -> np.ndarray:
        from PIL import Image

        with Image.open(self.png_dir / self.pattern.format(i)) as im:
            pixels = np.asarray(im)
        return pixels.transpose(2, 0, 1) if self.image else pixels


def sample_config(tile: int) -> dict:
    """The segmentation section's published sample settings (rescale, crop, flip, photometric augmentation)."""
    from atsg.config import validate_config

    return validate_config({"segmentation": {"seed": 0, "crop_size": tile * 5 // 4}})["segmentation"]


def loaders(workdir: Path, n_tiles: int, tile: int) -> tuple:
    cfg = sample_config(tile)
    indices = np.arange(n_tiles)
    return (
        PngSamples(workdir / "png", workdir / "tiles.zarr", indices, cfg, "truth"),
        TrainSamples(workdir / "tiles.zarr", indices, cfg, "truth"),
    )


def time_reads(dataset, n_tiles: int, repeats: int) -> float:
    """Seconds per tile to read and decode image + label (no augmentation), best of ``repeats`` passes."""
    dataset._open()
    images, labels = dataset._tiles["images"], dataset._tiles["labels"]
    images[0], labels[0]
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(n_tiles):
            images[i], labels[i]
        best = min(best, (time.perf_counter() - start) / n_tiles)
    return best


def time_samples(dataset, n: int, repeats: int) -> float:
    """Seconds per sample of the whole loader item (read, decode, rescale, crop, flip), best of ``repeats``."""
    dataset[0]
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(n):
            dataset[i]
        best = min(best, (time.perf_counter() - start) / n)
    return best


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--side", type=int, default=4096, help="scene edge in px (default 4096)")
    p.add_argument("--tile", type=int, default=256)
    p.add_argument("--samples", type=int, default=512)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="a 512 px scene in 128 px tiles, 32 samples")
    p.add_argument(
        "--codec", choices=["zstd", "wavelet"], default="zstd", help="tiling.image_codec of tiles.zarr (default zstd)"
    )
    p.add_argument("--keep", type=Path, help="work in this folder and keep it")
    args = p.parse_args(argv)
    if args.quick:
        args.side, args.tile, args.samples, args.repeats = 512, 128, 32, 1
    torch.set_num_threads(1)
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="atsg-bench-loader-"))
    try:
        cfg = dataset_config(args.tile)
        cfg["tiling"]["image_codec"] = args.codec
        make_scene(workdir / "scene", args.side, cfg)
        published(workdir / "scene", workdir / "png", cfg)
        run_tile(cfg, workdir / "tiles.zarr", workdir / "scene")
        n_tiles = (args.side // args.tile) ** 2
        png, zarr_samples = loaders(workdir, n_tiles, args.tile)
        equal = all(
            torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"]) and a["tile"] == b["tile"]
            for a, b in ((png[i], zarr_samples[i]) for i in range(min(args.samples, 64)))
        )
        result = {
            "stage": "loader",
            "codec": args.codec,
            "tiles": n_tiles,
            "tile": args.tile,
            "samples": args.samples,
            "equal": equal,
        }
        for name, dataset in (("png", png), ("zarr", zarr_samples)):
            result[name] = {
                "read_s_per_tile": time_reads(dataset, n_tiles, args.repeats),
                "s_per_sample": time_samples(dataset, args.samples, args.repeats),
            }
        result["png"]["disk"] = disk_bytes(workdir / "png", (".png",))
        result["zarr"]["disk"] = {k: disk_bytes(workdir / "tiles.zarr" / k) for k in ("images", "labels")}
        zarr_bytes = sum(v["bytes"] for v in result["zarr"]["disk"].values())
        zarr_blocks = sum(v["on_disk"] for v in result["zarr"]["disk"].values())
        result["read_speedup"] = result["png"]["read_s_per_tile"] / result["zarr"]["read_s_per_tile"]
        result["sample_speedup"] = result["png"]["s_per_sample"] / result["zarr"]["s_per_sample"]
        result["size_ratio"] = zarr_bytes / result["png"]["disk"]["bytes"]
        result["disk_ratio"] = zarr_blocks / result["png"]["disk"]["on_disk"]
    finally:
        if args.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"Loader, {n_tiles} tiles of {args.tile} px, {args.samples} samples, 1 thread, images in {args.codec}")
    for name in ("png", "zarr"):
        r = result[name]
        print(f"  {name:<5} read {r['read_s_per_tile'] * 1e3:6.2f} ms/tile   sample {r['s_per_sample'] * 1e3:6.2f} ms")
    print(
        f"  tiles.zarr reads {result['read_speedup']:.2f}x as fast (whole sample {result['sample_speedup']:.2f}x); "
        f"{result['size_ratio']:.3f}x the PNG bytes, {result['disk_ratio']:.3f}x their blocks on disk; "
        f"samples {'equal' if equal else 'DIFFERENT'}"
    )
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
