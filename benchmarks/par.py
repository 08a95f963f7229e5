"""PAR (pixel-adaptive refinement): the published way against atsg's, same images and CAMs.

The published way (re-implemented from METHOD.md and the description of the
published code) gathers neighbours with one dilated convolution per dilation,
repeats the centre image and the position grid to the neighbour count, and
builds the full (B, K, 8D, H, W) neighbour tensor of the maps at every
iteration. atsg's `atsg.refine.par.PAR` takes neighbours as strided views of one
padded tensor, broadcasts instead of repeating, and accumulates the propagation
neighbour by neighbour.

Each way runs in its own fresh process, so its peak memory (ru_maxrss above the
process's resident size once the inputs exist) is its own. Both are checked to
agree on the same inputs first.

    python benchmarks/par.py                # 512 px, the published setting
    python benchmarks/par.py --quick        # 64 px, seconds (what the tests run)
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

DILATIONS = [1, 2, 4, 8, 12, 24]  # METHOD.md
ITERATIONS = 10


class PublishedPAR(nn.Module):
    """PAR as the published code builds it: convolutions for neighbours, repeated tensors."""

    def __init__(self, dilations, num_iter, w1=0.3, w2=0.01):
        super().__init__()
        self.dilations, self.num_iter, self.w1, self.w2 = dilations, num_iter, w1, w2
        kernel = torch.zeros(8, 1, 3, 3)
        for k, (y, x) in enumerate(((0, 0), (0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1), (2, 2))):
            kernel[k, 0, y, x] = 1
        self.register_buffer("kernel", kernel)
        ring = torch.ones(1, 1, 8, 1, 1)
        ring[0, 0, (0, 2, 5, 7)] = math.sqrt(2)
        self.register_buffer("pos", torch.cat([ring * d for d in dilations], 2))

    def neighbours(self, x):
        b, c, h, w = x.shape
        out = []
        for d in self.dilations:
            padded = F.pad(x, [d] * 4, mode="replicate").reshape(b * c, 1, h + 2 * d, w + 2 * d)
            out.append(F.conv2d(padded, self.kernel, dilation=d).view(b, c, -1, h, w))
        return torch.cat(out, 2)

    def forward(self, imgs, masks):
        masks = F.interpolate(masks, size=imgs.shape[-2:], mode="bilinear", align_corners=True)
        b, _, h, w = imgs.shape
        nb = self.neighbours(imgs)
        imgs_rep = imgs.unsqueeze(2).repeat(1, 1, nb.shape[2], 1, 1)
        pos_rep = self.pos.repeat(b, 1, 1, h, w)
        aff = -((torch.abs(nb - imgs_rep) / (nb.std(2, keepdim=True) + 1e-8) / self.w1) ** 2)
        aff = aff.mean(1, keepdim=True)
        pos_aff = -((pos_rep / (pos_rep.std(2, keepdim=True) + 1e-8) / self.w1) ** 2)
        aff = F.softmax(aff, 2) + self.w2 * F.softmax(pos_aff, 2)
        for _ in range(self.num_iter):
            masks = (self.neighbours(masks) * aff).sum(2)
        return masks


def make(way: str) -> nn.Module:
    if way == "published":
        return PublishedPAR(DILATIONS, ITERATIONS)
    from atsg.refine.par import PAR

    return PAR(DILATIONS, ITERATIONS)


def inputs(size: int, batch: int, classes: int, seed: int = 0):
    """Seeded images with structure (smoothed noise) and CAMs at a quarter of the size, as PAR sees them."""
    g = torch.Generator().manual_seed(seed)
    images = F.avg_pool2d(torch.rand(batch, 3, size + 6, size + 6, generator=g), 7, 1) * 255
    cams = torch.rand(batch, classes, size // 4, size // 4, generator=g)
    return images, cams


def measure(way: str, size: int, batch: int, classes: int, repeats: int) -> dict:
    """Time and peak memory of one way, in this (fresh) process."""
    torch.set_num_threads(max(1, torch.get_num_threads()))
    images, cams = inputs(size, batch, classes)
    model = make(way)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    times = []
    with torch.no_grad():
        for _ in range(repeats):
            start = time.perf_counter()
            model(images, cams)
            times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"way": way, "seconds": min(times), "peak_mb": (peak - base) / 1024}


def agreement(size: int, batch: int, classes: int) -> float:
    """Largest absolute difference of the two ways' outputs on the same inputs."""
    images, cams = inputs(size, batch, classes)
    with torch.no_grad():
        return float((make("published")(images, cams) - make("atsg")(images, cams)).abs().max())


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=512, help="image edge in pixels (default 512)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--classes", type=int, default=6)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="64 px, one repeat")
    p.add_argument("--measure", choices=["published", "atsg"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.size, args.repeats = 64, 1
    if args.measure:
        result = measure(args.measure, args.size, args.batch, args.classes, args.repeats)
        print(json.dumps(result))
        return result
    rows = {}
    for way in ("published", "atsg"):
        cmd = [
            sys.executable,
            __file__,
            "--measure",
            way,
            "--size",
            str(args.size),
            "--batch",
            str(args.batch),
            "--classes",
            str(args.classes),
            "--repeats",
            str(args.repeats),
        ]
        rows[way] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    diff = agreement(min(args.size, 128), args.batch, args.classes)
    result = {
        "stage": "PAR",
        "size": args.size,
        "batch": args.batch,
        "classes": args.classes,
        "published": rows["published"],
        "atsg": rows["atsg"],
        "speedup": rows["published"]["seconds"] / rows["atsg"]["seconds"],
        "memory_ratio": rows["published"]["peak_mb"] / max(rows["atsg"]["peak_mb"], 1e-3),
        "max_abs_difference": diff,
    }
    print(
        f"PAR {args.size} px, batch {args.batch}, {args.classes} maps, {len(DILATIONS)} dilations, "
        f"{ITERATIONS} iterations"
    )
    for way in ("published", "atsg"):
        r = rows[way]
        print(f"  {way:<9} {r['seconds']:8.3f} s   peak +{r['peak_mb']:8.1f} MB")
    print(
        f"  atsg is {result['speedup']:.2f}x faster with {result['memory_ratio']:.2f}x less peak memory; "
        f"outputs agree to {diff:.1e}"
    )
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
