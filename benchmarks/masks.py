"""Mask stage: the published way against atsg's, on the same tiles and the same seeded SAM.

Three measurements:

- **maps**: object and boundary maps from overlapping masks (150 per tile by
  default): the published per-mask loop (`per_mask_maps`: an area sum and a
  `find_boundaries` per mask) against `object_and_boundary_maps`; the two maps
  must be equal.
- **stage**: the published stage (one `SamAutomaticMaskGenerator.generate` per
  tile, then the per-mask loop) against atsg's `generate_masks` stage on a
  tiles.zarr (reading tiles, SAM, maps, writing masks.zarr), whose SAM module
  calls are timed: the stage's seconds over its SAM seconds is its overhead. The
  maps of both must be equal.
- **scene**: tiles per second of atsg's per-tile mode (each tile resized to
  SAM's input, the published way) against `masks.scene_windows` (SAM once per
  native-resolution window of whole tiles). The masks differ by design (SAM sees
  another scale), so the mean object count per tile of each is printed.

SAM is randomly initialised (seeded): no weights can be downloaded here. A
random SAM's predicted IoUs are all far below the published 0.96, so the
benchmark sets `pred_iou_thresh` to the quantile of the random model's own
predictions that lets `--keep` of the candidates through (default 20%, more
than a trained SAM keeps at 0.96) and turns the stability filter off; the
other settings are METHOD.md's (32 points per side, box NMS 0.5).

    python benchmarks/masks.py              # SAM vit_b, 256 px tiles (1024 px SAM input)
    python benchmarks/masks.py --quick      # vit_tiny, 64 px tiles (what the tests run)
    python benchmarks/masks.py --model vit_h --device cuda --precision bf16 --peak-tflops 989   # on a GPU

It also times the batched image encoder alone and counts its FLOPs
(`torch.utils.flop_counter`), so on a GPU it gives the encoder's TFLOP/s and,
with `--peak-tflops`, its share of the device's peak.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from atsg.config import validate_config  # noqa: E402
from atsg.data.synthetic.scene import generate_scene  # noqa: E402
from atsg.integrity import seal  # noqa: E402
from atsg.masks.generate import _rgb  # noqa: E402
from atsg.masks.maps import object_and_boundary_maps  # noqa: E402
from atsg.models.sam import build_sam_model, image_size  # noqa: E402
from atsg.shards import Step, run_sharded  # noqa: E402
from atsg.stages.generate_masks import GenerateMasks  # noqa: E402
from atsg.store import base_attrs, create_tile_store, open_store  # noqa: E402
from atsg.timing import ModelClock  # noqa: E402
from tests.oracles import per_mask_maps  # noqa: E402


def overlapping_masks(n: int, size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """SAM-like masks: ellipses and boxes from a few pixels to half the tile, overlapping."""
    yy, xx = np.mgrid[:size, :size]
    masks = []
    for k in range(n):
        cy, cx = rng.integers(0, size, 2)
        ry, rx = np.exp(rng.uniform(np.log(3), np.log(size / 2), 2))
        if k % 2:
            masks.append(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1)
        else:
            masks.append((np.abs(yy - cy) <= ry) & (np.abs(xx - cx) <= rx))
    return masks


def bench_maps(tiles: int, size: int, n_masks: int, repeats: int) -> dict:
    rng = np.random.default_rng(0)
    sets = [overlapping_masks(n_masks, size, rng) for _ in range(tiles)]
    m = validate_config({})["masks"]
    equal = all(
        all(
            np.array_equal(a, b)
            for a, b in zip(
                per_mask_maps(s, (size, size), m["min_area"], m["max_objects"]),
                object_and_boundary_maps(s, (size, size), m["min_area"], m["max_objects"]),
            )
        )
        for s in sets
    )
    times = {}
    for way, fn in (("published", per_mask_maps), ("atsg", object_and_boundary_maps)):
        best = []
        for _ in range(repeats):
            start = time.perf_counter()
            for s in sets:
                fn(s, (size, size), m["min_area"], m["max_objects"])
            best.append(time.perf_counter() - start)
        times[way] = min(best) / tiles
    return {
        "tiles": tiles,
        "size": size,
        "masks_per_tile": n_masks,
        "published_s_per_tile": times["published"],
        "atsg_s_per_tile": times["atsg"],
        "speedup": times["published"] / times["atsg"],
        "equal": equal,
    }


def scene_tiles(scene_px: int, tile: int, seed: int = 0) -> np.ndarray:
    """(n, 3, tile, tile) uint8 tiles of one synthetic aerial scene, row by row."""
    cfg = validate_config({})["synthetic"]
    image, _ = generate_scene(scene_px, np.random.default_rng(seed), cfg["block_weights"])
    image = np.moveaxis(image, -1, 0)
    return np.stack(
        [image[:, r : r + tile, c : c + tile] for r in range(0, scene_px, tile) for c in range(0, scene_px, tile)]
    )


def write_tiles(path: Path, images: np.ndarray, scene_px: int) -> Path:
    n, bands, tile = images.shape[0], images.shape[1], images.shape[-1]
    g = create_tile_store(path, n, bands, tile, 5, 1)
    g["images"][:] = images
    per_row = scene_px // tile
    g.attrs.update(
        {
            **base_attrs("tiles", {}),
            "classes": list("abcdef"),
            "background": True,
            "target_classes": list("bcdef"),
            "tiles": {
                "scene": ["s"] * n,
                "window": [[tile * (i // per_row), tile * (i % per_row), tile, tile] for i in range(n)],
            },
        }
    )
    g["labels"][:] = 255
    g["valid"][:] = 1
    seal(path)
    return path


def iou_threshold(sam, m: dict, image: np.ndarray, keep: float) -> float:
    """The predicted-IoU threshold that lets ``keep`` of one tile's candidate masks through."""
    from atsg.masks.sam_auto import GridMaskGenerator

    gen = GridMaskGenerator(sam, m)
    features, input_size = gen.embed([image])
    with torch.no_grad():
        iou = torch.cat([iou for _, iou in gen.candidates(features, input_size, image.shape[:2])])
    return float(torch.quantile(iou.flatten(), 1 - keep))


