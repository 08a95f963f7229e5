import json

import pytest
import yaml

from atsg.config import load_config, load_schema, parse_assignment, read_yaml, run_json, run_keys, section_json, \
    validate_config
from atsg.errors import ConfigError
from conftest import REPO, preset_config


def _walk(node, path=""):
    for key, sub in node.get("properties", {}).items():
        yield path + key, sub
        yield from _walk(sub, path + key + ".")


def test_every_schema_key_has_description_and_default():
    missing = [k for k, sub in _walk(load_schema()) if "description" not in sub or "default" not in sub]
    assert missing == []


def test_defaults_are_filled_into_empty_config():
    cfg = validate_config({})
    assert cfg["run"] == "demo"
    assert cfg["tiling"]["size"] == 256 and cfg["tiling"]["stride"] == 256
    assert cfg["dataset"]["preset"] == "synthetic"
    assert cfg["refine"]["bkg_thre"] == 0.6  # later stages carry the published defaults


@pytest.mark.parametrize("name", ["config", "potsdam", "vaihingen", "isaid", "deepglobe", "folder"])
def test_presets_validate(name):
    cfg = preset_config(name)
    assert cfg["dataset"]["preset"] == ("synthetic" if name == "config" else name)


def test_potsdam_preset_has_official_split():
    cfg = preset_config("potsdam")
    assert len(cfg["split"]["train"]) == 24 and len(cfg["split"]["test"]) == 14
    assert not set(cfg["split"]["train"]) & set(cfg["split"]["test"])


def test_vaihingen_preset_has_official_split():
    cfg = preset_config("vaihingen")
    assert len(cfg["split"]["train"]) == 16 and len(cfg["split"]["test"]) == 17


@pytest.mark.parametrize("assignment, key", [
    ("tiling.size=abc", "tiling.size"),
    ("dataset.preset=landsat", "dataset.preset"),
    ("split.ratios=[1, 2]", "split.ratios"),
    ("tiling.sizee=3", "tiling"),
    ("run=has space", "run"),
])
def test_wrong_values_name_the_key(assignment, key):
    with pytest.raises(ConfigError, match=rf"config key {key}\b"):
        load_config([REPO / "config" / "config.yaml"], assignments=[assignment])


def test_strings_from_snakemake_are_coerced_to_schema_types():
    # snakemake --config tiling='{size: 128}' delivers "128"
    cfg = validate_config({"tiling": {"size": "128", "stride": "64"}, "dataset": {"value_range": ["0", "4095"]}})
    assert cfg["tiling"]["size"] == 128 and cfg["tiling"]["stride"] == 64
    assert cfg["dataset"]["value_range"] == [0, 4095]
    assert validate_config({"run": "007"})["run"] == "007"  # strings stay strings


def test_cross_field_rules():
    with pytest.raises(ConfigError, match="dataset.palette"):
        validate_config({"dataset": {"classes": ["a", "b"], "palette": [[0, 0, 0]]}})
    with pytest.raises(ConfigError, match="tiling.stride"):
        validate_config({"tiling": {"size": 64, "stride": 128}})
    with pytest.raises(ConfigError, match="dataset.band_names"):
        validate_config({"dataset": {"bands": [1, 2, 3, 4], "band_names": ["R"], "expected_bands": 4}})


def test_parse_assignment_nests_and_reads_yaml():
    assert parse_assignment("a.b.c=[1, 2]") == {"a": {"b": {"c": [1, 2]}}}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_assignment("nokey")


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml does not exist"):
        load_config([tmp_path / "nope.yaml"])


PRESETS = ["potsdam", "vaihingen", "isaid", "deepglobe", "folder"]


@pytest.mark.parametrize("name", PRESETS)
def test_presets_run_the_published_models_and_cpu_overlay_replaces_them(name):
    published = load_config([REPO / "config" / f"{name}.yaml"])
    assert published["classifier"]["backbone"] == "deit_base_patch16_224"
    assert published["classifier"]["pretrained"] and not published["classifier"]["random_init"]
    assert published["classifier"]["patch_size"] is None and published["segmentation"]["iterations"] == 40000
    assert published["masks"]["generator"] == "sam" and published["classifier"]["crop_size"] == 320
    c = published["classifier"]
    assert c["linking"]["features"] == "dino" and c["linking"]["threshold"] == "adaptive"
    assert (c["ptc"]["weight"], c["ctc"]["weight"], c["ctc"]["local_crops"], c["ctc"]["local_size"]) == (0.3, 0.5, 8, 96)
    assert published["refine"]["cam_aux_weight"] == 0.0
    assert published["segmentation"]["energy_loss"]["scale"] == 0.5  # nothing of the demo's (0.25) carries over
    quick = load_config([REPO / "config" / f"{name}.yaml", REPO / "config" / "cpu.yaml"])
    assert quick["classifier"]["random_init"] and not quick["classifier"]["pretrained"]
    assert quick["classifier"]["linking"]["features"] == "self"  # needs no DINO file
    assert quick["masks"]["generator"] == "felzenszwalb" and quick["dataset"] == published["dataset"]


@pytest.mark.parametrize("name", PRESETS)
def test_presets_hold_only_what_differs_from_the_published_defaults(name):
    """Outside the description of the data (dataset, split, tiling), every key a preset writes changes a
    published default: the model and training sections are the schema's."""
    defaults = validate_config({})

    def same(raw, default, path):
        if isinstance(raw, dict):
            return [k for key, value in raw.items() for k in same(value, default[key], f"{path}{key}.")]
        return [path.rstrip(".")] if raw == default and path not in ("run.", "dataset.preset.", "dataset.root.") else []

    raw = {k: v for k, v in read_yaml(REPO / "config" / f"{name}.yaml").items()
           if k not in ("dataset", "split", "tiling")}
    assert same(raw, defaults, "") == []


def test_demo_is_used_only_without_a_config_file(tmp_path, capsys, monkeypatch):
    from atsg.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["config"]) == 0
    demo = yaml.safe_load(capsys.readouterr().out)
    assert demo["dataset"]["preset"] == "synthetic" and demo["masks"]["generator"] == "felzenszwalb"
    assert main(["config", "--configfile", str(REPO / "config" / "potsdam.yaml")]) == 0
    potsdam = yaml.safe_load(capsys.readouterr().out)
    assert potsdam == load_config([REPO / "config" / "potsdam.yaml"])
    assert potsdam["segmentation"]["energy_loss"]["scale"] == 0.5 and potsdam["masks"]["generator"] == "sam"


def test_run_keys_never_reach_params_and_reach_stages_on_the_command_line():
    cfg = load_config([REPO / "config" / "config.yaml"])
    params = json.loads(section_json(cfg, "classifier", "cams", "masks", "refine", "segmentation", "predict"))
    for section, keys in run_keys().items():
        assert not keys & set(params.get(section, {})), section
    assert {"device", "workers", "threads", "log_every", "checkpoint_every"} <= run_keys()["classifier"]
    assert {"batch_size", "device", "threads"} <= run_keys()["cams"] & run_keys()["refine"] & run_keys()["predict"]
    assert "batch_size" not in run_keys()["classifier"] and "val_every" not in run_keys()["classifier"]
    merged = load_config([], [section_json(cfg, "classifier"), run_json(cfg)])
    assert merged["classifier"] == cfg["classifier"] and merged["devices"] == cfg["devices"]
