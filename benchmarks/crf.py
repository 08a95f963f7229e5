"""The published inference's dense CRF: pydensecrf tile by tile against atsg's batched lattice, same inputs.

The published inference (zhangyifan25/ATSG, ``tools/infer_seg_*.py`` with ``utils/dcrf.DenseCRF``) runs
pydensecrf (Krähenbühl and Koltun's C++ permutohedral lattice) on one tile at a time, on one thread, with
the settings of ``predict.crf``. atsg's ``atsg.crf.dense_crf`` runs the same filter in PyTorch on a batch of
tiles (``predict.batch_size`` of them), on every thread torch is given, on CPU or CUDA.

Inputs: tiles of a synthetic aerial scene (the demo's generator), with softmax probabilities made from its
labels by blurred noise (so the CRF has edges to snap to and noise to clean), written once and read by both
ways. pydensecrf is not a dependency of atsg: the published way runs in the interpreter given by
``--published-python``, which must have it (``python -m venv /tmp/crfenv && /tmp/crfenv/bin/pip install
numpy pydensecrf2``). Without it only atsg is timed, and the agreement is checked against the pydensecrf
fixture that tests/test_crf.py uses. Each way runs in its own fresh process.

    python benchmarks/crf.py --published-python /tmp/crfenv/bin/python          # 64 tiles of 256 px
    python benchmarks/crf.py --published-python /tmp/crfenv/bin/python --device cuda
    python benchmarks/crf.py --quick   # 8 tiles of 64 px
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
# utils/dcrf.DenseCRF(iter_max=10, pos_w=1, pos_xy_std=1, bi_w=4, bi_xy_std=121, bi_rgb_std=5): the schema's
# defaults of predict.crf, restated here because the published way runs without atsg (atsg_settings checks)
PUBLISHED = {"iterations": 10, "gaussian": {"sxy": 1, "compat": 1}, "bilateral": {"sxy": 121, "srgb": 5, "compat": 4}}


def make_inputs(path: Path, tiles: int, size: int, seed: int = 0) -> None:
    """``tiles`` RGB tiles of ``size`` px cut from synthetic scenes, and their probabilities (float32)."""
    sys.path.insert(0, str(HERE.parent))
    import torch
    import torch.nn.functional as F

    from atsg.config import validate_config
    from atsg.data.synthetic.scene import generate_scene, to_class_indices

    rng = np.random.default_rng(seed)
    cfg = validate_config({})
    weights, classes = cfg["synthetic"]["block_weights"], cfg["dataset"]["classes"]
    per_side = 4
    images, labels = [], []
    while len(images) < tiles:
        image, semantic = generate_scene(size * per_side, rng, weights)
        cls = to_class_indices(semantic, classes)
        for i in range(per_side * per_side):
            y, x = divmod(i, per_side)
            window = np.s_[y * size : (y + 1) * size, x * size : (x + 1) * size]
            images.append(image[window].transpose(2, 0, 1))
            labels.append(cls[window])
    images, labels = np.stack(images[:tiles]).astype(np.uint8), np.stack(labels[:tiles]).astype(np.int64)
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(tiles, len(classes), size // 8, size // 8, generator=g)
    noise = F.interpolate(coarse, size=size, mode="bilinear")
    logits = 2.0 * F.one_hot(torch.from_numpy(labels), len(classes)).permute(0, 3, 1, 2) + 2 * noise
    np.savez(path, images=images, probs=logits.float().softmax(1).numpy().astype(np.float32))


def published(images: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """The published call, tile by tile (utils/dcrf.DenseCRF)."""
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_softmax

    out = np.empty_like(probs)
    g, bil = PUBLISHED["gaussian"], PUBLISHED["bilateral"]
    for k, (image, p) in enumerate(zip(images, probs)):
        c, h, w = p.shape
        d = dcrf.DenseCRF2D(w, h, c)
        d.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(p)))
        d.addPairwiseGaussian(sxy=g["sxy"], compat=g["compat"])
        rgb = np.ascontiguousarray(image.transpose(1, 2, 0))
        d.addPairwiseBilateral(sxy=bil["sxy"], srgb=bil["srgb"], rgbim=rgb, compat=bil["compat"])
        out[k] = np.array(d.inference(PUBLISHED["iterations"]), np.float32).reshape(c, h, w)
    return out


def atsg_settings() -> dict:
    """atsg's predict.crf, its schema defaults: they must be the published settings restated above."""
    from atsg.config import validate_config

    crf = validate_config({})["predict"]["crf"]
    if {key: crf[key] for key in PUBLISHED} != PUBLISHED:
        raise SystemExit(f"predict.crf's defaults {crf} are not the published settings {PUBLISHED}")
    return crf


