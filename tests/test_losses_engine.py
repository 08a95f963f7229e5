"""Losses on cases with known values, the learning-rate schedule, and resume after an interruption."""

import math

import pytest
import torch
import torch.nn.functional as F

from atsg.config import validate_config
from atsg.losses.classification import cam_classification_loss, multilabel_f1
from atsg.losses.segmentation import balanced_cross_entropy
from atsg.store import IGNORE
from atsg.train.engine import Engine, lr_factor


def test_balanced_cross_entropy_averages_background_and_foreground_means():
    logits = torch.zeros(1, 3, 1, 4)
    logits[0, 0, 0, 0] = math.log(2)  # pixel 0: p(bg) = 2/4
    labels = torch.tensor([[[0, 1, 2, IGNORE]]])
    ce = F.cross_entropy(logits, labels.clamp(max=2), reduction="none")[0, 0]
    expected = 0.5 * (ce[0] + (ce[1] + ce[2]) / 2)
    assert torch.isclose(balanced_cross_entropy(logits, labels, True), expected)
    assert torch.isclose(balanced_cross_entropy(logits, labels, False), ce[:3].mean())
    assert balanced_cross_entropy(logits, torch.full((1, 1, 4), IGNORE), True) == 0


def test_classification_loss_and_f1_known_values():
    logits = torch.tensor([[10.0, -10.0]])
    total, main, aux = cam_classification_loss(logits, -logits, torch.tensor([[1.0, 0.0]]), 0.5)
    assert main < 1e-4 and torch.isclose(total, main + 0.5 * aux) and aux > 9
    pred = torch.tensor([[1, 0], [1, 1]])
    target = torch.tensor([[1, 0], [0, 1]])
    assert multilabel_f1(pred, target) == pytest.approx((2 / 3 + 1.0) / 2)


def test_lr_schedule_warms_up_linearly_then_decays():
    """The published PolyWarmupAdamW: from lr x warmup_ratio, linear to lr at W, then poly over iterations."""
    cfg = validate_config(
        {"classifier": {"iterations": 100, "lr": 1e-3, "lr_warmup_iterations": 10, "warmup_ratio": 1e-2}}
    )["classifier"]
    assert lr_factor(0, cfg) == pytest.approx(0.01)
    assert lr_factor(5, cfg) == pytest.approx(0.01 + 0.99 * 0.5)
    assert lr_factor(10, cfg) == pytest.approx((1 - 10 / 100) ** 0.9)
    assert lr_factor(99, cfg) == pytest.approx(0.01**0.9)


class _Toy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.2))
        self.head = torch.nn.Linear(8, 1)

    def head_parameters(self):
        return list(self.head.parameters())

    def forward(self, x):
        return self.head(self.body(x))


class _Samples(torch.utils.data.Dataset):
    def __len__(self):
        return 10**9

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        x = torch.randn(4, generator=g)
        return {"x": x, "y": x.sum(0, keepdim=True)}


def _engine_cfg(**overrides):
    """The toy trainings' engine settings: 12 steps of 4 samples, curves every 3 steps."""
    base = {"iterations": 12, "batch_size": 4, "workers": 0, "lr": 1e-2, "lr_warmup_iterations": 2, "log_every": 3}
    return validate_config({"classifier": {**base, **overrides}})["classifier"]


def _fit(workdir, crash_at=None, ema=0.0):
    cfg = _engine_cfg(checkpoint_every=5, val_every=4, ema=ema)
    torch.manual_seed(0)
    model = _Toy()
    engine = Engine(model, cfg, torch.device("cpu"), workdir, "fp", "score", "toy")

    def loss_fn(m, batch, step):
        if crash_at is not None and step == crash_at:
            raise KeyboardInterrupt("killed")
        loss = F.mse_loss(m(batch["x"]), batch["y"])
        return loss, {"mse": loss.item()}

    def validate(m):
        x = torch.ones(3, 4)
        return {"score": -float(F.mse_loss(m(x), x.sum(1, keepdim=True)))}

    return engine.fit(_Samples(), loss_fn, validate), model