def run_stage(cfg: dict, tiles: Path, out: Path) -> dict:
    stage = GenerateMasks(cfg, tiles, out, timed=True)
    return run_sharded(stage, Step())


def bench_encoder(sam, m: dict, image: np.ndarray, batch: int, repeats: int) -> dict:
    """Seconds per image of the batched image encoder alone (``masks.encoder_precision``), its FLOPs, and the
    TFLOP/s it reaches: what share of a device's peak the encoder uses."""
    from torch.utils.flop_counter import FlopCounterMode

    from atsg.masks.sam_auto import GridMaskGenerator

    gen = GridMaskGenerator(sam, m)
    images = [image] * batch
    with torch.no_grad():
        with FlopCounterMode(display=False) as counter:
            gen.embed(images[:1])
        if gen.device.type == "cuda":
            gen.embed(images)  # warm-up (CUDA kernels, autotuning)
        clock, best = ModelClock(gen.device), float("inf")
        for _ in range(repeats):
            before = clock.seconds
            clock(gen.embed, images)
            best = min(best, clock.seconds - before)
    flops = counter.get_total_flops()
    return {
        "batch": batch,
        "precision": m["encoder_precision"],
        "s_per_image": best / batch,
        "gflops_per_image": flops / 1e9,
        "tflops": flops * batch / best / 1e12,
    }