def atsg_way(images: np.ndarray, probs: np.ndarray, batch: int, device: str) -> np.ndarray:
    import torch

    from atsg.crf import dense_crf

    settings = atsg_settings()
    out = []
    for s in range(0, len(images), batch):
        x = torch.from_numpy(images[s : s + batch]).to(device)
        p = torch.from_numpy(probs[s : s + batch]).to(device)
        out.append(dense_crf(x, p, settings).cpu().numpy())
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return np.concatenate(out)


def measure(way: str, inputs: Path, out: Path, batch: int, device: str, repeats: int) -> dict:
    data = np.load(inputs)
    images, probs = data["images"], data["probs"]
    if way == "atsg":
        sys.path.insert(0, str(HERE.parent))
        import torch

        atsg_way(images[:batch], probs[:batch], batch, device)  # warm-up (allocator, CUDA context)
        threads = torch.get_num_threads()
    else:
        threads = 1
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        q = published(images, probs) if way == "published" else atsg_way(images, probs, batch, device)
        times.append(time.perf_counter() - start)
    np.save(out, q)
    return {"way": way, "seconds": min(times), "s_per_tile": min(times) / len(images), "threads": threads}


def fixture_agreement() -> float:
    """Largest difference of atsg's marginals from pydensecrf's on the committed fixture (the published call)."""
    sys.path.insert(0, str(HERE.parent))
    import torch

    from atsg.crf import dense_crf

    ref = np.load(HERE.parent / "tests" / "fixtures" / "densecrf" / "densecrf.npz")
    q = dense_crf(torch.from_numpy(ref["rgb_images"]), torch.from_numpy(ref["rgb_probs"]), atsg_settings()).numpy()
    return float(np.abs(q - ref["rgb_q"]).max())


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiles", type=int, default=64)
    p.add_argument("--size", type=int, default=256, help="tile edge in pixels (Potsdam's 256 by default)")
    p.add_argument("--batch", type=int, default=8, help="tiles per atsg call (predict.batch_size)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--published-python", help="an interpreter with pydensecrf (without it: atsg alone)")
    p.add_argument("--quick", action="store_true", help="8 tiles of 64 px, one repeat")
    p.add_argument("--measure", choices=["published", "atsg"], help=argparse.SUPPRESS)
    p.add_argument("--inputs", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.tiles, args.size, args.repeats = 8, 64, 1
    if args.measure:
        result = measure(args.measure, args.inputs, args.out, args.batch, args.device, args.repeats)
        print(json.dumps(result))
        return result
    with tempfile.TemporaryDirectory() as tmp:
        inputs = Path(tmp) / "inputs.npz"
        make_inputs(inputs, args.tiles, args.size)
        ways = {"atsg": sys.executable}
        if args.published_python:
            ways["published"] = args.published_python
        rows, marginals = {}, {}
        for way, python in ways.items():
            out = Path(tmp) / f"{way}.npy"
            cmd = [python, __file__, "--measure", way, "--inputs", str(inputs), "--out", str(out)]
            cmd += ["--batch", str(args.batch), "--device", args.device, "--repeats", str(args.repeats)]
            rows[way] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
            marginals[way] = np.load(out)
    result = {
        "stage": "dense CRF",
        "tiles": args.tiles,
        "size": args.size,
        "batch": args.batch,
        "device": args.device,
        "atsg": rows["atsg"],
        "published": rows.get("published"),
        "fixture_max_abs_difference": fixture_agreement(),
    }
    print(f"dense CRF, {args.tiles} tiles of {args.size} px, {PUBLISHED['iterations']} iterations, {args.device}")
    for way, r in rows.items():
        print(f"  {way:<9} {r['seconds']:8.3f} s  {r['s_per_tile'] * 1e3:8.1f} ms/tile  ({r['threads']} threads)")
    if "published" in rows:
        diff = np.abs(marginals["atsg"] - marginals["published"])
        same = (marginals["atsg"].argmax(1) == marginals["published"].argmax(1)).mean()
        result.update(
            speedup=rows["published"]["seconds"] / rows["atsg"]["seconds"],
            max_abs_difference=float(diff.max()),
            mean_abs_difference=float(diff.mean()),
            same_label=float(same),
        )
        print(
            f"  atsg is {result['speedup']:.2f}x the published speed; marginals differ by at most "
            f"{diff.max():.1e} (mean {diff.mean():.1e}); {same:.5f} of the pixels get the same label"
        )
    print(f"  pydensecrf fixture: max abs difference {result['fixture_max_abs_difference']:.1e}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
