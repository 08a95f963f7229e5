"""The classifier, the segmentation model and their weight sources."""

import pytest
import torch
import torch.nn.functional as F

from atsg.errors import ConfigError
from atsg.models.classifier import CAMClassifier
from atsg.models.segmenter import Segmenter
from atsg.config import validate_config

TINY_VIT = {"backbone": "vit_tiny_patch16_224", "pretrained": False, "random_init": True,
            "img_size": 64, "patch_size": 8, "embed_dim": 32, "depth": 3, "num_heads": 2}


def _cfg(section, **extra):
    return validate_config({section: {**TINY_VIT, **extra}})[section]


def test_classifier_logits_are_global_max_of_the_class_maps():
    torch.manual_seed(0)
    model = CAMClassifier(_cfg("classifier"), in_chans=3, n_targets=5)
    out = model(torch.randint(0, 255, (2, 3, 64, 48), dtype=torch.uint8))
    assert out["maps"].shape == (2, 5, 8, 6) and out["maps_aux"].shape == (2, 5, 8, 6)
    assert torch.allclose(out["logits"], out["maps"].amax((2, 3)))
    assert torch.allclose(out["logits_aux"], out["maps_aux"].amax((2, 3)))
    assert model.head.bias is None and model.head_aux.bias is None


def test_classifier_accepts_sizes_that_are_not_multiples_of_the_patch():
    model = CAMClassifier(_cfg("classifier"), in_chans=3, n_targets=2)
    cam, cam_aux, tokens = model.cams(torch.zeros(1, 3, 50, 61))
    assert cam.shape == (1, 2, 7, 8) and tokens.shape == (1, 32, 7, 8) and (cam >= 0).all()


def test_classification_gradients_reach_backbone_and_both_heads():
    model = CAMClassifier(_cfg("classifier"), in_chans=3, n_targets=3)
    out = model(torch.rand(2, 3, 64, 64) * 255)
    loss = F.multilabel_soft_margin_loss(out["logits"], torch.tensor([[1.0, 0, 1], [0, 1, 0]])) + \
        F.multilabel_soft_margin_loss(out["logits_aux"], torch.tensor([[1.0, 0, 1], [0, 1, 0]]))
    loss.backward()
    assert model.head.weight.grad.abs().sum() > 0 and model.head_aux.weight.grad.abs().sum() > 0
    assert model.backbone.vit.patch_embed.proj.weight.grad.abs().sum() > 0


def test_segmenter_returns_logits_at_input_size_and_trains():
    model = Segmenter(_cfg("segmentation", decoder_channels=16), in_chans=4, n_classes=6)
    logits = model(torch.rand(2, 4, 40, 56) * 255)
    assert logits.shape == (2, 6, 40, 56)
    F.cross_entropy(logits, torch.randint(0, 6, (2, 40, 56))).backward()
    assert model.backbone.vit.patch_embed.proj.weight.grad.abs().sum() > 0


def test_no_weight_source_is_an_error_naming_the_keys():
    cfg = _cfg("classifier")
    cfg["random_init"] = False
    with pytest.raises(ConfigError, match="classifier.random_init"):
        CAMClassifier(cfg, 3, 2)


def test_missing_backbone_checkpoint_is_a_clear_error(tmp_path):
    cfg = _cfg("classifier")
    cfg.update(random_init=False, checkpoint=str(tmp_path / "deit.pth"))
    with pytest.raises(ConfigError, match="classifier.checkpoint.*does not exist"):
        CAMClassifier(cfg, 3, 2)


def test_backbone_checkpoint_is_loaded(tmp_path):
    torch.manual_seed(1)
    source = CAMClassifier(_cfg("classifier"), 3, 2)
    torch.save({"model": source.backbone.vit.state_dict()}, tmp_path / "vit.pth")
    cfg = _cfg("classifier")
    cfg.update(random_init=False, checkpoint=str(tmp_path / "vit.pth"))
    torch.manual_seed(2)
    loaded = CAMClassifier(cfg, 3, 2)
    assert torch.equal(loaded.backbone.vit.pos_embed, source.backbone.vit.pos_embed)


def test_pretrained_weights_that_cannot_be_fetched_fail_at_once_with_the_key(monkeypatch):
    """Offline (a cluster node, this machine) and not cached: one line naming the key, not a minute of
    download retries and a hub traceback."""
    import socket
    import time

    import huggingface_hub

    from atsg.models.backbone import ViTBackbone

    def unreachable(address, timeout=None):
        raise OSError(-2, "Name or service not known")

    monkeypatch.setattr(socket, "create_connection", unreachable)
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)
    start = time.monotonic()
    with pytest.raises(ConfigError, match=r"config key segmentation.pretrained: timm's weights for "
                                          r"vit_tiny_patch16_224 are not in the local cache and huggingface.co "
                                          r"cannot be reached .*segmentation.checkpoint"):
        ViTBackbone("vit_tiny_patch16_224", 3, {"pretrained": True}, "segmentation")
    assert time.monotonic() - start < 5
