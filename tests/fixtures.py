"""Seeded writers of tiny rasters in the real dataset layouts (Potsdam, Vaihingen, iSAID, DeepGlobe, folder).

Every fixture is generated from a seed by these functions; nothing binary is committed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin

POTSDAM_PALETTE = np.array(
    [[255, 0, 0], [255, 255, 255], [0, 0, 255], [0, 255, 255], [0, 255, 0], [255, 255, 0]], np.uint8
)
EPSG = "EPSG:32633"


def write_raster(
    path: Path,
    data: np.ndarray,
    crs: str | None = EPSG,
    transform=None,
    driver: str = "GTiff",
    tiled: bool = False,
    nodata=None,
) -> Path:
    """Write (bands, H, W) ``data`` to ``path``; GeoTIFFs carry a CRS and transform unless crs is None."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = data if data.ndim == 3 else data[None]
    count, h, w = data.shape
    profile = dict(driver=driver, width=w, height=h, count=count, dtype=str(data.dtype))
    if nodata is not None:
        profile["nodata"] = nodata
    if driver == "GTiff":
        if crs is not None:
            profile.update(crs=crs, transform=transform or from_origin(366000.0, 5808000.0, 0.05, 0.05))
        if tiled:
            profile.update(tiled=True, blockxsize=256, blockysize=256)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def random_scene(rng: np.random.Generator, h: int, w: int, n_classes: int, bands: int = 3):
    """(image (bands, h, w) uint8, labels (h, w) uint8): blocky labels and class-dependent colours."""
    coarse = rng.integers(0, n_classes, size=(h // 8 + 1, w // 8 + 1))
    labels = np.kron(coarse, np.ones((8, 8), np.uint8))[:h, :w].astype(np.uint8)
    image = (labels[None] * 37 + rng.integers(0, 30, size=(bands, h, w))).astype(np.uint8)
    return image, labels


def make_potsdam(root: Path, scene_ids, size=(300, 260), seed=0, bands=3, product="RGB") -> dict:
    """Potsdam naming: 2_Ortho_RGB/top_potsdam_{id}_RGB.tif + 5_Labels_all/top_potsdam_{id}_label.tif."""
    rng = np.random.default_rng(seed)
    truth = {}
    for k, sid in enumerate(scene_ids):
        image, labels = random_scene(rng, size[0], size[1], 6, bands)
        transform = from_origin(366000.0 + 400 * k, 5808000.0, 0.05, 0.05)
        write_raster(root / f"2_Ortho_{product}" / f"top_potsdam_{sid}_{product}.tif", image, transform=transform)
        write_raster(
            root / "5_Labels_all" / f"top_potsdam_{sid}_label.tif",
            POTSDAM_PALETTE[labels].transpose(2, 0, 1),
            transform=transform,
        )
        truth[sid] = (image, labels)
    return truth


def make_vaihingen(root: Path, areas, size=(200, 180), seed=0) -> dict:
    rng = np.random.default_rng(seed)
    truth = {}
    for area in areas:
        image, labels = random_scene(rng, size[0], size[1], 6)
        write_raster(root / "top" / f"top_mosaic_09cm_area{area}.tif", image)
        write_raster(
            root / "gts_for_participants" / f"top_mosaic_09cm_area{area}.tif",
            POTSDAM_PALETTE[labels].transpose(2, 0, 1),
        )
        truth[str(area)] = (image, labels)
    return truth


ISAID_PALETTE = np.array(
    [
        [0, 0, 0],
        [0, 0, 63],
        [0, 63, 63],
        [0, 63, 0],
        [0, 63, 127],
        [0, 63, 191],
        [0, 63, 255],
        [0, 127, 63],
        [0, 127, 127],
        [0, 0, 127],
        [0, 0, 191],
        [0, 0, 255],
        [0, 191, 127],
        [0, 127, 191],
        [0, 127, 255],
        [0, 100, 155],
    ],
    np.uint8,
)


def make_isaid(root: Path, ids_by_folder: dict, size=(160, 200), seed=0) -> dict:
    """iSAID: {train,val}/images/P0000.png + {train,val}/Semantic_masks/images/P0000_instance_color_RGB.png."""
    rng = np.random.default_rng(seed)
    truth = {}
    for folder, ids in ids_by_folder.items():
        for sid in ids:
            image, labels = random_scene(rng, size[0], size[1], 16)
            write_raster(root / folder / "images" / f"{sid}.png", image, driver="PNG")
            write_raster(
                root / folder / "Semantic_masks" / "images" / f"{sid}_instance_color_RGB.png",
                ISAID_PALETTE[labels].transpose(2, 0, 1),
                driver="PNG",
            )
            truth[sid] = (image, labels)
    return truth


DEEPGLOBE_PALETTE = np.array(
    [[0, 255, 255], [255, 255, 0], [255, 0, 255], [0, 255, 0], [0, 0, 255], [255, 255, 255], [0, 0, 0]], np.uint8
)


def make_deepglobe(root: Path, ids, size=(120, 120), seed=0, noise=True) -> dict:
    """DeepGlobe: {id}_sat.jpg + {id}_mask.png whose colours carry compression-like noise."""
    rng = np.random.default_rng(seed)
    truth = {}
    for sid in ids:
        image, labels = random_scene(rng, size[0], size[1], 7)
        mask = DEEPGLOBE_PALETTE[labels].astype(np.int16)
        if noise:
            mask = np.clip(mask + rng.integers(-20, 21, size=mask.shape), 0, 255)
        write_raster(root / f"{sid}_sat.jpg", image, driver="JPEG")
        write_raster(root / f"{sid}_mask.png", mask.astype(np.uint8).transpose(2, 0, 1), driver="PNG")
        truth[sid] = (image, labels)
    return truth


def make_folder(root: Path, names, size=(100, 140), n_classes=5, seed=0, labelled=None) -> dict:
    """Generic folder: images/{name}.png (no georeference) + labels/{name}.png class indices."""
    rng = np.random.default_rng(seed)
    truth = {}
    for name in names:
        image, labels = random_scene(rng, size[0], size[1], n_classes)
        write_raster(root / "images" / f"{name}.png", image, driver="PNG")
        if labelled is None or name in labelled:
            write_raster(root / "labels" / f"{name}.png", labels, driver="PNG")
        truth[name] = (image, labels)
    return truth
