"""The training loop: parameter groups, schedules, the distillation loss, exact resume and the NaN guard."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from sparks.models import create
from sparks.train import loop as train_mod
from sparks.train import recipe
from sparks.train.checkpoint import load_checkpoint
from sparks.train.config import make_config

TINY = {"arch": "vgg_small", "width": 0.0625, "dataset": "fashion-mnist", "tau": 5, "method": "sparks",
        "subset": 192, "batch_size": 64, "workers": 0, "eval_test": False, "progress": False, "device": "cpu",
        "threads": 1}  # one thread: the CI machine is shared, and oversubscribed threads are many times slower


def test_weight_decay_only_on_conv_and_fc_weights():
    model = create("vgg_small", num_classes=10, in_channels=1, width=0.0625, tau=5, method="sparks")
    decay, no_decay = recipe.param_groups(model, 1e-5)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = sorted(names[id(p)] for p in decay["params"])
    expected = sorted(n for n, m in model.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))
    assert decayed == [f"{n}.weight" for n in expected]
    assert decay["weight_decay"] == 1e-5 and no_decay["weight_decay"] == 0.0
    others = {names[id(p)] for p in no_decay["params"]}
    assert any(n.endswith("selector.scores") for n in others) and any("prelu" in n for n in others)
    assert len(decayed) + len(others) == len(names)


def test_lr_schedules():
    linear = recipe.lr_factor("linear", 100)
    cosine = recipe.lr_factor("cosine", 100)
    assert [linear(s) for s in (0, 50, 100, 120)] == [1.0, 0.5, 0.0, 0.0]
    assert cosine(0) == 1.0 and cosine(50) == pytest.approx(0.5) and cosine(100) == pytest.approx(0.0)
    assert cosine(25) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))


def test_default_weight_decay_depends_on_the_step():
    assert make_config({"method": "float"}).resolved_weight_decay() == 1e-5
    assert make_config({"method": "sparks"}).resolved_weight_decay() == 0.0
    assert make_config({"method": "sparks", "weight_decay": 3e-4}).resolved_weight_decay() == 3e-4


def test_distillation_loss_matches_a_float64_reference():
    torch.manual_seed(0)
    student, teacher = torch.randn(4, 10), torch.randn(4, 10)
    target = torch.randint(0, 10, (4,))
    p = teacher.double().softmax(1)
    kl = (p * (p.log() - student.double().log_softmax(1))).sum(1).mean()
    assert recipe.compute_loss(student, target, teacher, 0.0).item() == pytest.approx(kl.item(), rel=1e-5)
    ce = F.cross_entropy(student.double(), target)
    mixed = recipe.compute_loss(student, target, teacher, 0.3).item()
    assert mixed == pytest.approx((0.3 * ce + 0.7 * kl).item(), rel=1e-5)
    assert recipe.compute_loss(student, target, None, 0.0).item() == pytest.approx(ce.item(), rel=1e-5)


def _weights(path):
    return load_checkpoint(path)["model"]


def test_resume_reproduces_the_uninterrupted_run_exactly(tmp_path, fashion_mnist_root):
    base = dict(TINY, data=str(fashion_mnist_root), epochs=4)
    train_mod.train(make_config(dict(base, out=str(tmp_path / "straight"))))
    split = str(tmp_path / "split")
    train_mod.train(make_config(dict(base, out=split, stop_after=2)))
    assert load_checkpoint(f"{split}/last.pt")["epoch"] == 2
    train_mod.train(make_config(dict(base, out=split, resume="auto")))
    straight, resumed = _weights(tmp_path / "straight" / "last.pt"), _weights(f"{split}/last.pt")
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    rows = [json.loads(line) for line in Path(split, "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert rows[0]["lr"] == 1e-3 and rows[0]["temp"] == 1.0 and rows[-1]["temp"] < rows[0]["temp"]


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, fashion_mnist_root, monkeypatch, capsys):
    from sparks.cli import main

    real_loss = train_mod.compute_loss
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        loss = real_loss(*args, **kwargs)
        return loss * float("nan") if calls["n"] == 5 else loss  # 3 steps per epoch: step 5 is in epoch 2

    monkeypatch.setattr(train_mod, "compute_loss", poisoned)
    out = tmp_path / "run"
    argv = ["train", "--arch", "vgg_small", "--width", "0.0625", "--data", str(fashion_mnist_root), "--subset",
            "192", "--batch-size", "64", "--epochs", "3", "--workers", "0", "--no-eval-test", "--threads", "1",
            "--out", str(out)]
    assert main(argv) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"sparks train: error: loss became nan at epoch 2 step 4; last good checkpoint: {out / 'last.pt'}"]
    assert load_checkpoint(out / "last.pt")["epoch"] == 1
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
