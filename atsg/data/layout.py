"""Finding the scenes of a dataset folder: image rasters, their scene ids and label rasters.

The layout of every dataset family is configuration (``dataset.images``,
``dataset.scene_id``, ``dataset.labels``; presets in config/), so the same code
reads Potsdam, Vaihingen, iSAID, DeepGlobe and any folder of images.
"""

from __future__ import annotations

import glob
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, DataError


@dataclass(frozen=True)
class Scene:
    """One source raster (and its label raster) of a dataset."""

    id: str
    image: Path
    label: Path | None

    def relative_parts(self, root: Path) -> tuple[str, ...]:
        """Folder names between the dataset root and the image (for folder-based splits)."""
        try:
            return self.image.parent.relative_to(root).parts
        except ValueError:
            return self.image.parent.parts


def _glob(root: Path, pattern: str) -> list[Path]:
    return sorted(Path(p) for p in glob.glob(str(root / pattern), recursive=True) if Path(p).is_file())


def discover_scenes(dataset: Mapping, root: Path) -> list[Scene]:
    """Scenes under ``root`` in the layout of ``dataset``; clear errors for an empty or broken layout."""
    if not root.exists():
        raise DataError(f"dataset.root {root} does not exist; set dataset.root to the folder holding the dataset")
    if not root.is_dir():
        raise DataError(f"dataset.root {root} is not a folder; set dataset.root to the folder holding the dataset")
    try:
        scene_re = re.compile(dataset["scene_id"])
    except re.error as exc:
        raise ConfigError(f"config key dataset.scene_id: not a regular expression ({exc})") from None
    if "scene" not in scene_re.groupindex:
        raise ConfigError("config key dataset.scene_id: needs a named group (?P<scene>...) giving the scene id")

    images = _glob(root, dataset["images"])
    if not images:
        raise DataError(
            f"{root}: no file matches dataset.images '{dataset['images']}' (preset {dataset['preset']}); "
            "check dataset.root and dataset.images"
        )
    found: dict[str, Path] = {}
    for path in images:
        match = scene_re.search(path.stem)
        if not match:
            continue
        sid = match.group("scene")
        if sid in found:
            raise DataError(
                f"scene id '{sid}' is given by both {found[sid]} and {path}; "
                "narrow dataset.images or make dataset.scene_id capture more of the name"
            )
        found[sid] = path
    if not found:
        raise DataError(
            f"{root}: {len(images)} file(s) match dataset.images but none has a name matching "
            f"dataset.scene_id '{dataset['scene_id']}' (e.g. {images[0].name})"
        )

    scenes = []
    for sid in sorted(found):
        scenes.append(Scene(sid, found[sid], _find_label(dataset, root, sid)))
    return scenes


def _find_label(dataset: Mapping, root: Path, sid: str) -> Path | None:
    template = dataset.get("labels")
    if not template:
        return None
    pattern = template.replace("{scene}", glob.escape(sid))
    hits = _glob(root, pattern)
    if len(hits) > 1:
        raise DataError(
            f"scene '{sid}': {len(hits)} label rasters match '{pattern}' ({hits[0]}, {hits[1]}, ...); "
            "make dataset.labels more specific"
        )
    if not hits:
        if dataset.get("labels_required", True):
            raise DataError(
                f"scene '{sid}': no label raster matches '{pattern}' under {root}; add it, fix dataset.labels, "
                "or set dataset.labels_required: false to tile it unlabelled"
            )
        return None
    return hits[0]
