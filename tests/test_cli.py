"""The CLI as a whole: every subcommand's --help (shared flags, --json, one help style), bad values refused in one
line with exit 2 before anything is written, and messages that say what a wrong file is and what to do."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest
import torch

from sparks.cli import SUBCOMMANDS, build_parser, main
from sparks.cli.common import THREADS_HELP, threads_value
from sparks.filekind import CHECKPOINT, SPARKS, file_kind

REPO = Path(__file__).resolve().parents[1]
# Written out here (not read from the package): a subcommand that vanishes fails this test.
EXPECTED = {"train", "eval", "models", "summary", "analyze", "export", "run", "bench", "sweep"}
WITH_THREADS = {"train", "eval", "run", "bench"}
WITH_CHECKPOINT = {"eval", "summary", "analyze", "export"}
WITH_MODEL = {"run", "bench"}


def subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    return dict(parser._subparsers._group_actions[0].choices)


def help_text(capsys, command: str) -> str:
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    return capsys.readouterr().out


def one_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    return lines[0]


def test_every_subcommand_is_registered_explicitly():
    assert set(subparsers()) == EXPECTED == set(SUBCOMMANDS)
    on_disk = {p.name[: -len("_cmd.py")] for p in (REPO / "sparks" / "cli").glob("*_cmd.py")}
    assert on_disk == EXPECTED


@pytest.mark.parametrize("command", sorted(EXPECTED))
def test_help_has_the_shared_flags_and_one_style(capsys, command):
    text = help_text(capsys, command)
    assert "--json" in text
    assert "(default" not in text and "default:" not in text.replace("[default:", "")
    actions = {a.dest: a for a in subparsers()[command]._actions}
    for action in actions.values():
        assert action.help, (command, action.option_strings)
        if action.default not in (None, False, argparse.SUPPRESS) and action.dest != "help":
            assert "[default: " in action.help, (command, action.dest)  # a default is always shown the same way
    assert ("threads" in actions) == (command in WITH_THREADS)
    if command in WITH_THREADS:
        threads = actions["threads"]
        assert (threads.help, threads.type, threads.metavar) == (THREADS_HELP, threads_value, "N")
    assert ("checkpoint" in actions) == (command in WITH_CHECKPOINT)
    assert ("model" in actions) == (command in WITH_MODEL)
    if command in ("export", "summary"):
        size = actions["input_size"]
        assert size.nargs == 3 and size.metavar == ("C", "H", "W")


def test_threads_auto_and_number_parse_the_same_everywhere():
    for command in WITH_THREADS:
        parser = subparsers()[command]
        required = {"eval": ["--checkpoint", "x"], "run": ["--model", "x"], "bench": ["--model", "x"]}.get(command, [])
        assert parser.parse_args([*required, "--threads", "auto"]).threads is None
        assert parser.parse_args([*required, "--threads", "3"]).threads == 3


TRAIN_BAD = [
    (["--method", "sign", "--tau", "5"], "--tau 5 contradicts --method sign, which is always tau=9"),
    (["--method", "float", "--tau", "4"], "--tau 4 contradicts --method float"),
    (["--width", "0"], "--width must be a number in (0, 64]"),
    (["--width", "-1"], "--width must be a number in (0, 64]"),
    (["--width", "inf"], "--width must be a finite number, got inf"),
    (["--workers", "-1"], "--workers must be an integer >= 0, got -1"),
    (["--select-lr", "nan"], "--select-lr must be a finite number"),
    (["--select-lr", "-1"], "--select-lr must be a number >= 0"),
    (["--lr", "inf"], "--lr must be a finite number"),
    (["--weight-decay", "nan"], "--weight-decay must be a finite number"),
    (["--weight-decay", "-1"], "--weight-decay must be a number >= 0"),
    (["--temp-start", "nan"], "--temp-start must be a finite number"),
    (["--stop-after", "0"], "--stop-after must be an integer >= 1"),
    (["--stop-after", "-1"], "--stop-after must be an integer >= 1"),
    (["--method-args", "foo=1"], "method 'sparks' takes no option 'foo'; it takes: "),
    (["--method", "topn", "--method-args", "sinkhorn_iters=3"], "method 'topn' takes no option 'sinkhorn_iters'"),
    (["--method-args", "sinkhorn_iters=abc"], "--method-args sinkhorn_iters must be a finite int like its default 10"),
    (["--method-args", "init=bogus"], "--method-args: unknown sparks init 'bogus'"),
    (["--method-args", "oops"], "--method-args expects KEY=VALUE, got 'oops'"),
    (["--seed", str(2**70)], "--seed must be an integer in [0, 4294967295]"),
    (["--epochs", "0"], "--epochs must be an integer >= 1"),
    (["--val-fraction", "1"], "--val-fraction must be a number in [0, 1)"),
    (["--threads", "0"], "argument --threads: must be a positive integer, got 0 (see sparks train --help)"),
    (["--tau", "abc"], "sparks train: error: argument --tau: invalid int value: 'abc' (see sparks train --help)"),
    (["--amp", "foo"], "argument --amp: invalid choice: 'foo'"),
]


@pytest.mark.parametrize("change, message", TRAIN_BAD, ids=[" ".join(c) for c, _ in TRAIN_BAD])
def test_train_rejects_bad_values_before_writing(tmp_path, capsys, change, message):
    out = tmp_path / "out"
    assert main(["train", "--arch", "vgg_small", "--out", str(out), *change]) == 2
    assert message in one_line(capsys)
    assert not out.exists()


def test_train_refuses_an_unwritable_out(tmp_path, capsys):
    locked = Path("/proc/sparks-test-out")  # a virtual file system: not writable, even for root
    assert main(["train", "--out", str(locked / "run")]) == 2
    assert "--out /proc/sparks-test-out/run: cannot write into /proc" in one_line(capsys)
    inside_file = tmp_path / "file"
    inside_file.write_text("x")
    assert main(["train", "--out", str(inside_file / "run")]) == 2
    assert "is not a directory" in one_line(capsys)


def test_yaml_values_are_checked_like_flags(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("width: .inf\n")
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "o")]) == 2
    assert "--width must be a finite number" in one_line(capsys)
    from sparks.train.config import make_config

    assert make_config({"threads": "auto"}).threads is None and make_config({"threads": 2}).threads == 2
    assert make_config({"method": "sign"}).tau == 9 and make_config({}).tau == 5  # the tau a method implies
    cfg.write_text("epochs: ten\n")
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "o")]) == 2
    assert "--epochs must be an integer, got 'ten'" in one_line(capsys)


@pytest.mark.parametrize("argv, message", [
    (["summary", "--arch", "vgg_small", "--width", "-1"], "argument --width: must be a finite number > 0, got -1"),
    (["summary", "--arch", "vgg_small", "--method", "sign", "--tau", "5"], "--tau 5 contradicts --method sign"),
    (["summary", "--arch", "vgg_small", "--input-size", "3", "32"], "argument --input-size: expected 3 arguments"),
    (["summary", "--arch", "vgg_small", "--input-size", "3", "32", "32", "28"],
     "sparks summary: error: unrecognized arguments: 28 (see sparks summary --help)"),
    (["summary", "--arch", "vgg_small", "--num-classes", "1000000000"], "num_classes must be an int in 1..65536"),
    (["summary", "--arch", "reactnet18", "--width", "1e6"], "width must be a number in (0, 64], got 1000000.0"),
    (["models", "--width", "0"], "argument --width: must be a finite number > 0, got 0"),
    (["models", "--method", "sign", "--tau", "4"], "--tau 4 contradicts --method sign"),
    (["eval", "--checkpoint", "x.pt", "--workers", "-1"], "--workers must be an integer >= 0"),
    (["run", "--model", "x.sparks", "--limit", "0"], "argument --limit: must be a positive integer"),
    (["bench", "--model", "x.sparks", "--threads", "-2"], "argument --threads: must be a positive integer"),
    (["analyze", "--checkpoint", "x.pt", "--out", "o", "--top", "0"], "argument --top: must be a positive integer"),
])
def test_other_subcommands_reject_bad_values(capsys, argv, message):
    assert main(argv) == 2
    assert message in one_line(capsys)


def test_summary_api_and_cli_use_the_model_input_size(capsys):
    import sparks
    from sparks.models import create, input_size

    model = create("vgg_small", width=0.0625, in_channels=1)
    assert input_size(model) == (1, 32, 32) and input_size(create("reactnet18", width=0.0625)) == (3, 224, 224)
    model.checkpoint_data = {"input_size": [28, 28]}  # what load_model attaches from a training checkpoint
    assert input_size(model) == (1, 28, 28)
    assert sparks.summary(model, print_fn=None)["input_size"] == [1, 1, 28, 28]
    assert main(["summary", "--arch", "reactnet18", "--width", "0.0625", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["input_size"] == [1, 3, 224, 224]
    with pytest.raises(ValueError, match="pass input_size"):
        sparks.summary(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)), print_fn=None)


# ------------------------------------------------------------------------------------------ what a wrong file is


def _fake_sparks(path: Path) -> Path:
    header = b'{"__metadata__": {}}'
    path.write_bytes(len(header).to_bytes(8, "little") + header)
    return path


def test_file_kind_by_magic_bytes(tmp_path):
    torch.save({"a": torch.zeros(2)}, tmp_path / "zip.pt")
    torch.save({"a": 1}, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    (tmp_path / "notes.txt").write_text("epoch 1: 88 % — ok\n" * 5)
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "noise").write_bytes(bytes(range(256)))
    # a header length larger than the file is not a safetensors container
    (tmp_path / "long").write_bytes((10**9).to_bytes(8, "little") + b"{}")
    assert file_kind(tmp_path / "zip.pt") == CHECKPOINT
    assert file_kind(_fake_sparks(tmp_path / "m.sparks")) == SPARKS
    assert file_kind(tmp_path / "legacy.pt") == "a legacy (non-zip) torch pickle"
    assert file_kind(tmp_path / "notes.txt") == "a text file"
    assert file_kind(tmp_path / "empty") == "an empty file"
    assert file_kind(tmp_path / "noise") == "a binary file of an unknown kind"
    assert file_kind(tmp_path / "long") == "a binary file of an unknown kind"
    assert file_kind(tmp_path) == "a directory"


def test_wrong_file_messages_say_what_it_is_and_what_to_do(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("notes.txt").write_text("my notes\n")
    torch.save({"format_version": 1}, "last.pt")
    _fake_sparks(Path("model.sparks"))
    assert main(["eval", "--checkpoint", "notes.txt"]) == 2
    assert one_line(capsys).startswith("sparks eval: error: notes.txt is not a sparks checkpoint (it is a text file)")
    assert main(["run", "--model", "last.pt"]) == 2
    assert one_line(capsys) == ("sparks run: error: last.pt is a training checkpoint; export it with "
                                "`sparks export --checkpoint last.pt --out last.sparks`")
    assert main(["bench", "--model", "last.pt"]) == 2
    assert "last.pt is a training checkpoint; export it with `sparks export" in one_line(capsys)
    for argv in (["export", "--checkpoint", "model.sparks", "--out", "x.sparks"], ["eval", "--checkpoint",
                 "model.sparks"], ["summary", "--checkpoint", "model.sparks"],
                 ["analyze", "--checkpoint", "model.sparks", "--out", "a"]):
        assert main(argv) == 2
        assert "model.sparks is a .sparks model, not a training checkpoint; give it to `sparks run" in one_line(capsys)
    assert main(["run", "--model", "notes.txt"]) == 2
    assert "notes.txt is not a .sparks model (it is a text file)" in one_line(capsys)
    assert not Path("x.sparks").exists() and not Path("a").exists()


def test_load_checkpoint_gives_api_callers_the_clis_wrong_file_line(tmp_path, capsys, monkeypatch):
    from sparks.errors import CheckpointError
    from sparks.train.checkpoint import load_checkpoint, load_model

    monkeypatch.chdir(tmp_path)
    Path("notes.txt").write_text("my notes\n")
    _fake_sparks(Path("model.sparks"))
    torch.save({"a": 1}, "legacy.pt", _use_new_zipfile_serialization=False)
    Path("dir.pt").mkdir()
    for name in ("model.sparks", "notes.txt", "legacy.pt", "dir.pt", "missing.pt"):
        with pytest.raises(CheckpointError) as err:
            load_checkpoint(name)
        assert main(["eval", "--checkpoint", name]) == 2
        assert one_line(capsys) == f"sparks eval: error: {err.value}", name
        with pytest.raises(CheckpointError, match=re.escape(str(err.value))):
            load_model(name)
    assert str(err.value) == "missing.pt does not exist"


def test_unwritable_outputs_are_refused_before_loading(tmp_path, capsys):
    ckpt = tmp_path / "c.pt"
    torch.save({"format_version": 1}, ckpt)  # never loaded: the --out check comes first
    assert main(["export", "--checkpoint", str(ckpt), "--out", "/proc/x.sparks"]) == 2
    assert "--out /proc/x.sparks: cannot write into /proc" in one_line(capsys)
    assert main(["analyze", "--checkpoint", str(ckpt), "--out", "/proc/sparks-analysis"]) == 2
    assert "--out /proc/sparks-analysis: cannot write into /proc" in one_line(capsys)
    assert main(["analyze", "--checkpoint", str(ckpt), "--out", str(ckpt)]) == 2
    assert f"--out {ckpt} exists and is not a directory" in one_line(capsys)


def test_split_record_of_a_config():
    from sparks.train.config import split_record

    config = {"dataset": "cifar10", "val_fraction": 0.1, "seed": 3, "subset": 500, "lr": 0.1}
    assert split_record(config) == {"dataset": "cifar10", "val_fraction": 0.1, "seed": 3, "subset": 500}
    assert split_record({**config, "split_seed": 0})["seed"] == 0  # the split's own seed wins
    assert split_record({"dataset": "cifar10"}) is None and split_record(None) is None


def test_run_val_split_comes_from_the_file_or_is_refused():
    from sparks.cli.run_cmd import split_options
    from sparks.errors import UsageError

    recorded = {"training": {"data": {"dataset": "cifar10", "val_fraction": 0.1, "seed": 7, "subset": None}}}
    assert split_options(recorded, "cifar10", "val", "m.sparks") == {"val_fraction": 0.1, "seed": 7, "subset": None}
    assert split_options({}, "cifar10", "test", "m.sparks") == {"val_fraction": 0.0}
    with pytest.raises(UsageError, match="m.sparks does not record the split it was trained with; use --split test"):
        split_options({}, "cifar10", "val", "m.sparks")
    with pytest.raises(UsageError, match="trained on cifar10, so it has no val split of fashion-mnist"):
        split_options(recorded, "fashion-mnist", "val", "m.sparks")
    whole = {"training": {"data": {"dataset": "cifar10", "val_fraction": 0.0, "seed": 0, "subset": None}}}
    with pytest.raises(UsageError, match="trained on all training images"):
        split_options(whole, "cifar10", "val", "m.sparks")


# ------------------------------------------------------------------------------------- --json end to end


def test_json_train_export_run(tmp_path, capsys, fashion_mnist_root):
    """One tiny run through train, export and run with --json; ``run --split val`` evaluates exactly the images
    the training run validated on (the split recorded at export), so both give the same top-1."""
    out = tmp_path / "run"
    assert main(["train", "--arch", "vgg_small", "--width", "0.0625", "--data", str(fashion_mnist_root), "--subset",
                 "128", "--batch-size", "64", "--epochs", "1", "--workers", "0", "--no-eval-test", "--threads", "1",
                 "--val-fraction", "0.002", "--seed", "5", "--no-progress", "--out", str(out), "--json"]) == 0
    captured = capsys.readouterr()
    row = json.loads(captured.out)  # stdout holds only the JSON document
    assert row["epoch"] == 1 and "val_acc" in row
    model = tmp_path / "m.sparks"
    assert main(["export", "--checkpoint", str(out / "best.pt"), "--out", str(model), "--json"]) == 0
    exported = json.loads(capsys.readouterr().out)
    assert exported["bytes"] == model.stat().st_size and exported["input"]["height"] == 28
    assert exported["training"]["data"] == {"dataset": "fashion-mnist", "val_fraction": 0.002, "seed": 5,
                                            "subset": 128}
    assert main(["run", "--model", str(model), "--data", str(fashion_mnist_root), "--split", "val", "--runtime",
                 "torch", "--json"]) == 0  # the torch runtime reproduces the checkpoint's logits exactly
    ran = json.loads(capsys.readouterr().out)
    assert ran["n"] == 120 and ran["dataset"] == "fashion-mnist" and 0 <= ran["top1"] <= ran["top5"] <= 100
    assert ran["top1"] == pytest.approx(row["val_acc"])  # the training run's own val evaluation
    # (analyze --json: tests/test_analysis.py::test_cli_analyze)