def bench_stage(
    model: str, tile: int, n_tiles: int, keep: float, workdir: Path, device: str = "cpu", precision: str = "fp32"
) -> dict:
    from segment_anything import SamAutomaticMaskGenerator

    scene_px = image_size(model)
    images = scene_tiles(scene_px, tile)
    tiles = write_tiles(workdir / "tiles.zarr", images, scene_px)
    torch.manual_seed(0)
    sam = build_sam_model(model).eval()
    checkpoint = workdir / f"sam_{model}.pth"
    torch.save(sam.state_dict(), checkpoint)
    sam = sam.to(device)
    m = validate_config(
        {
            "masks": {
                "generator": "sam",
                "sam_model_type": model,
                "sam_checkpoint": str(checkpoint),
                "stability_score_thresh": 0.0,
                "device": device,
                "encoder_precision": precision,
            }
        }
    )["masks"]
    m["pred_iou_thresh"] = iou_threshold(sam, m, _rgb(images[0]), keep)
    cfg = validate_config({"masks": m})

    # the published way: one official generator call per tile, then the per-mask loop
    official = SamAutomaticMaskGenerator(
        sam,
        points_per_side=m["points_per_side"],
        points_per_batch=m["points_per_batch"],
        pred_iou_thresh=m["pred_iou_thresh"],
        stability_score_thresh=m["stability_score_thresh"],
        box_nms_thresh=m["box_nms_thresh"],
        crop_n_layers=0,
        output_mode="binary_mask",
    )
    start = time.perf_counter()
    published, counts = [], []
    for image in images[:n_tiles]:
        masks = [r["segmentation"] for r in official.generate(_rgb(image))]
        counts.append(len(masks))
        published.append(per_mask_maps(masks, (tile, tile), m["min_area"], m["max_objects"]))
    published_s = time.perf_counter() - start

    # atsg's stage on the same tiles (the first n_tiles of the store: a shard of the stage's units)
    one = write_tiles(workdir / "first.zarr", images[:n_tiles], scene_px)
    summary = run_stage(cfg, one, workdir / "masks.zarr")
    store = open_store(workdir / "masks.zarr", "masks")
    equal = all(
        np.array_equal(store["objects"][i], o) and np.array_equal(store["boundaries"][i], b)
        for i, (o, b) in enumerate(published)
    )

    # scene windows: every tile of the scene, SAM once per window
    scene = run_stage(validate_config({"masks": {**m, "scene_windows": True}}), tiles, workdir / "scene.zarr")
    encoder = bench_encoder(sam, m, _rgb(images[0]), m["batch_size"], repeats=3 if device != "cpu" else 1)
    per_tile_rate = summary["tiles"] / summary["seconds"]
    scene_rate = scene["tiles"] / scene["seconds"]
    return {
        "model": model,
        "tile": tile,
        "tiles": n_tiles,
        "pred_iou_thresh": m["pred_iou_thresh"],
        "keep": keep,
        "device": device,
        "precision": precision,
        "encoder": encoder,
        "published_s_per_tile": published_s / n_tiles,
        "atsg_s_per_tile": summary["seconds"] / n_tiles,
        "speedup": published_s / summary["seconds"],
        "sam_model_s": summary["sam_model_seconds"],
        "stage_s": summary["seconds"],
        "overhead": summary["seconds"] / summary["sam_model_seconds"],
        "masks_per_tile": float(np.mean(counts)),
        "equal": equal,
        "scene": {
            "tiles": scene["tiles"],
            "seconds": scene["seconds"],
            "tiles_per_s": scene_rate,
            "per_tile_tiles_per_s": per_tile_rate,
            "ratio": scene_rate / per_tile_rate,
            "mean_objects": scene["mean_objects"],
            "per_tile_mean_objects": summary["mean_objects"],
        },
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="vit_b", help="SAM architecture (vit_b default; vit_h is 4x slower on CPU)")
    p.add_argument("--tile", type=int, default=256, help="tile edge in pixels")
    p.add_argument("--tiles", type=int, default=3, help="tiles the published and atsg stages each process")
    p.add_argument("--masks", type=int, default=150, help="masks per tile for the maps measurement")
    p.add_argument("--keep", type=float, default=0.2, help="share of candidate masks passing the IoU filter")
    p.add_argument("--quick", action="store_true", help="vit_tiny, 64 px tiles: seconds")
    p.add_argument("--maps-only", action="store_true", help="only the maps measurement (seconds, no SAM)")
    p.add_argument("--device", default="cpu", help="torch device of SAM for both ways, e.g. cuda (default cpu)")
    p.add_argument(
        "--precision",
        choices=["fp32", "bf16", "fp16"],
        default="fp32",
        help="atsg's masks.encoder_precision (the published way is fp32; other than fp32, the maps "
        "may differ slightly)",
    )
    p.add_argument(
        "--peak-tflops",
        type=float,
        help="the device's peak TFLOP/s at --precision (e.g. about 990 for an H100 SXM in bf16): "
        "prints the encoder's share of it",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.model, args.tile, args.tiles = "vit_tiny", 64, 2
    torch.manual_seed(0)
    maps = bench_maps(tiles=4 if args.quick else 20, size=args.tile, n_masks=args.masks, repeats=1 if args.quick else 3)
    print(
        f"object/boundary maps, {maps['masks_per_tile']} masks per {maps['size']} px tile: published "
        f"{maps['published_s_per_tile'] * 1e3:.1f} ms, atsg {maps['atsg_s_per_tile'] * 1e3:.2f} ms per tile, "
        f"{maps['speedup']:.1f}x; equal maps: {maps['equal']}"
    )
    if args.maps_only:
        print(json.dumps({"stage": "masks", "maps": maps}))
        return {"stage": "masks", "maps": maps}
    with tempfile.TemporaryDirectory() as tmp:
        stage = bench_stage(args.model, args.tile, args.tiles, args.keep, Path(tmp), args.device, args.precision)
    if args.peak_tflops:
        stage["encoder"]["peak_share"] = stage["encoder"]["tflops"] / args.peak_tflops
    result = {"stage": "masks", "maps": maps, "sam": stage}
    s = stage["scene"]
    print(
        f"mask stage, SAM {stage['model']} (random, seeded), {stage['tiles']} tiles of {stage['tile']} px, "
        f"{stage['masks_per_tile']:.1f} masks per tile: published {stage['published_s_per_tile']:.2f} s, "
        f"atsg {stage['atsg_s_per_tile']:.2f} s per tile, {stage['speedup']:.2f}x; equal maps: {stage['equal']}"
    )
    print(
        f"  atsg stage {stage['stage_s']:.2f} s = {stage['overhead']:.3f}x its SAM module calls "
        f"({stage['sam_model_s']:.2f} s)"
    )
    e = stage["encoder"]
    share = f", {e['peak_share']:.1%} of the given peak" if "peak_share" in e else ""
    print(
        f"  image encoder ({stage['device']}, {e['precision']}, batch {e['batch']}): {e['s_per_image']:.3f} s "
        f"per {image_size(stage['model'])} px image, {e['gflops_per_image']:.2f} GFLOP each, "
        f"{e['tflops']:.3f} TFLOP/s{share}"
    )
    print(
        f"scene windows: {s['tiles_per_s']:.3f} tiles/s against {s['per_tile_tiles_per_s']:.3f} per tile, "
        f"{s['ratio']:.1f}x; objects per tile {s['mean_objects']:.1f} (per tile: {s['per_tile_mean_objects']:.1f})"
    )
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
