"""Fully connected CRF post-processing of class probabilities (Krähenbühl and Koltun 2011).

The published inference (``tools/infer_seg_*.py``, ``utils/dcrf.DenseCRF``) refines the segmentation
model's softmax with pydensecrf: unary -log(max(p, 1e-5)), a Gaussian kernel on position and a bilateral
kernel on position and colour, both Potts and symmetrically normalised, and mean-field iterations. This is
the same inference in PyTorch on the permutohedral lattice (``atsg.lattice``), batched over tiles, for any
band count: colours are the stored bands (0-255 for 8-bit imagery), as in the energy loss. Pixels outside
``valid`` (padding, nodata) send no messages, and their colours do not shape the bilateral lattice.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from .lattice import PermutohedralLattice

UNARY_CLIP = 1e-5  # pydensecrf.utils.unary_from_softmax


def _positions(h: int, w: int, device) -> torch.Tensor:
    """(H W, 2) pixel positions (x, y), row-major, as DenseCRF2D's features."""
    ys, xs = torch.meshgrid(
        torch.arange(h, device=device, dtype=torch.float32),
        torch.arange(w, device=device, dtype=torch.float32),
        indexing="ij",
    )
    return torch.stack([xs, ys], -1).reshape(-1, 2)


def _softmax(x: torch.Tensor) -> torch.Tensor:
    """Softmax over the (few) classes of the last dimension, faster than torch.softmax on such rows."""
    e = (x - x.amax(-1, keepdim=True)).exp_()
    return e.div_(e.sum(-1, keepdim=True))


class _Kernel:
    """A Potts pairwise term: its lattice, symmetric normalisation and weight.

    A lattice of one image's features (B = 1) serves a whole batch: the images' values are filtered side
    by side as channels (the position-only kernel is the same for every tile).
    """

    def __init__(self, features: torch.Tensor, compat: float, valid: torch.Tensor, apart: torch.Tensor | None = None):
        self.lattice = PermutohedralLattice(features, apart)
        self.compat = float(compat)
        # 1 / sqrt(kernel row sums), as pydensecrf; pixels outside ``valid`` get 0 (they neither send nor receive)
        self.norm = torch.where(valid > 0, (self._filter(valid).clamp_min(0) + 1e-20).rsqrt(), 0.0)

    def _filter(self, values: torch.Tensor) -> torch.Tensor:
        if self.lattice.shape[0] == values.shape[0]:
            return self.lattice.filter(values)
        b, n, c = values.shape
        out = self.lattice.filter(values.permute(1, 0, 2).reshape(1, n, b * c))
        return out.reshape(n, b, c).permute(1, 0, 2)

    def message(self, q: torch.Tensor) -> torch.Tensor:
        return self.compat * self.norm * self._filter(q * self.norm)


@torch.no_grad()
def dense_crf(
    images: torch.Tensor, probs: torch.Tensor, settings: Mapping, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean-field dense CRF: (B, bands, H, W) images and (B, C, H, W) probabilities -> (B, C, H, W) marginals.

    ``settings``: ``iterations``, ``gaussian`` {``sxy``, ``compat``} and ``bilateral`` {``sxy``, ``srgb``,
    ``compat``} (config section ``predict.crf``); a compat of 0 leaves that kernel out.
    """
    b, c, h, w = probs.shape
    if images.shape[0] != b or images.shape[-2:] != (h, w):
        raise ValueError(f"images {tuple(images.shape)} do not match probabilities {tuple(probs.shape)}")
    dev = probs.device
    n = h * w
    unary = -probs.float().clamp(UNARY_CLIP, 1.0).log().reshape(b, c, n).transpose(1, 2)  # (B, N, C)
    mask = torch.ones(b, n, 1, device=dev) if valid is None else valid.reshape(b, n, 1).float().to(dev)
    pos = _positions(h, w, dev)[None]
    g, bil = settings["gaussian"], settings["bilateral"]
    kernels = []
    if g["compat"]:
        kernels.append(_Kernel(pos / float(g["sxy"]), g["compat"], mask))
    pos = pos.expand(b, n, 2)
    if bil["compat"]:
        colour = images.float().to(dev).reshape(b, images.shape[1], n).transpose(1, 2) / float(bil["srgb"])
        apart = None if valid is None else mask[..., 0] == 0  # nodata colours do not shape the lattice
        kernels.append(_Kernel(torch.cat([pos / float(bil["sxy"]), colour], -1), bil["compat"], mask, apart))
    q = _softmax(-unary)
    for _ in range(int(settings["iterations"])):
        energy = -unary
        for k in kernels:
            energy = energy + k.message(q)
        q = _softmax(energy)
    return q.transpose(1, 2).reshape(b, c, h, w)
