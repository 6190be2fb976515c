"""`sparks train` / `sparks eval`: options, bad input (one line, exit 2, --out untouched), a smoke run, two-step +
distillation, and DDP with 2 CPU processes (gloo) ending with identical weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from sparks.cli import build_parser, main
from sparks.train.checkpoint import load_checkpoint
from sparks.train.config import FIELDS

REPO = Path(__file__).resolve().parents[1]


def tiny_args(data, out, *extra):
    return ["train", "--arch", "vgg_small", "--width", "0.0625", "--data", str(data), "--subset", "128",
            "--batch-size", "64", "--epochs", "1", "--workers", "0", "--no-eval-test", "--threads", "1",
            "--out", str(out), *extra]


def one_line_error(capsys, code: int = 2) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_every_option_has_help(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    for name in FIELDS:
        assert "--" + name.replace("_", "-") in text
    parser = build_parser()
    train = parser._subparsers._group_actions[0].choices["train"]
    for action in train._actions:
        assert action.help, action.option_strings


@pytest.mark.parametrize("change, message", [
    (["--data", "/nonexistent/fmnist"], "data directory /nonexistent/fmnist does not exist"),
    (["--dataset", "mnist-typo"], "unknown dataset 'mnist-typo'"),
    (["--arch", "resnet9000"], "unknown architecture 'resnet9000'"),
    (["--method", "magic"], "unknown method 'magic'"),
    (["--tau", "12"], "tau must be an int in 1..9"),
])
def test_bad_input_is_one_line_and_leaves_out_untouched(tmp_path, capsys, fashion_mnist_root, change, message):
    out = tmp_path / "out"
    args = tiny_args(fashion_mnist_root, out)
    flag = change[0]
    i = args.index(flag) if flag in args else None
    if i is not None:
        args[i + 1] = change[1]
    else:
        args += change
    assert main(args) == 2
    assert message in one_line_error(capsys)
    assert not out.exists()


def test_corrupt_checkpoints_are_refused_before_out_is_touched(tmp_path, capsys, fashion_mnist_root):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    out = tmp_path / "out"
    for flag in ("--init-from", "--teacher", "--resume"):
        assert main(tiny_args(fashion_mnist_root, out, flag, str(bad))) == 2
        assert f"{bad} is not a sparks checkpoint" in one_line_error(capsys)
        assert not out.exists()
    assert main(["eval", "--checkpoint", str(bad)]) == 2
    assert "is not a sparks checkpoint" in one_line_error(capsys)
    assert main(tiny_args(fashion_mnist_root, out, "--resume")) == 2
    assert "last.pt does not exist" in one_line_error(capsys)


def test_unknown_config_key_is_an_error(tmp_path, capsys, fashion_mnist_root):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("epochs: 1\nlearning_rat: 0.1\n")
    assert main(tiny_args(fashion_mnist_root, tmp_path / "out", "--config", str(cfg))) == 2
    assert "unknown training option 'learning_rat'" in one_line_error(capsys)


def test_smoke_train_then_eval_on_the_val_split(tmp_path, capsys, fashion_mnist_root):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("lr: 0.002\nbatch-size: 32\nval-fraction: 0.005\nseed: 3\n")
    out = tmp_path / "run"
    assert main(tiny_args(fashion_mnist_root, out, "--config", str(cfg), "--tau", "4")) == 0
    assert {"last.pt", "best.pt", "metrics.jsonl", "config.yaml", "curves.png"} <= {p.name for p in out.iterdir()}
    state = load_checkpoint(out / "best.pt")
    assert state["config"]["batch_size"] == 64  # the flag overrides the YAML file
    assert state["config"]["lr"] == 0.002 and state["config"]["tau"] == 4 and state["config"]["seed"] == 3
    assert state["model_args"]["tau"] == 4 and not any(k.startswith("module.") for k in state["model"])
    row = json.loads((out / "metrics.jsonl").read_text())
    assert {"epoch", "lr", "temp", "train_loss", "train_acc", "val_acc", "time"} <= set(row)
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(out / "best.pt"), "--data", str(fashion_mnist_root), "--split", "val",
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 300 and result["top1"] == pytest.approx(row["val_acc"])
    assert 0 <= result["top1"] <= result["top5"] <= 100
    # An existing run is not overwritten by accident.
    assert main(tiny_args(fashion_mnist_root, out)) == 2
    assert "already holds a run" in one_line_error(capsys)


def test_two_step_recipe_with_distillation(tmp_path, capsys, fashion_mnist_root):
    step1 = tmp_path / "step1"
    assert main(tiny_args(fashion_mnist_root, step1, "--method", "float")) == 0
    assert load_checkpoint(step1 / "last.pt")["optimizer"]["param_groups"][0]["weight_decay"] == 1e-5
    step2 = tmp_path / "step2"
    args = tiny_args(fashion_mnist_root, step2, "--method", "sparks", "--tau", "5", "--init-from",
                     str(step1 / "last.pt"), "--teacher", str(step1 / "last.pt"), "--distill-alpha", "0.5")
    assert main(args) == 0
    state = load_checkpoint(step2 / "last.pt")
    assert state["optimizer"]["param_groups"][0]["weight_decay"] == 0.0
    assert state["model_args"]["method"] == "sparks"
    # A step-1 checkpoint of another width does not fit: the error names the first bad key.
    wide = tmp_path / "wide"
    assert main(tiny_args(fashion_mnist_root, wide, "--method", "float", "--width", "0.125")) == 0
    capsys.readouterr()
    out = tmp_path / "step2b"
    assert main(tiny_args(fashion_mnist_root, out, "--init-from", str(wide / "last.pt"))) == 2
    assert "key 'stem.0.weight' has shape" in one_line_error(capsys)
    assert not out.exists()


DDP_SCRIPT = textwrap.dedent("""
    import os, sys, torch
    from sparks.train.config import make_config
    from sparks.train.loop import train
    cfg = make_config(dict(arch="vgg_small", width=0.0625, data=sys.argv[1], subset=256, batch_size=32, epochs=2,
                           workers=0, eval_test=False, val_fraction=0.002, progress=False, device="cpu", threads=1,
                           out=sys.argv[2], method="sparks", tau=5))
    result = train(cfg)
    torch.save(result.model.state_dict(), os.path.join(sys.argv[2], f"rank{os.environ['RANK']}.pt"))
""")


def test_ddp_two_cpu_processes_end_with_identical_weights(tmp_path, fashion_mnist_root):
    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_SCRIPT)
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
           str(fashion_mnist_root), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rank0, rank1 = (torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
    state = load_checkpoint(out / "last.pt")
    assert state["epoch"] == 2 and len(state["rng"]) == 2
    assert state["step"] == 2 * (256 // (32 * 2))  # each rank sees half of the data per step
    for key, value in state["model"].items():
        assert torch.equal(value, rank0[key]), key
    rows = (out / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 2 and "val_acc" in json.loads(rows[-1])
