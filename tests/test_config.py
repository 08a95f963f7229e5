import json

import pytest
import yaml
from conftest import REPO, preset_config

from atsg.config import (
    load_config,
    load_schema,
    parse_assignment,
    read_yaml,
    run_json,
    run_keys,
    section_json,
    validate_config,
)
from atsg.errors import ConfigError


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


@pytest.mark.parametrize(
    "assignment, key",
    [
        ("tiling.size=abc", "tiling.size"),
        ("dataset.preset=landsat", "dataset.preset"),
        ("split.ratios=[1, 2]", "split.ratios"),
        ("tiling.sizee=3", "tiling"),
        ("run=has space", "run"),
        ("evaluate.figure_tiles=0", "evaluate.figure_tiles"),  # the rule promises figures/samples.png
        ("segmentation.cross_entropy=focal", "segmentation.cross_entropy"),
    ],
)
def test_wrong_values_name_the_key(assignment, key):
    with pytest.raises(ConfigError, match=rf"config key {key}\b"):
        load_config([REPO / "config" / "config.yaml"], assignments=[assignment])


def test_values_of_no_alternative_say_what_would_do():
    for key in ("predict.input_size", "segmentation.val_input_size"):
        expected = rf"config key {key}: 8 is none of: an integer >= 16; one of \['crop', None\]"
        with pytest.raises(ConfigError, match=expected):
            load_config([REPO / "config" / "config.yaml"], assignments=[f"{key}=8"])


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

OFFICIAL_SCRIPTS = {  # scripts/dist_train_{potsdam,vai,iSAID}_seg_neg_fp.py of zhangyifan25/ATSG at 0347a0f
    "potsdam": {"max_iters": 40000, "spg": 4, "lr": 4e-5, "bkg_thre": 0.6, "w_obj": 0.01, "gate": 2000},
    "vaihingen": {"max_iters": 15000, "spg": 2, "lr": 4e-5, "bkg_thre": 0.6, "w_obj": 0.01, "gate": 2000},
    "isaid": {"max_iters": 40000, "spg": 8, "lr": 6e-5, "bkg_thre": 0.5, "w_obj": 0.03, "gate": 4000},
}
SHARED_ARGS = {
    "warmup_iters": 1500,
    "warmup_lr": 1e-6,
    "wt_decay": 1e-2,
    "power": 0.9,
    "crop_size": 320,
    "high_thre": 0.7,
    "low_thre": 0.25,
    "cam_scales": [1.0, 0.5, 1.5],
    "w_ptc": 0.3,
    "w_ctc": 0.5,
    "w_seg": 0.1,
    "w_reg": 0.05,
    "w_joi": 0.3,
    "w_bod": 1.2,
    "temp": 0.5,
    "momentum": 0.9,
    "local_crop_size": 96,
}


