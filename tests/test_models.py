"""The classifier, the segmentation model and their weight sources."""

import pytest
import torch
import torch.nn.functional as F

from atsg import factory
from atsg.config import validate_config
from atsg.errors import ConfigError
from atsg.models.classifier import topk_pool

TINY_VIT = {
    "backbone": "vit_tiny_patch16_224",
    "pretrained": False,
    "random_init": True,
    "img_size": 64,
    "patch_size": 8,
    "embed_dim": 32,
    "depth": 3,
    "num_heads": 2,
}


def _cfg(section, **extra):
    if section == "classifier":
        extra = {"aux_candidates": [0, 1], **extra}
    return validate_config({section: {**TINY_VIT, **extra}})[section]


def test_classifier_logits_pool_the_tokens_then_classify_as_published():
    torch.manual_seed(0)
    model = factory.classifier(_cfg("classifier"), in_chans=3, n_targets=5)
    out = model(torch.randint(0, 255, (2, 3, 64, 48), dtype=torch.uint8))
    assert out["maps"].shape == (2, 5, 8, 6) and out["maps_aux"].shape == (2, 5, 8, 6)
    pooled = out["tokens"].amax((2, 3))
    assert torch.allclose(out["logits"], pooled @ model.head.weight[:, :, 0, 0].T, atol=1e-5)
    assert not torch.allclose(out["logits"], out["maps"].amax((2, 3)), atol=1e-3)
    assert model.head.bias is None and model.head_aux.bias is None
    other = factory.classifier(_cfg("classifier", logits="classify_then_pool"), in_chans=3, n_targets=5)
    out = other(torch.randint(0, 255, (2, 3, 64, 48), dtype=torch.uint8))
    assert torch.allclose(out["logits"], out["maps"].amax((2, 3)))
    assert torch.allclose(out["logits_aux"], out["maps_aux"].amax((2, 3)))


def test_mean_pooling_makes_the_logits_the_mean_of_the_class_maps():
    torch.manual_seed(0)
    model = factory.classifier(_cfg("classifier", pooling="mean"), in_chans=3, n_targets=5)
    out = model(torch.randint(0, 255, (2, 3, 64, 48), dtype=torch.uint8))
    assert torch.allclose(out["logits"], out["maps"].mean((2, 3)), atol=1e-5)
    assert torch.allclose(out["logits_aux"], out["maps_aux"].mean((2, 3)), atol=1e-5)
    assert not torch.allclose(out["logits"], out["maps"].amax((2, 3)), atol=1e-3)
    assert _cfg("classifier")["pooling"] == "max"  # published
    with pytest.raises(ConfigError, match="classifier.pooling"):
        _cfg("classifier", pooling="lse")


def test_topk_pooling_averages_each_channels_highest_tokens_between_max_and_mean():
    # hand-computed: channel values 1..6 on a 2x3 grid; a quarter of 6 tokens rounds up to 2: (6 + 5) / 2
    x = torch.tensor([[1.0, 6.0, 2.0], [5.0, 3.0, 4.0]])[None, None]
    assert topk_pool(x, 0.25).item() == 5.5
    assert topk_pool(x, 1e-6).item() == 6.0 and topk_pool(x, 1.0).item() == 3.5
    torch.manual_seed(0)
    model = factory.classifier(_cfg("classifier", pooling="topk", pool_topk=0.5), in_chans=3, n_targets=5)
    out = model(torch.randint(0, 255, (2, 3, 64, 48), dtype=torch.uint8))
    tokens = out["tokens"].flatten(2)  # 48 tokens: the 24 highest of each channel, then the 1x1 head
    pooled = tokens.sort(dim=2, descending=True).values[..., :24].mean(2)
    assert torch.allclose(out["logits"], pooled @ model.head.weight[:, :, 0, 0].T, atol=1e-5)
    assert not torch.allclose(out["logits"], out["tokens"].mean((2, 3)) @ model.head.weight[:, :, 0, 0].T, atol=1e-3)
    with pytest.raises(ConfigError, match="classifier.pool_topk"):
        _cfg("classifier", pooling="topk", pool_topk=0)


