"""Classifier steps on CPU: fp32 (the published precision) against bf16 autocast (`cpu_amp: true`).

One classifier step of the staged pipeline is a training pass (forward, the
multi-label loss of both heads, backward, AdamW update) and, beside it, the
published per-step multi-scale auxiliary CAM under no_grad (`band_cam:
multiscale`: the schema's `cam_scales`, each with its flip), the larger part on a CPU.
Both are timed in full precision and under atsg's autocast of `cpu_amp`
(`atsg.device.autocast`), alternating, on the same seeded crops and weights; the
agreement is that of the two precisions' band CAMs (their largest difference and
the share of pixels whose class, the argmax, is the same).

bf16 is fast only where the CPU multiplies bf16 natively (AVX512-BF16 or AMX);
the result says whether this one does (`native_bf16`).

    python benchmarks/cpu_amp.py            # config/cpu.yaml's ViT (192 wide, 6 blocks, patch 16), 16 crops of 224 px
    python benchmarks/cpu_amp.py --demo     # the demo's ViT (128 wide, 4 blocks, patch 8), 16 crops of 112 px
    python benchmarks/cpu_amp.py --quick    # a tiny ViT, seconds
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from atsg.cam import multiscale_cams  # noqa: E402
from atsg.config import validate_config  # noqa: E402
from atsg.device import autocast, autocast_dtype, cpu_bf16_supported  # noqa: E402
from atsg.factory import classifier as build_classifier  # noqa: E402
from atsg.losses.classification import cam_classification_loss  # noqa: E402

VIT = {"backbone": "vit_tiny_patch16_224", "weights": "random_init", "aux_layer": -2}
SIZES = {
    "cpu": ({"img_size": 224, "patch_size": 16, "embed_dim": 192, "depth": 6, "num_heads": 3}, 224, 16),
    "demo": ({"img_size": 128, "patch_size": 8, "embed_dim": 128, "depth": 4, "num_heads": 4}, 112, 16),
    "quick": ({"img_size": 64, "patch_size": 16, "embed_dim": 32, "depth": 3, "num_heads": 2}, 64, 4),
}
TARGETS = 5


def timed(fn, repeats: int) -> float:
    """Seconds per call of ``fn`` (after one untimed call)."""
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--demo", action="store_true", help="the demo's ViT and crops")
    p.add_argument("--quick", action="store_true", help="a tiny ViT, 4 crops of 64 px")
    p.add_argument("--repeats", type=int, default=6, help="timed steps per precision and round")
    p.add_argument("--rounds", type=int, default=2, help="fp32 and bf16 alternate this many times")
    args = p.parse_args(argv)
    size = "quick" if args.quick else "demo" if args.demo else "cpu"
    if args.quick:
        args.repeats, args.rounds = 2, 1
    arch, crop, batch = SIZES[size]
    device = torch.device("cpu")
    torch.manual_seed(0)
    cfg = validate_config({"classifier": {**VIT, **arch, "cpu_amp": True}})["classifier"]
    model = build_classifier(cfg, 3, TARGETS)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (batch, 3, crop, crop), generator=g, dtype=torch.uint8)
    targets = (torch.rand(batch, TARGETS, generator=g) > 0.5).float()
    precisions = {"fp32": None, "bf16": autocast_dtype(device, cfg)}

    def train_step(dtype):
        def step():
            with autocast(device, dtype):
                out = model(images)
                loss = cam_classification_loss(out["logits"], out["logits_aux"], targets, 1.0)[0]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        return step

    def band_cam(dtype):
        def cam():
            with torch.no_grad(), autocast(device, dtype):
                return multiscale_cams(model, images, cfg["cam_scales"], True, (crop, crop))[1]

        return cam

    times = {name: {"train_s": [], "band_cam_s": []} for name in precisions}
    for _ in range(args.rounds):
        for name, dtype in precisions.items():
            times[name]["train_s"].append(timed(train_step(dtype), args.repeats))
            times[name]["band_cam_s"].append(timed(band_cam(dtype), args.repeats))
    model.eval()
    cams = {name: band_cam(dtype)().float() for name, dtype in precisions.items()}
    result = {
        "size": size,
        "crop": crop,
        "batch": batch,
        "threads": torch.get_num_threads(),
        "native_bf16": cpu_bf16_supported(),
        **{name: {k: round(min(v), 4) for k, v in t.items()} for name, t in times.items()},
        "max_abs_difference": float((cams["fp32"] - cams["bf16"]).abs().max()),
        "same_class": float((cams["fp32"].argmax(1) == cams["bf16"].argmax(1)).float().mean()),
    }
    result["speedup"] = {k: round(result["fp32"][k] / result["bf16"][k], 2) for k in ("train_s", "band_cam_s")}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
