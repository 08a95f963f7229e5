"""Never a silent wrong result: stores are sealed and checked when read, every failure reaches the rule's log
with its traceback, and a failed stage leaves nothing behind (on copies of the chain's artifacts)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import zarr
from conftest import REPO, tiny_config

from atsg.errors import DataError
from atsg.integrity import seal, verify
from atsg.shards import Shard, Step, partial_path, write_marker
from atsg.stages.generate_masks import run_generate_masks
from atsg.store import SCHEMAS, TileReader, write_json


def _atsg(*args) -> list[str]:
    return [sys.executable, "-m", "atsg.cli", *map(str, args)]


def _config(chain) -> list[str]:
    work, _, _ = chain
    return ["--configfile", str(REPO / "config" / "config.yaml"), "--configfile", str(work / "tiny.yaml")]


def _refine(chain, cams: Path, out: Path, log: Path) -> subprocess.CompletedProcess:
    _, env, run = chain
    return subprocess.run(
        _atsg(
            "refine_labels",
            *_config(chain),
            "--tiles",
            run / "tiles.zarr",
            "--cams",
            cams,
            "--masks",
            run / "masks.zarr",
            "--classifier",
            run / "classifier" / "model.pt",
            "--out",
            out,
            "--log",
            log,
        ),
        env=env,
        capture_output=True,
        text=True,
    )


def _error_line(stderr: str) -> str:
    """The one error line of a failed command's console output (progress bars aside)."""
    lines = [
        line for line in stderr.replace("\r", "\n").splitlines() if line.startswith("atsg ") and " error: " in line
    ]
    assert len(lines) == 1, stderr[-2000:]
    return lines[0]


def _leftovers(folder: Path) -> list[str]:
    """Hidden, temporary or partial files in ``folder`` (none when a stage failed before making it)."""
    if not folder.exists():
        return []
    return sorted(
        p.name for p in folder.iterdir() if p.name.startswith(".") or ".tmp-" in p.name or p.name.endswith(".partial")
    )


@pytest.mark.parametrize(
    "damage, message",
    [
        (
            "delete",
            "cams.zarr/cams: tile 3 is missing (chunk file c.3.0.0.0 is gone); the store is incomplete: "
            "rerun extract_cams",
        ),
        ("truncate", "cams.zarr/cams: tile 3 is corrupt (chunk file c.3.0.0.0"),
    ],
)
def test_a_damaged_chunk_is_a_one_line_error_never_a_fill_value(chain, tmp_path, damage, message):
    _, env, run = chain
    cams = shutil.copytree(run / "cams.zarr", tmp_path / "cams.zarr")
    chunk = cams / "cams" / "c.3.0.0.0"
    if damage == "delete":
        chunk.unlink()
    else:
        chunk.write_bytes(chunk.read_bytes()[:-7])
    out, log = tmp_path / "out" / "pseudo_labels.zarr", tmp_path / "refine.log"
    result = _refine(chain, cams, out, log)
    assert result.returncode == 2
    line = _error_line(result.stderr)
    assert line.startswith("atsg refine_labels: error: ") and message in line
    assert message in log.read_text() and "Traceback" in log.read_text()  # the rule's log has it all
    assert not out.exists() and _leftovers(out.parent) == []
    info = subprocess.run(_atsg("info", "--verify", cams), env=env, capture_output=True, text=True)
    assert info.returncode != 0 and message in info.stdout and "1 defect(s)" in info.stderr


def test_every_finished_store_verifies(chain, capsys):
    _, _, run = chain
    for name in ("tiles", "cams", "masks", "pseudo_labels", "predictions", "supervised_predictions"):
        group = zarr.open_group(str(run / f"{name}.zarr"), mode="r")
        assert verify(run / f"{name}.zarr", SCHEMAS[group.attrs["atsg_store"]]) == [], name
        assert group.attrs["integrity"]["tiles"] == group[group.attrs["integrity"]["arrays"][0]].shape[0]


def test_verify_names_every_kind_of_defect(chain, tmp_path):
    _, _, run = chain
    tiles = shutil.copytree(run / "tiles.zarr", tmp_path / "tiles.zarr")
    (tiles / "labels" / "c.0.0.0").unlink()
    (tiles / "images" / "c.1.0.0.0").write_bytes(b"not a chunk")
    (tiles / "split" / "c.0").write_bytes(b"\x00")
    defects = "\n".join(verify(tiles, SCHEMAS["tiles"]))
    assert "labels: tile 0 is missing" in defects and "images: tile 1 is corrupt" in defects
    assert "split: corrupt" in defects and "rerun tile" in defects
    zarr.open_group(str(tiles), mode="r+").attrs.put({"atsg_store": "tiles"})
    assert "not sealed" in "\n".join(verify(tiles, SCHEMAS["tiles"]))


def test_a_chunk_that_decodes_wrongly_is_named_even_with_a_matching_seal(chain, tmp_path):
    _, _, run = chain
    cams = shutil.copytree(run / "cams.zarr", tmp_path / "cams.zarr")
    (cams / "cams" / "c.2.0.0.0").write_bytes(b"garbage bytes")
    seal(cams)  # the seal agrees with the garbage: decoding still names the tile
    with pytest.raises(DataError, match=r"cams.zarr/cams: tile 2 does not decode"):
        TileReader(zarr.open_group(str(cams), mode="r")["cams"])[2]