def test_final_tokens_are_taken_after_the_final_norm_unless_switched_off():
    torch.manual_seed(0)
    model = factory.classifier(_cfg("classifier"), in_chans=3, n_targets=2)
    x = model.backbone.prepare(torch.rand(1, 3, 64, 64) * 255)
    pre = model.backbone(x, [2])[0]
    post = model.backbone(x, [2], final_norm=True)[0]
    normed = model.backbone.vit.norm(pre.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    assert torch.allclose(post, normed, atol=1e-5) and not torch.allclose(pre, post, atol=1e-2)
    assert torch.allclose(
        model.tokens(x * 0 + 100)[0],
        model.backbone(model.backbone.prepare(torch.full((1, 3, 64, 64), 100.0)), [2], final_norm=True)[0],
        atol=1e-5,
    )


def test_adaptive_aux_block_is_the_candidate_closest_to_the_candidates_mean():
    from atsg.models.classifier import choose_block

    maps = [torch.full((2, 1, 1, 1), v) for v in (0.0, 1.0, 5.0)]  # means 0, 1, 5: overall mean 2 -> block 1
    assert choose_block(maps) is maps[1]
    maps = [torch.tensor([0.0, 4.0]).view(2, 1, 1, 1), torch.tensor([3.0, 3.0]).view(2, 1, 1, 1)]
    # one group (published): mean 2.5, errors 2.5 and 0.5 -> block 1 for both images
    assert torch.equal(choose_block(maps), maps[1])
    # per image: image 0 mean 1.5 (errors 1.5, 1.5: the earlier wins), image 1 mean 3.5 (0.5, 0.5: earlier)
    assert torch.equal(choose_block(maps, torch.tensor([0, 1])).flatten(), torch.tensor([0.0, 4.0]))
    torch.manual_seed(0)
    model = factory.classifier(_cfg("classifier", aux_candidates=[0, 1, 2]), in_chans=3, n_targets=2)
    assert model.aux_blocks == [0, 1, 2]
    with pytest.raises(ConfigError, match="classifier.aux_candidates"):
        factory.classifier(_cfg("classifier", aux_candidates=[-5, -4, -3]), in_chans=3, n_targets=2)


def test_classifier_accepts_sizes_that_are_not_multiples_of_the_patch():
    model = factory.classifier(_cfg("classifier"), in_chans=3, n_targets=2)
    cam, cam_aux, tokens = model.cams(torch.zeros(1, 3, 50, 61))
    assert cam.shape == (1, 2, 7, 8) and cam_aux.shape == (1, 2, 7, 8) and tokens.shape == (1, 32, 7, 8)


def test_classification_gradients_reach_backbone_and_both_heads():
    model = factory.classifier(_cfg("classifier"), in_chans=3, n_targets=3)
    out = model(torch.rand(2, 3, 64, 64) * 255)
    loss = F.multilabel_soft_margin_loss(
        out["logits"], torch.tensor([[1.0, 0, 1], [0, 1, 0]])
    ) + F.multilabel_soft_margin_loss(out["logits_aux"], torch.tensor([[1.0, 0, 1], [0, 1, 0]]))
    loss.backward()
    assert model.head.weight.grad.abs().sum() > 0 and model.head_aux.weight.grad.abs().sum() > 0
    assert model.backbone.vit.patch_embed.proj.weight.grad.abs().sum() > 0


def test_segmenter_returns_logits_at_input_size_and_trains():
    model = factory.segmenter(_cfg("segmentation", decoder_channels=16), in_chans=4, n_classes=6)
    logits = model(torch.rand(2, 4, 40, 56) * 255)
    assert logits.shape == (2, 6, 40, 56)
    F.cross_entropy(logits, torch.randint(0, 6, (2, 40, 56))).backward()
    assert model.backbone.vit.patch_embed.proj.weight.grad.abs().sum() > 0


def test_no_weight_source_is_an_error_naming_the_keys():
    cfg = _cfg("classifier")
    cfg["random_init"] = False
    with pytest.raises(ConfigError, match="classifier.random_init"):
        factory.classifier(cfg, 3, 2)


def test_missing_backbone_checkpoint_is_a_clear_error(tmp_path):
    cfg = _cfg("classifier")
    cfg.update(random_init=False, checkpoint=str(tmp_path / "deit.pth"))
    with pytest.raises(ConfigError, match="classifier.checkpoint.*does not exist"):
        factory.classifier(cfg, 3, 2)


def test_backbone_checkpoint_is_loaded(tmp_path):
    torch.manual_seed(1)
    source = factory.classifier(_cfg("classifier"), 3, 2)
    torch.save({"model": source.backbone.vit.state_dict()}, tmp_path / "vit.pth")
    cfg = _cfg("classifier")
    cfg.update(random_init=False, checkpoint=str(tmp_path / "vit.pth"))
    torch.manual_seed(2)
    loaded = factory.classifier(cfg, 3, 2)
    assert torch.equal(loaded.backbone.vit.pos_embed, source.backbone.vit.pos_embed)


def test_pretrained_weights_that_cannot_be_fetched_fail_at_once_with_the_key(monkeypatch):
    """Offline (a cluster node, this machine) and not cached: one line naming the key, not a minute of
    download retries and a hub traceback."""
    import socket
    import time

    import huggingface_hub

    def unreachable(address, timeout=None):
        raise OSError(-2, "Name or service not known")

    monkeypatch.setattr(socket, "create_connection", unreachable)
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)
    start = time.monotonic()
    with pytest.raises(
        ConfigError,
        match=r"config key segmentation.pretrained: timm's weights for "
        r"vit_tiny_patch16_224 are not in the local cache and huggingface.co "
        r"cannot be reached .*segmentation.checkpoint",
    ):
        factory.backbone({"backbone": "vit_tiny_patch16_224", "pretrained": True}, 3, "segmentation")
    assert time.monotonic() - start < 5


