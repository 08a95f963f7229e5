"""Gaussian filtering on the permutohedral lattice (Adams, Baek and Davis 2010), batched in PyTorch.

This is the lattice of Krähenbühl and Koltun's dense CRF (``permutohedral.cpp``, which pydensecrf and the
published inference wrap): the same elevation, rounding, simplex ranks, barycentric weights, neighbour
structure, blur (1/2, 1, 1/2 along each of the d + 1 lattice axes) and slicing constant, so a filter here
equals that code's up to float summation order. Points are features already divided by their standard
deviations; every image of a batch has its own lattice (the image index is part of each vertex's key).
"""

from __future__ import annotations

import math
import warnings

import torch

_MAX_CODE_BITS = 62


def _csr(per_row: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """A sparse CSR matrix from its entries in row order (``per_row`` of them in each row)."""
    crow = torch.cat([per_row.new_zeros(1), per_row.cumsum(0)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # CSR support is "beta" in torch; products with dense matrices are stable
        return torch.sparse_csr_tensor(crow, cols, values.float(), shape, check_invariants=False)


class PermutohedralLattice:
    """The lattice of the points ``features`` (B, N, d): ``filter`` blurs values at them with a unit Gaussian.

    ``apart`` (B, N) bool, optional: points set apart on a lattice of their own (per image), so that they
    neither shape nor join the other points' lattice (nodata pixels, whatever their values).
    """

    def __init__(self, features: torch.Tensor, apart: torch.Tensor | None = None):
        if features.dim() != 3 or features.shape[-1] < 1:
            raise ValueError(f"features must be (batch, points, dims); got {tuple(features.shape)}")
        b, n, d = features.shape
        dev = features.device
        self.shape, self.d = (b, n), d
        f = features.float()
        inv_std = float(torch.tensor(math.sqrt(2.0 / 3.0) * (d + 1), dtype=torch.float32))  # a C float
        scale = torch.tensor([1.0 / math.sqrt((i + 2) * (i + 1)) * inv_std for i in range(d)], dtype=torch.float32)
        cf = f * scale.to(dev)
        # elevate: y_0 = sum_k cf_k, y_j = sum_{k >= j} cf_k - j cf_{j-1}, the sums taken from the last feature
        suffix = cf.flip(-1).cumsum(-1).flip(-1)
        elevated = torch.empty(b, n, d + 1, device=dev)
        elevated[..., 0] = suffix[..., 0]
        tail = torch.cat([suffix[..., 1:], torch.zeros_like(suffix[..., :1])], -1)
        elevated[..., 1:] = tail - torch.arange(1, d + 1, device=dev, dtype=torch.float32) * cf
        # the closest remainder-0 point (round half to even, as SSE rounding), then the simplex's ranks
        down = torch.round(elevated * torch.tensor(1.0 / (d + 1), dtype=torch.float32))
        rem0 = down * (d + 1)
        total = down.sum(-1, keepdim=True)
        diff = elevated - rem0
        rank = torch.zeros_like(elevated)
        for i in range(d):
            for j in range(i + 1, d + 1):
                less = (diff[..., i] < diff[..., j]).float()
                rank[..., i] += less
                rank[..., j] += 1.0 - less
        rank = rank + total
        shift = (rank < 0).float() * (d + 1) - (rank >= d + 1).float() * (d + 1)
        rank, rem0 = rank + shift, rem0 + shift
        # barycentric weights of the d + 1 vertices
        v = (elevated - rem0) * torch.tensor(1.0 / (d + 1), dtype=torch.float32)
        slot = (d - rank).long()
        bary = torch.zeros(b, n, d + 2, device=dev)
        bary.scatter_add_(-1, slot, v)
        bary.scatter_add_(-1, slot + 1, -v)
        bary[..., 0] += 1.0 + bary[..., d + 1]
        weights = bary[..., : d + 1].reshape(-1)  # (B N (d+1),) point-major, vertex-minor
        # The vertices' keys (d coordinates; the (d+1)th is minus their sum) as mixed-radix int64 codes with
        # the image index first: vertex r of a point is rem0 + canonical[r][rank], canonical[r][k] = r, less
        # d + 1 where k > d - r. Coordinates get a margin of 2 (d + 1), so blur neighbours (within d + 1 of a
        # vertex) have codes too; a code plus or minus these offsets is the neighbour's.
        rank_l, rem_l = rank.long()[..., :d], rem0.long()[..., :d]
        low = rem_l.amin((0, 1)) - 2 * (d + 1)
        spans = [2 * b] + [int(x) for x in (rem_l.amax((0, 1)) + 2 * (d + 1) - low + 1).tolist()]
        if sum(math.log2(x) for x in spans) > _MAX_CODE_BITS:
            raise ValueError(
                "the lattice's keys do not fit 64-bit codes: the features span too many standard deviations "
                "(give wider kernels, or fewer images per call)"
            )
        radix = [math.prod(spans[i + 2 :]) for i in range(d)]
        image = torch.arange(b, device=dev)[:, None].expand(b, n)
        if apart is not None:
            image = image + b * apart.to(dev).long()
        base = image * math.prod(spans[1:])
        for i in range(d):
            base = base + (rem_l[..., i] - low[i]) * radix[i]
        step = sum(radix)
        codes_r = []
        for r in range(d + 1):
            c = base + r * step
            for i in range(d):
                c = c - (rank_l[..., i] > d - r).long() * ((d + 1) * radix[i])
            codes_r.append(c)
        self._index(torch.stack(codes_r, -1).reshape(-1), weights, radix)

    def _index(self, flat: torch.Tensor, weights: torch.Tensor, radix: list[int]) -> None:
        """Number the distinct vertices of the points' codes ``flat`` and build the splat, blur and slice matrices
        (``weights``: the points' barycentric weights, in the same order)."""
        d, dev = self.d, flat.device
        order = torch.argsort(flat, stable=True)
        codes, ranks, counts = torch.unique_consecutive(flat[order], return_inverse=True, return_counts=True)
        m = codes.numel()
        inverse = torch.empty_like(order)
        inverse[order] = ranks
        npoints = self.shape[0] * self.shape[1]
        alpha = 1.0 / (1.0 + 2.0 ** (-d))
        # splat: vertices x points (rows in code order; entry k of ``flat`` is point k // (d + 1)); slice:
        # points x vertices, with the constant alpha
        self._splat = _csr(counts, order.div(d + 1, rounding_mode="floor"), weights[order], (m, npoints))
        self._slice = _csr(torch.full((npoints,), d + 1, device=dev), inverse, weights * alpha, (npoints, m))
        # blur along each lattice axis j: v + (v[n1] + v[n2]) / 2 with n1 = key - 1 but key_j + d, n2 = key + 1
        # but key_j - d (axis d: the implied coordinate), absent neighbours contributing nothing
        rows = torch.arange(m, device=dev)
        step = sum(radix)
        self._blur = []
        for j in range(d + 1):
            shift = step - ((d + 1) * radix[j] if j < d else 0)
            cols, present = [rows], [torch.ones(m, dtype=torch.bool, device=dev)]
            for want in (codes - shift, codes + shift):
                pos = torch.searchsorted(codes, want).clamp(max=m - 1)
                cols.append(pos)
                present.append(codes[pos] == want)
            cols, present = torch.stack(cols, 1), torch.stack(present, 1)
            values = torch.tensor([1.0, 0.5, 0.5], device=dev).expand(m, 3)
            self._blur.append(_csr(present.sum(1), cols[present], values[present], (m, m)))

    def filter(self, values: torch.Tensor) -> torch.Tensor:
        """Splat (B, N, C) values onto the lattice, blur along every axis, slice back: (B, N, C)."""
        b, n = self.shape
        c = values.shape[-1]
        grid = self._splat @ values.reshape(b * n, c).float()
        for blur in self._blur:
            grid = blur @ grid
        return (self._slice @ grid).reshape(b, n, c)
