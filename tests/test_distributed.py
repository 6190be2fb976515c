"""torchrun DDP on 2 CPU processes (gloo): the selection state (Sparks scores and ``selected``, SNN proxies, every
parameter) is identical on both ranks after every optimiser step, only rank 0 writes checkpoints, and a run
checkpointed by 1 process resumes on 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from sparks.cli import main
from sparks.train.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import json, os, sys, torch
    import torch.distributed as dist
    import sparks.train.loop as loop
    from sparks.train.config import make_config

    rank = int(os.environ["RANK"])
    models, checks, saves = [], [], []
    build = loop.build_model
    loop.build_model = lambda *a, **k: models.append(build(*a, **k)) or models[-1]
    save = loop.ckpt.save_checkpoint
    loop.ckpt.save_checkpoint = lambda state, path: saves.append(str(path)) or save(state, path)
    adam_step = torch.optim.Adam.step

    def selection_state(model):
        tensors = [p.detach() for p in model.parameters()]  # scores, proxies and every weight
        kept = ("selected", "memory", "steps")
        tensors += [b for name, b in model.named_buffers() if name.rsplit(".", 1)[-1] in kept]
        return torch.cat([t.double().flatten() for t in tensors])

    def checked_step(self, *args, **kwargs):
        out = adam_step(self, *args, **kwargs)
        mine = selection_state(models[-1])
        both = [torch.empty_like(mine) for _ in range(2)]
        dist.all_gather(both, mine)
        checks.append(bool(torch.equal(both[0], both[1])))
        return out

    torch.optim.Adam.step = checked_step
    cleanup = loop.cleanup
    loop.cleanup = lambda: None  # keep the process group for the second run (re-initialising one can hang)
    common = dict(arch="vgg_small", width=0.0625, data=sys.argv[1], subset=256, batch_size=32, workers=0,
                  eval_test=False, val_fraction=0.002, progress=False, device="cpu", threads=1)
    # 1. Resume, on 2 processes, the Sparks run that 1 process checkpointed (with Gumbel noise: each rank draws
    #    its own noise, yet the all-reduced step keeps the ranks identical); data served by the device loader.
    loop.train(make_config(dict(common, out=sys.argv[2], resume="auto", data_on_device="on")))
    sparks_checks = list(checks)
    # 2. SNN codeword proxies, from scratch.
    loop.train(make_config(dict(common, out=sys.argv[3], method="snn", tau=4, epochs=1)))
    cleanup()
    with open(os.path.join(sys.argv[2], f"report{rank}.json"), "w") as f:
        json.dump({"sparks": sparks_checks, "snn": checks[len(sparks_checks):], "saves": saves}, f)
""")


def test_ddp_selection_state_identical_every_step_and_resume_from_one_process(tmp_path, fashion_mnist_root):
    run, snn = tmp_path / "run", tmp_path / "snn"
    # Epoch 1 on one process.
    args = ["train", "--arch", "vgg_small", "--width", "0.0625", "--data", str(fashion_mnist_root), "--subset", "256",
            "--batch-size", "32", "--epochs", "2", "--stop-after", "1", "--workers", "0", "--no-eval-test",
            "--threads", "1", "--val-fraction", "0.002", "--no-progress", "--device", "cpu", "--method", "sparks",
            "--tau", "5", "--method-args", "noise=0.5", "--out", str(run)]
    assert main(args) == 0
    assert load_checkpoint(run / "last.pt")["step"] == 8 and len(load_checkpoint(run / "last.pt")["rng"]) == 1
    # Epoch 2 on two.
    script = tmp_path / "ddp.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
           str(fashion_mnist_root), str(run), str(snn)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "checkpoint has RNG states for 1 processes, this run has 2" in proc.stderr
    reports = [json.loads((run / f"report{r}.json").read_text()) for r in (0, 1)]
    for report in reports:
        assert report["sparks"] == [True] * 4  # 256 images / (32 × 2 ranks) steps, each checked
        assert report["snn"] == [True] * 4
    assert reports[1]["saves"] == []  # only rank 0 writes
    assert {Path(p).name for p in reports[0]["saves"]} >= {"last.pt"}
    state = load_checkpoint(run / "last.pt")
    assert state["epoch"] == 2 and state["step"] == 8 + 4 and len(state["rng"]) == 2
    assert state["config"]["method_args"] == {"noise": 0.5}
    selected = [v for k, v in state["model"].items() if k.endswith("selector.selected")]
    assert selected and all(len(set(s.tolist())) == len(s) for s in selected)
    assert len(load_checkpoint(snn / "last.pt")["rng"]) == 2
