"""CAM extraction: the published per-tile loop against atsg's extract_cams stage, same tiles and classifier.

The published loop (re-implemented from METHOD.md and the published inference
script): one tile at a time; for each scale the tile and its flip go through the
classifier, each CAM is upsampled to the full tile size, merged with its flip by
max and summed over scales, min-max normalised per class, and saved as one
float32 .npy per tile. atsg's stage (`atsg extract_cams`) reads tiles.zarr in
batches of `cams.batch_size`, resizes each scale's CAMs straight to the stored
size (tile / `cams.output_stride`) and writes float16 chunks of cams.zarr; its
forward passes are timed inside the stage, so the stage's seconds over them is
its overhead.

The two ways resize in different orders (the published one to the tile size,
atsg's through the scale's own size to the stored size), so their CAMs are
compared at the tile size with atsg's stage math (`output_stride` 1) and the
difference is printed.

The classifier is randomly initialised (seeded): DeiT-B/16 as published, or the
demo's small ViT with --quick.

    python benchmarks/cams.py             # DeiT-B/16, 16 tiles of 256 px
    python benchmarks/cams.py --quick     # the tests' tiny ViT, 4 tiles of 64 px
    python benchmarks/cams.py --device cuda --tiles 256 --batch 32   # on a GPU
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
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from atsg.cam import multiscale_cams  # noqa: E402
from atsg.config import validate_config  # noqa: E402
from atsg.factory import classifier as build_classifier  # noqa: E402
from atsg.integrity import seal  # noqa: E402
from atsg.shards import Step, run_sharded  # noqa: E402
from atsg.stages.common import save_model_file  # noqa: E402
from atsg.stages.extract_cams import ExtractCams  # noqa: E402
from atsg.store import base_attrs, create_tile_store  # noqa: E402

CLASSES = ["clutter", "impervious", "building", "low_vegetation", "tree", "car"]
DEIT_B = {"backbone": "deit_base_patch16_224", "pretrained": False, "random_init": True}
TINY_VIT = {
    "backbone": "vit_tiny_patch16_224",
    "pretrained": False,
    "random_init": True,
    "img_size": 64,
    "patch_size": 16,
    "embed_dim": 32,
    "depth": 3,
    "num_heads": 2,
    "aux_layer": -2,
}


@torch.no_grad()
def published_cams(model, image: torch.Tensor, scales, flip: bool) -> torch.Tensor:
    """The published per-tile multi-scale loop: (1, K, H, W) CAM of one (1, bands, H, W) tile."""
    h, w = image.shape[-2:]
    cams = []
    for s in scales:
        x = F.interpolate(image.float(), size=(int(h * s), int(w * s)), mode="bilinear", align_corners=False)
        if flip:
            x = torch.cat([x, x.flip(-1)], 0)
        cam, _, _ = model.cams(x)
        cam = F.interpolate(cam, size=(h, w), mode="bilinear", align_corners=False)
        if flip:
            cam = torch.max(cam[:1], cam[1:].flip(-1))
        cams.append(F.relu(cam))
    cam = torch.sum(torch.stack(cams, 0), 0)
    cam = cam + F.adaptive_max_pool2d(-cam, (1, 1))
    return cam / (F.adaptive_max_pool2d(cam, (1, 1)) + 1e-5)


def setup(workdir: Path, model_cfg: dict, tile: int, n: int, batch: int, device: str = "cpu"):
    torch.manual_seed(0)
    cfg = validate_config({"classifier": model_cfg, "cams": {"batch_size": batch, "device": device}})
    model = build_classifier(cfg["classifier"], 3, len(CLASSES) - 1).eval()
    path = workdir / "classifier.pt"
    save_model_file(
        path,
        model.state_dict(),
        "classifier",
        cfg["classifier"],
        {},
        classes=CLASSES,
        in_chans=3,
        n_targets=len(CLASSES) - 1,
    )
    model = model.to(device)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (n, 3, tile // 8, tile // 8), dtype=np.uint8).repeat(8, -1).repeat(8, -2)
    g = create_tile_store(workdir / "tiles.zarr", n, 3, tile, len(CLASSES) - 1, 3)
    g["images"][:] = images
    g.attrs.update({**base_attrs("tiles", {}), "classes": CLASSES, "background": True, "target_classes": CLASSES[1:]})
    g["labels"][:] = 255
    g["valid"][:] = 1
    seal(workdir / "tiles.zarr")
    return cfg, model, path, images


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiles", type=int, default=16)
    p.add_argument("--tile", type=int, default=256)
    p.add_argument("--batch", type=int, default=8, help="cams.batch_size of the atsg stage")
    p.add_argument("--quick", action="store_true", help="tiny ViT, 4 tiles of 64 px")
    p.add_argument("--device", default="cpu", help="torch device of both ways, e.g. cuda (default cpu)")
    args = p.parse_args(argv)
    model_cfg = DEIT_B
    if args.quick:
        args.tiles, args.tile, args.batch, model_cfg = 4, 64, 2, TINY_VIT
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        cfg, model, classifier, images = setup(work, model_cfg, args.tile, args.tiles, args.batch, args.device)
        c = cfg["cams"]

        start = time.perf_counter()
        for i, image in enumerate(images):
            cam = published_cams(model, torch.from_numpy(image)[None].to(args.device), c["scales"], c["flip"])
            np.save(work / f"cam_{i}.npy", cam[0].cpu().numpy())  # .cpu() waits for the device
        published = time.perf_counter() - start

        summary = run_sharded(ExtractCams(cfg, work / "tiles.zarr", classifier, work / "cams.zarr", timed=True), Step())

        with torch.no_grad():
            batch = torch.from_numpy(images[:2]).to(args.device)
            ours, _ = multiscale_cams(model, batch, c["scales"], c["flip"], (args.tile, args.tile))
            theirs = torch.cat([published_cams(model, batch[i : i + 1], c["scales"], c["flip"]) for i in range(2)])
        diff = (ours - theirs).abs()
    result = {
        "stage": "cams",
        "backbone": model_cfg["backbone"],
        "device": args.device,
        "tiles": args.tiles,
        "tile": args.tile,
        "batch": args.batch,
        "published_s": published,
        "atsg_s": summary["seconds"],
        "model_s": summary["model_seconds"],
        "speedup": published / summary["seconds"],
        "overhead": summary["seconds"] / summary["model_seconds"],
        "max_abs_difference": float(diff.max()),
        "mean_abs_difference": float(diff.mean()),
    }
    print(
        f"CAM extraction, {model_cfg['backbone']} (random, seeded), {args.tiles} tiles of {args.tile} px, "
        f"scales {c['scales']}, flip {c['flip']}"
    )
    print(
        f"  published loop {published:.2f} s; atsg stage {summary['seconds']:.2f} s (batch {args.batch}): "
        f"{result['speedup']:.2f}x faster"
    )
    print(f"  atsg stage = {result['overhead']:.3f}x its forward passes ({summary['model_seconds']:.2f} s)")
    print(
        f"  CAMs at tile size differ by at most {result['max_abs_difference']:.3f} "
        f"(mean {result['mean_abs_difference']:.4f}) on [0, 1]"
    )
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