def test_training_resumes_from_the_last_checkpoint_and_matches_an_uninterrupted_run(tmp_path):
    full, full_model = _fit(tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        _fit(tmp_path / "b", crash_at=7)  # dies after the checkpoint of step 5
    resumed, resumed_model = _fit(tmp_path / "b")
    assert resumed.resumed_from == 5
    for a, b in zip(full_model.state_dict().values(), resumed_model.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6)
    assert [h["step"] for h in resumed.history] == [4, 8, 12]
    # the training curve: the mean loss of the steps since the previous entry, kept across the resume
    assert [e["step"] for e in full.losses] == [e["step"] for e in resumed.losses] == [3, 6, 9, 12]
    for a, b in zip(full.losses, resumed.losses):
        if a["step"] != 6:  # step 6 averages steps 4-6 in one run, step 6 alone after the resume at 5
            assert a["mse"] == pytest.approx(b["mse"], rel=1e-5) and a["loss"] == pytest.approx(a["mse"])
    assert full.losses[0]["mse"] > full.losses[-1]["mse"] and full.losses[0]["lr"] > 0
    assert resumed.best_step == full.best_step and resumed.best_score == pytest.approx(full.best_score)
    # the rate counts the steps this run made (12, and 7 after the resume), over their time only
    assert full.steps_per_second > 12 / full.seconds and resumed.steps_per_second > 7 / resumed.seconds


def test_weight_average_is_what_is_validated_and_kept(tmp_path):
    """ema > 0: validation sees, and the result holds, the moving average of the weights (hand-computed from the
    weights each step starts from), in eval mode; the training itself is the same as without it."""
    seen, scored = [], []

    def run(ema, workdir):
        cfg = _engine_cfg(checkpoint_every=12, val_every=12, ema=ema)
        torch.manual_seed(0)
        model = _Toy()
        steps = []

        def loss_fn(m, batch, step):
            steps.append({k: v.detach().clone() for k, v in m.state_dict().items()})
            loss = F.mse_loss(m(batch["x"]), batch["y"])
            return loss, {"mse": loss.item()}

        def validate(m):
            scored.append((m.training, m is model))
            return {"score": 0.0}

        engine = Engine(model, cfg, torch.device("cpu"), workdir, "fp", "score", "toy")
        result = engine.fit(_Samples(), loss_fn, validate)
        seen.append(steps + [model.state_dict()])
        return result

    plain, averaged = run(0.0, tmp_path / "plain"), run(0.9, tmp_path / "ema")
    for a, b in zip(seen[0], seen[1]):  # the same weights at every step: the average does not touch training
        assert all(torch.equal(a[k], b[k]) for k in a)
    weights = seen[1]
    expected = {k: v.clone() for k, v in weights[0].items()}
    for step in range(1, 13):
        m = min(0.9, (1 + step) / (10 + step))
        for k in expected:
            expected[k] += (1 - m) * (weights[step][k] - expected[k])
    for k, v in expected.items():
        assert torch.allclose(averaged.best_state[k], v, atol=1e-6), k
        assert torch.equal(plain.best_state[k], weights[-1][k])
    assert not torch.allclose(averaged.best_state["head.weight"], weights[-1]["head.weight"], atol=1e-4)
    assert scored == [(False, True), (False, False)]  # both in eval mode; with ema, not the trained module


def test_weight_average_resumes_exactly(tmp_path):
    full, _ = _fit(tmp_path / "a", ema=0.8)
    with pytest.raises(KeyboardInterrupt):
        _fit(tmp_path / "b", crash_at=7, ema=0.8)
    resumed, _ = _fit(tmp_path / "b", ema=0.8)
    assert resumed.resumed_from == 5
    for k, v in full.best_state.items():
        assert torch.allclose(resumed.best_state[k], v, atol=1e-6), k


def test_checkpoint_of_other_settings_is_not_resumed(tmp_path):
    _fit(tmp_path / "c")
    cfg = validate_config({"classifier": {"iterations": 2, "batch_size": 2, "workers": 0}})["classifier"]
    engine = Engine(_Toy(), cfg, torch.device("cpu"), tmp_path / "c", "other", "score", "toy")
    assert engine._resume()[0] == 0


@pytest.mark.parametrize("cpu_amp", [False, True])
def test_cpu_amp_runs_steps_and_validations_in_bf16_only_when_set(tmp_path, cpu_amp):
    cfg = _engine_cfg(checkpoint_every=12, val_every=6, cpu_amp=cpu_amp)
    torch.manual_seed(0)
    model = _Toy()
    seen = []

    def loss_fn(m, batch, step):
        out = m(batch["x"])
        seen.append(out.dtype)
        loss = F.mse_loss(out.float(), batch["y"])
        return loss, {"mse": loss.item()}

    def validate(m):
        seen.append(m(torch.ones(3, 4)).dtype)
        return {"score": 0.0}

    result = Engine(model, cfg, torch.device("cpu"), tmp_path, "fp", "score", "toy").fit(_Samples(), loss_fn, validate)
    assert seen == [torch.bfloat16 if cpu_amp else torch.float32] * (12 + 2)
    assert result.autocast == ("bfloat16" if cpu_amp else None)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the weights and their updates stay fp32
    assert result.losses[0]["mse"] > 2 * result.losses[-1]["mse"]  # and it learns


def test_cpu_amp_warns_on_a_cpu_without_native_bf16(monkeypatch, caplog):
    from atsg import device as dev

    cfg = validate_config({"classifier": {"cpu_amp": True}})["classifier"]
    monkeypatch.setattr(dev, "cpu_bf16_supported", lambda: False)
    with caplog.at_level("WARNING", logger="atsg.device"):
        assert dev.autocast_dtype(torch.device("cpu"), cfg) == torch.bfloat16
    assert "neither AVX512-BF16 nor AMX" in caplog.text
    assert dev.autocast_dtype(torch.device("cpu"), {**cfg, "cpu_amp": False}) is None
