"""Ablation variants: their configs, which artifacts they share with the run, and the table."""

from pathlib import Path

import pytest
from conftest import preset_config

from atsg.ablation import ablation_markdown, ablation_rows, artifact_roots, variant_configs, write_ablation
from atsg.artifacts import artifact_key
from atsg.errors import ConfigError


def _demo(**sections):
    return preset_config("config", **sections)


def test_default_variants_switch_each_component_off():
    variants = variant_configs(_demo())
    assert list(variants) == [
        "no_ctc",
        "no_ptc",
        "no_linking",
        "no_par",
        "no_voting",
        "with_affinity",
        "with_refine_crf",
        "no_object",
        "no_boundary",
        "no_energy",
        "no_joint",
        "no_crf",
        "seed_classifier",
        "seed_segmentation",
    ]
    assert variants["no_ctc"]["classifier"]["ctc"]["enabled"] is False
    assert variants["no_ctc"]["classifier"]["ptc"]["enabled"] is True  # everything else as the run has it
    assert variants["no_linking"]["classifier"]["linking"]["enabled"] is False
    assert variants["no_voting"]["refine"]["mask_voting"] is False
    assert variants["no_par"]["refine"]["par"] is False and variants["no_par"]["refine"]["mask_voting"] is True
    assert variants["no_joint"]["segmentation"]["joint_loss"]["enabled"] is False
    assert variants["with_refine_crf"]["refine"]["crf"]["enabled"] is True
    assert variants["with_refine_crf"]["refine"]["crf"]["bilateral"]["sxy"] == 121  # the published inference's CRF
    assert variants["no_energy"]["segmentation"]["energy_loss"]["scale"] == 0.25  # the demo's own setting kept


def test_variants_share_every_artifact_upstream_of_their_change():
    cfg = _demo()
    roots = artifact_roots(cfg)
    run = Path("results/demo")
    own = {name: {a for a, p in r.items() if p != run} for name, r in roots.items()}
    assert own[None] == set()
    classifier_on = {"classifier", "cams", "pseudo_labels", "segmentation", "predictions", "eval"}
    for name in ("no_ctc", "no_ptc", "seed_classifier"):
        assert own[name] == classifier_on
    assert own["no_linking"] == set()  # the demo links no tokens (measured): the variant is the run itself
    linked = artifact_roots(_demo(classifier={"linking": {"enabled": True}}))["no_linking"]
    assert {a for a, p in linked.items() if p != run} == classifier_on
    for name in ("no_par", "no_voting", "with_affinity", "with_refine_crf"):
        assert own[name] == {"pseudo_labels", "segmentation", "predictions", "eval"}
    for name in ("no_object", "no_boundary", "no_energy", "no_joint"):
        assert own[name] == {"segmentation", "predictions", "eval"}
        assert roots[name]["segmentation"] == run / "ablations" / name
    # the CRF is inference: both models' predictions are made again, nothing is trained
    assert own["no_crf"] == {"predictions", "supervised_predictions", "eval"}
    # a seed is no weak-only setting: the supervised bound is trained again with it
    assert own["seed_segmentation"] == {"segmentation", "predictions", "eval", "supervised", "supervised_predictions"}


def test_equal_variants_share_one_folder_and_a_no_op_variant_is_the_run():
    cfg = _demo(
        ablation={
            "variants": {
                "a": {"set": {"refine": {"mask_voting": False}}},
                "b": {"set": {"refine": {"mask_voting": False}}},
                "noop": {"set": {"refine": {"mask_voting": True}}},
            }
        }
    )
    roots = artifact_roots(cfg)
    assert roots["b"]["eval"] == roots["a"]["eval"] == Path("results/demo/ablations/a")
    assert set(roots["noop"].values()) == {Path("results/demo")}


def test_a_variant_may_not_change_tiles_or_evaluation():
    cfg = _demo(ablation={"variants": {"bigger": {"set": {"tiling": {"size": 256}}}}})
    with pytest.raises(ConfigError, match="ablation.variants.bigger.set: tiling cannot change"):
        variant_configs(cfg)


def test_a_bad_variant_value_names_the_variant_and_the_key():
    cfg = _demo(ablation={"variants": {"odd": {"set": {"refine": {"par_iterations": 0}}}}})
    with pytest.raises(ConfigError, match="ablation variant odd: config key refine.par_iterations"):
        variant_configs(cfg)


def test_paper_mode_predictions_come_from_the_classifier_stage():
    staged, paper = _demo(), _demo(classifier={"joint_segmentation": True})
    changed = _demo(segmentation={"seg_weight": 0.2})
    changed_paper = _demo(classifier={"joint_segmentation": True}, segmentation={"seg_weight": 0.2})
    assert artifact_key(staged, "classifier") == artifact_key(changed, "classifier")
    assert artifact_key(paper, "classifier") != artifact_key(changed_paper, "classifier")
    assert artifact_key(staged, "predictions") != artifact_key(changed, "predictions")
    assert artifact_key(paper, "predictions") != artifact_key(changed_paper, "predictions")


def _metrics(cam, pseudo, pred):
    return {
        stage: {"splits": {"val": {"miou": v}, "test": {"miou": v + 0.01}}}
        for stage, v in (("cam", cam), ("pseudo_labels", pseudo), ("predictions", pred))
    }


def test_table_rows_deltas_and_markdown():
    cfg = _demo(ablation={"splits": ["val"], "variants": {"x": {"description": "thing", "set": {}}, "y": {"set": {}}}})
    metrics = {"full": _metrics(0.2, 0.3, 0.25), "y": _metrics(0.2, 0.3, 0.2), "x": _metrics(0.1, 0.2, 0.3)}
    rows = ablation_rows(metrics, cfg)
    assert [r["variant"] for r in rows] == ["full", "y", "x"]  # the order of the metrics given
    assert rows[1]["delta_predictions"]["val"] == pytest.approx(-0.05)
    assert rows[2]["miou"]["val"] == {"cam": 0.1, "pseudo_labels": 0.2, "predictions": 0.3}
    md = ablation_markdown(rows, ["val"], "demo")
    assert "| full | every component on | 20.0 | 30.0 | 25.0 |  |" in md
    assert "| x | thing | 10.0 | 20.0 | 30.0 | +5.0 |" in md and "| y |  | 20.0 | 30.0 | 20.0 | -5.0 |" in md


def test_table_needs_the_full_row_and_known_variants(tmp_path):
    cfg = _demo()
    with pytest.raises(ConfigError, match="full"):
        ablation_rows({"no_ctc": _metrics(0.1, 0.1, 0.1)}, cfg)
    with pytest.raises(ConfigError, match="nope not in ablation.variants"):
        ablation_rows({"full": _metrics(0.1, 0.1, 0.1), "nope": _metrics(0.1, 0.1, 0.1)}, cfg)
    with pytest.raises(ConfigError, match="does not exist; run the ablation target"):
        write_ablation({"full": tmp_path / "missing.json"}, cfg, tmp_path)
