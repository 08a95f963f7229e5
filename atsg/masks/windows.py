"""Scene windows for mask generation at native resolution (``masks.scene_windows``).

The tiles of a scene are grouped into windows of at most ``size`` pixels a side
(SAM's own input size), each holding whole tiles: along each axis, a window
starts at the first tile position not yet covered and takes every position whose
tile ends inside it. The window's image is pasted together from its tiles (so it
needs only tiles.zarr), masks are made once for the window, and each tile's maps
come from the masks cut to the tile.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError


@dataclass
class Window:
    scene: str
    row: int
    col: int
    height: int
    width: int
    tiles: np.ndarray
    """Tile indices, in store order."""
    offsets: np.ndarray
    """(len(tiles), 2) row and column of each tile inside the window."""


def _groups(starts: Sequence[int], tile: int, size: int) -> list[list[int]]:
    groups: list[list[int]] = []
    for s in sorted(set(starts)):
        if groups and s + tile <= groups[-1][0] + size:
            groups[-1].append(s)
        else:
            groups.append([s])
    return groups


def plan_windows(scenes: Sequence[str], windows: Sequence[Sequence[int]], size: int) -> list[Window]:
    """Windows covering every tile once, from each tile's scene id and [row, col, height, width]."""
    w = np.asarray(windows, dtype=np.int64).reshape(-1, 4)
    if len(w) and (w[:, 2].max() > size or w[:, 3].max() > size):
        raise ConfigError(
            f"config key masks.scene_windows: tiles of {int(w[:, 2].max())} px do not fit SAM's "
            f"{size} px input; set masks.scene_windows: false"
        )
    scenes = np.asarray(scenes)
    out = []
    for scene in dict.fromkeys(scenes.tolist()):
        mine = np.flatnonzero(scenes == scene)
        tile_h, tile_w = int(w[mine, 2].max()), int(w[mine, 3].max())
        for rows in _groups(w[mine, 0], tile_h, size):
            for cols in _groups(w[mine, 1], tile_w, size):
                inside = mine[np.isin(w[mine, 0], rows) & np.isin(w[mine, 1], cols)]
                if len(inside) == 0:
                    continue
                r0, c0 = int(w[inside, 0].min()), int(w[inside, 1].min())
                h = int((w[inside, 0] + w[inside, 2]).max()) - r0
                wd = int((w[inside, 1] + w[inside, 3]).max()) - c0
                out.append(Window(str(scene), r0, c0, h, wd, inside, w[inside, :2] - [r0, c0]))
    return out


def paste(window: Window, images: np.ndarray) -> np.ndarray:
    """The window's (bands, height, width) image from its tiles' (n, bands, h, w) images."""
    canvas = np.zeros((images.shape[1], window.height, window.width), images.dtype)
    th, tw = images.shape[-2:]
    for image, (r, c) in zip(images, window.offsets):
        canvas[:, r : r + th, c : c + tw] = image
    return canvas


def cut(masks: np.ndarray, offset: Sequence[int], tile: tuple[int, int]) -> np.ndarray:
    """The (K', th, tw) masks of one tile: the window's (K, H, W) masks cut to it, those empty there dropped."""
    r, c = int(offset[0]), int(offset[1])
    part = masks[:, r : r + tile[0], c : c + tile[1]]
    return part[part.reshape(len(part), -1).any(1)]