@pytest.mark.parametrize("name", sorted(OFFICIAL_SCRIPTS))
def test_presets_and_paper_mode_run_every_value_of_their_official_script(name):
    """Each argparse default of the official script, read off the config that preset + paper.yaml make."""
    o, a = OFFICIAL_SCRIPTS[name], SHARED_ARGS
    cfg = load_config([REPO / "config" / f"{name}.yaml", REPO / "config" / "paper.yaml"])
    c, s = cfg["classifier"], cfg["segmentation"]
    assert c["joint_segmentation"]
    for sec in (c, s):
        assert (sec["iterations"], sec["batch_size"], sec["lr"]) == (o["max_iters"], o["spg"], o["lr"])
        assert (sec["lr_warmup_iterations"], sec["warmup_ratio"], sec["weight_decay"], sec["power"]) == (
            a["warmup_iters"],
            a["warmup_lr"],
            a["wt_decay"],
            a["power"],
        )
        assert sec["crop_size"] == a["crop_size"] and sec["head_lr_mult"] == 8 and sec["clip_grad"] == 1.0
    assert c["bkg_thre"] == cfg["refine"]["bkg_thre"] == o["bkg_thre"]
    assert (
        (c["high_thre"], c["low_thre"])
        == (cfg["refine"]["high_thre"], cfg["refine"]["low_thre"])
        == (a["high_thre"], a["low_thre"])
    )
    assert c["cam_scales"] == cfg["cams"]["scales"] == a["cam_scales"] and c["band_cam"] == "multiscale"
    assert (
        c["ptc"]["weight"],
        c["ctc"]["weight"],
        c["ctc"]["temperature"],
        c["ctc"]["momentum"],
        c["ctc"]["local_size"],
    ) == (a["w_ptc"], a["w_ctc"], a["temp"], a["momentum"], a["local_crop_size"])
    assert (
        s["seg_weight"],
        s["energy_loss"]["weight"],
        s["joint_loss"]["weight"],
        s["boundary_loss"]["weight"],
        s["object_loss"]["weight"],
    ) == (a["w_seg"], a["w_reg"], a["w_joi"], a["w_bod"], o["w_obj"])
    assert s["loss_warmup_iterations"] == o["gate"]
    assert (c["aux_layer"], c["logits"], c["final_norm"], c["freeze_pos_embed"]) == (
        "adaptive",
        "pool_then_classify",
        True,
        True,
    )
    assert (s["decoder_channels"], s["decoder_norm"], s["decoder_dropout"], s["decoder_bias"]) == (
        512,
        False,
        0.0,
        False,
    )
    for key in ("object_loss", "boundary_loss", "energy_loss", "joint_loss"):
        assert s[key]["form"] == "published" and s[key]["enabled"]
    assert cfg["refine"]["par_softmax"] and cfg["cams"]["relu"] == "after_merge"
    # tools/infer_seg_*.py: tiles resized to crop_size, then the dense CRF (utils/dcrf.DenseCRF)
    assert cfg["predict"]["input_size"] == cfg["map"]["input_size"] == "crop" and cfg["predict"]["crf"]["enabled"]
    assert cfg["segmentation"]["val_input_size"] == "crop"  # published validate(): at the training crop
    assert (cfg["classifier"]["val_input_size"], cfg["classifier"]["val_cam"]) == ("crop", "multiscale")
    assert cfg["classifier"]["pooling"] == "max"  # global max pooling, not the demo's mean


@pytest.mark.parametrize("name", PRESETS)
def test_presets_run_the_published_models_and_cpu_overlay_replaces_them(name):
    published = load_config([REPO / "config" / f"{name}.yaml"])
    assert published["classifier"]["backbone"] == "deit_base_patch16_224"
    assert published["classifier"]["pretrained"] and not published["classifier"]["random_init"]
    assert published["classifier"]["patch_size"] is None
    assert published["segmentation"]["iterations"] == (15000 if name == "vaihingen" else 40000)
    assert published["masks"]["generator"] == "sam" and published["classifier"]["crop_size"] == 320
    c = published["classifier"]
    assert c["linking"]["features"] == "dino" and c["linking"]["threshold"] == "batch_mean"
    assert (c["ptc"]["weight"], c["ctc"]["weight"], c["ctc"]["local_crops"], c["ctc"]["local_size"]) == (
        0.3,
        0.5,
        8,
        96,
    )
    assert published["refine"]["cam_aux_weight"] == 0.0
    assert published["segmentation"]["energy_loss"]["scale"] == 0.5  # nothing of the demo's (0.25) carries over
    quick = load_config([REPO / "config" / f"{name}.yaml", REPO / "config" / "cpu.yaml"])
    # no weights to download: both models start from the pretrain stage, whose teacher links tokens
    assert quick["classifier"]["weights"] == quick["segmentation"]["weights"] == "pretrain"
    assert quick["pretrain"]["weights"] == "random_init" and quick["classifier"]["linking"]["features"] == "pretrain"
    assert {k: quick["pretrain"][k] for k in ("backbone", "patch_size", "embed_dim", "depth", "num_heads")} == {
        k: quick["classifier"][k] for k in ("backbone", "patch_size", "embed_dim", "depth", "num_heads")
    }
    assert published["refine"]["thresholds"] == "fixed" and quick["refine"]["thresholds"] == "val"
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

    raw = {
        k: v for k, v in read_yaml(REPO / "config" / f"{name}.yaml").items() if k not in ("dataset", "split", "tiling")
    }
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