def test_finalise_refuses_a_store_with_tiles_no_shard_wrote(chain, tmp_path):
    """Shards that skip units (e.g. a unit size changed between runs) leave tiles unwritten: never a fill value."""
    _, _, run = chain
    cfg = tiny_config()
    out, markers = tmp_path / "masks.zarr", tmp_path / "markers"
    masks = lambda step: run_generate_masks(cfg, run / "tiles.zarr", out, step)  # noqa: E731
    masks(Step("prepare"))
    masks(Step("shard", Shard(0, 2), markers / "0.json"))
    partial_id = zarr.open_group(str(partial_path(out)), mode="r").attrs["partial_id"]
    write_marker(markers / "1.json", Shard(1, 2), partial_id, 0, {})  # claims to be done, wrote nothing
    with pytest.raises(
        DataError,
        match=r"masks.zarr.partial/boundaries: 4 of 12 tiles were never written "
        r"\(4, 5, 6, 7\); rerun generate_masks",
    ):
        masks(Step("finalise", markers=(markers / "0.json", markers / "1.json")))
    assert not out.exists()


def test_a_class_count_mismatch_stops_before_any_store_is_made(chain, tmp_path):
    _, env, run = chain
    tiles = shutil.copytree(run / "tiles.zarr", tmp_path / "tiles.zarr")
    g = zarr.open_group(str(tiles), mode="r+")
    g.attrs["classes"] = [f"c{k}" for k in range(6)]
    for stage, extra in (
        ("extract_cams", ["--classifier", run / "classifier" / "model.pt"]),
        ("predict", ["--model", run / "segmentation" / "model.pt", "--geotiffs", tmp_path / "predict" / "tifs"]),
    ):
        out = tmp_path / stage / "out.zarr"
        result = subprocess.run(
            _atsg(stage, *_config(chain), "--tiles", tiles, *extra, "--out", out),
            env=env,
            capture_output=True,
            text=True,
        )
        assert result.returncode == 2 and "trained for classes" in result.stderr
        assert not (tmp_path / stage).exists() or list((tmp_path / stage).iterdir()) == []


def test_an_unexpected_error_reaches_the_log_with_its_traceback(chain, tmp_path):
    """Not an input error atsg foresaw: the console still gets one line naming the cause and the log."""
    _, env, run = chain
    tiles = shutil.copytree(run / "tiles.zarr", tmp_path / "tiles.zarr")
    g = zarr.open_group(str(tiles), mode="r+")
    attrs = dict(g.attrs)
    del attrs["target_classes"]
    g.attrs.put(attrs)
    log, out = tmp_path / "logs" / "extract_cams.log", tmp_path / "cams.zarr"
    result = subprocess.run(
        _atsg(
            "extract_cams",
            *_config(chain),
            "--tiles",
            tiles,
            "--classifier",
            run / "classifier" / "model.pt",
            "--out",
            out,
            "--log",
            log,
        ),
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert _error_line(result.stderr) == f"atsg extract_cams: error: KeyError: 'target_classes' (traceback in {log})"
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "KeyError: 'target_classes'" in text
    assert not out.exists() and _leftovers(tmp_path) == []


@pytest.fixture
def full_disk(tmp_path):
    """A 96 KiB file system (tmpfs; needs root, as CI runs)."""
    mount = tmp_path / "full"
    mount.mkdir()
    if (
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(mount)], capture_output=True).returncode
        != 0
    ):
        pytest.skip("cannot mount a small tmpfs here (not root)")
    yield mount
    subprocess.run(["umount", str(mount)], capture_output=True)


def test_a_full_disk_is_named_and_leaves_no_temporary_file(chain, full_disk, tmp_path):
    _, env, run = chain
    log = tmp_path / "train.log"
    out = full_disk / "supervised"
    result = subprocess.run(
        _atsg(
            "train_segmentation",
            "--supervised",
            *_config(chain),
            "--tiles",
            run / "tiles.zarr",
            "--out",
            out,
            "--log",
            log,
        ),
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    line = _error_line(result.stderr)
    assert "error: no space left on device writing " + str(out / "checkpoints" / "last.pt") in line, line
    assert "Traceback" in log.read_text()
    left = [p for p in out.rglob("*") if p.is_file()]
    assert [p for p in left if p.name.startswith(".") or ".tmp-" in p.name] == []
    assert not (out / "model.pt").exists()


def test_a_failed_whole_run_of_a_sharded_stage_leaves_no_partial_store(chain, tmp_path, monkeypatch):
    _, _, run = chain
    cfg = tiny_config()
    out = tmp_path / "masks.zarr"

    def boom(self, group, units, folders):
        raise RuntimeError("half way")

    monkeypatch.setattr("atsg.stages.generate_masks.GenerateMasks.fill", boom)
    with pytest.raises(RuntimeError, match="half way"):
        run_generate_masks(cfg, run / "tiles.zarr", out)
    assert not out.exists() and not partial_path(out).exists() and _leftovers(tmp_path) == []


def test_a_small_record_is_written_whole_or_not_at_all(full_disk):
    """metrics.json and the other records of a stage: a full disk names the file, leaves the previous version
    and no temporary file; a reader never sees half a file."""
    path = full_disk / "metrics.json"
    write_json(path, {"miou": 0.5})
    with pytest.raises(OSError, match=f"No space left on device.*{path}"):
        write_json(path, {"history": ["x" * 1000] * 200})
    assert json.loads(path.read_text()) == {"miou": 0.5}
    assert [p.name for p in full_disk.iterdir()] == ["metrics.json"]