def test_a_vit_with_a_cnn_stem_needs_timm_position_embedding_resampling():
    hybrid = {"backbone": "vit_tiny_r_s16_p8_224", "pretrained": False, "random_init": True, "aux_layer": -2}
    with pytest.raises(ConfigError, match="classifier.pos_embed_resize: .* set it to timm"):
        factory.classifier(validate_config({"classifier": hybrid})["classifier"], 3, 2)
    cfg = validate_config({"classifier": {**hybrid, "pos_embed_resize": "timm"}})["classifier"]
    out = factory.classifier(cfg, 3, 2)(torch.rand(1, 3, 64, 64) * 255)
    assert out["maps"].shape == (1, 2, 2, 2)


def test_models_take_explicit_arguments_and_the_factory_reads_the_config():
    """No config dict goes below atsg.factory: no nn.Module of atsg.models takes a config section."""
    import importlib
    import inspect
    import pkgutil
    import re

    import atsg.models

    modules = [importlib.import_module(f"atsg.models.{m.name}") for m in pkgutil.iter_modules(atsg.models.__path__)]
    classes = {
        cls
        for mod in modules
        for _, cls in inspect.getmembers(mod, inspect.isclass)
        if issubclass(cls, torch.nn.Module) and cls.__module__.startswith("atsg.models")
    }
    assert len(classes) >= 9
    for cls in classes:
        for name, p in inspect.signature(cls.__init__).parameters.items():
            assert name not in ("cfg", "config", "section", "ctc", "segmentation"), (cls.__name__, name)
            assert "Mapping" not in str(p.annotation), (cls.__name__, name)
        assert not re.search(r"(?<!\w)(cfg|config)\b", inspect.getsource(cls.__init__)), cls.__name__


def test_sam_comes_from_segment_anything_registry(monkeypatch):
    """Published SAM types are built by segment_anything's own sam_model_registry; only vit_tiny is made here."""
    import segment_anything

    from atsg.models import sam

    built = []
    for name in ("vit_h", "vit_l", "vit_b"):
        monkeypatch.setitem(segment_anything.sam_model_registry, name, lambda checkpoint, n=name: built.append(n) or n)
        assert sam.build_sam_model(name) == name
    assert built == ["vit_h", "vit_l", "vit_b"]
    assert sam.model_types() == [*segment_anything.sam_model_registry, "vit_tiny"]
    tiny = sam.build_sam_model("vit_tiny")
    assert tiny.image_encoder.img_size == sam.image_size("vit_tiny") == 256 and sam.image_size("vit_b") == 1024
    with pytest.raises(ConfigError, match="unknown SAM type"):
        factory.sam("vit_x", "x.pth", torch.device("cpu"))
