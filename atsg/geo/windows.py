"""Windowed inference over a whole raster: a fixed grid of overlapping model tiles, cut into output blocks.

Every pixel's class probabilities are the Hann-weighted mean over the tiles of one global grid that cover it
(as `predict` blends a scene's tiles), so a block's values do not depend on which other blocks are computed,
by which process, or in which order: maps made in shards equal the unsharded map byte for byte. A block reads
only the pixels of its tiles, so memory depends on the block and tile sizes, never on the raster's size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..data.raster import grid_positions


@dataclass(frozen=True)
class Block:
    """Output block ``index`` (row-major) covering rows ``row``..``row + rows``, columns ``col``..``col + cols``."""

    index: int
    row: int
    col: int
    rows: int
    cols: int


class TileGrid:
    """Model tiles of ``tile`` px every ``tile - overlap`` px over a ``height`` x ``width`` raster (the last row
    and column may overhang: their outside pixels are padding), and output blocks of ``block`` px."""

    def __init__(self, height: int, width: int, tile: int, overlap: int, block: int):
        if not 0 <= overlap < tile:
            raise ValueError(f"overlap {overlap} px must be at least 0 and under the tile size {tile} px")
        self.height, self.width, self.tile, self.block = height, width, tile, block
        self.stride = tile - overlap
        self.rows = np.asarray(grid_positions(height, tile, self.stride))
        self.cols = np.asarray(grid_positions(width, tile, self.stride))

    def blocks(self) -> list[Block]:
        out = []
        for r in range(0, self.height, self.block):
            for c in range(0, self.width, self.block):
                out.append(Block(len(out), r, c, min(self.block, self.height - r), min(self.block, self.width - c)))
        return out

    @property
    def block_shape(self) -> tuple[int, int]:
        return -(-self.height // self.block), -(-self.width // self.block)

    def tiles(self, block: Block) -> list[tuple[int, int]]:
        """(row, col) of every tile that covers a pixel of ``block``."""
        rows = self.rows[(self.rows < block.row + block.rows) & (self.rows + self.tile > block.row)]
        cols = self.cols[(self.cols < block.col + block.cols) & (self.cols + self.tile > block.col)]
        return [(int(r), int(c)) for r in rows for c in cols]


def hann_window(size: int) -> np.ndarray:
    """(size, size) tile weights: a Hann window that is never exactly 0, so every pixel of a tile counts."""
    w = np.hanning(size + 2)[1:-1].astype(np.float32)
    return np.outer(w, w)


def predict_block(
    grid: TileGrid,
    block: Block,
    read: Callable,
    predict: Callable,
    n_classes: int,
    batch_size: int,
    weights: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """((classes, rows, cols) float32 probabilities, (rows, cols) float32 total weight) of ``block``.

    ``read(row, rows, col, cols)`` gives ((bands, rows, cols) uint8, (rows, cols) bool valid) of a window inside
    the raster; ``predict(batch, valid)`` (n, bands, tile, tile) uint8 and (n, tile, tile) bool -> (n, classes, tile,
    tile) probabilities.
    Tiles are read as one window (the union of the block's tiles), padded outside the raster; pixels that are
    padding or nodata get no weight. Where the total weight is 0 no tile saw data."""
    t = grid.tile
    tiles = grid.tiles(block)
    r0, c0 = min(r for r, _ in tiles), min(c for _, c in tiles)
    r1 = min(max(r for r, _ in tiles) + t, grid.height)
    c1 = min(max(c for _, c in tiles) + t, grid.width)
    pixels, valid = read(r0, r1 - r0, c0, c1 - c0)
    acc = np.zeros((n_classes, block.rows, block.cols), np.float32)
    total = np.zeros((block.rows, block.cols), np.float32)
    for start in range(0, len(tiles), batch_size):
        chunk = tiles[start : start + batch_size]
        batch = np.zeros((len(chunk), pixels.shape[0], t, t), np.uint8)
        mask = np.zeros((len(chunk), t, t), bool)
        for k, (r, c) in enumerate(chunk):
            h, w = min(t, grid.height - r), min(t, grid.width - c)
            batch[k, :, :h, :w] = pixels[:, r - r0 : r - r0 + h, c - c0 : c - c0 + w]
            mask[k, :h, :w] = valid[r - r0 : r - r0 + h, c - c0 : c - c0 + w]
        keep = np.flatnonzero(mask.reshape(len(chunk), -1).any(1))  # tiles of nodata only: nothing to predict
        if not len(keep):
            continue
        probs = predict(batch[keep], mask[keep])
        for j, k in enumerate(keep):
            r, c = chunk[k]
            # the part of tile k inside the block, in block and in tile coordinates
            y0, y1 = max(r, block.row), min(r + t, block.row + block.rows)
            x0, x1 = max(c, block.col), min(c + t, block.col + block.cols)
            tw = weights[y0 - r : y1 - r, x0 - c : x1 - c] * mask[k, y0 - r : y1 - r, x0 - c : x1 - c]
            acc[:, y0 - block.row : y1 - block.row, x0 - block.col : x1 - block.col] += (
                probs[j, :, y0 - r : y1 - r, x0 - c : x1 - c] * tw
            )
            total[y0 - block.row : y1 - block.row, x0 - block.col : x1 - block.col] += tw
    return acc, total


def finish_block(
    acc: np.ndarray, total: np.ndarray, ignore: int, probabilities: bool = True
) -> tuple[np.ndarray, np.ndarray | None]:
    """((rows, cols) uint8 labels, ``ignore`` where no tile saw data; with ``probabilities`` the (classes, rows,
    cols) uint8 probabilities scaled to 0-255, 0 where no tile saw data, else None) of a block's accumulated
    probabilities. ``acc`` is overwritten (no block-sized temporaries beyond the outputs)."""
    seen = total > 0
    labels = acc.argmax(0).astype(np.uint8)  # dividing by the positive total changes no argmax
    labels[~seen] = ignore
    if not probabilities:
        return labels, None
    np.divide(acc, np.where(seen, total, 1)[None], out=acc)
    np.multiply(acc, 255, out=acc)
    np.rint(acc, out=acc)
    np.clip(acc, 0, 255, out=acc)
    scaled = acc.astype(np.uint8)
    scaled[:, ~seen] = 0
    return labels, scaled
