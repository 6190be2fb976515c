"""Experiment grids: the results CSV (append once, resume, dedupe), paired-difference intervals against hand
computation, the generated doc section, and an end-to-end tiny CIFAR-10 grid on a fixture made here."""

from __future__ import annotations

import csv
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats as scipy_stats

from sparks.cli import main as cli_main
from sparks.errors import UsageError
from sparks.experiments import ledger, report, runner, spec, stats


def _row(label: str, tau: int, seed: int, top1: float, **extra) -> dict:
    row = {"grid": "g", "label": label, "method": label, "tau": tau, "seed": seed, "bits_per_weight": tau / 9,
           "bops": 1e6 * tau, "val_top1": top1, "val_top5": 90.0, "train_loss": 1.0, "wall_s": 10.0,
           "git_commit": "abc", "device": "cpu", "shared_hash": "s1", "run_hash": f"{label}-{tau}-{seed}",
           "finished_utc": "2026-11-28T00:00:00+00:00"}
    row.update(extra)
    return row


def test_csv_rows_are_appended_once_and_read_back(tmp_path):
    path = tmp_path / "results" / "grid.csv"
    assert ledger.read_rows(path) == []
    assert ledger.append_rows(path, [_row("topn", 5, 0, 50.0), _row("topn", 5, 1, 51.5)]) == 2
    # A second writer (a resumed grid, another machine's rows) adds only what is new.
    assert ledger.append_rows(path, [_row("topn", 5, 1, 99.0), _row("sparks", 5, 0, 52.25)]) == 1
    rows = ledger.read_rows(path)
    assert [(r["label"], r["seed"], r["val_top1"]) for r in rows] == [("topn", 0, 50.0), ("topn", 1, 51.5),
                                                                       ("sparks", 0, 52.25)]
    assert rows[0]["tau"] == 5 and math.isnan(rows[0]["val_loss"])  # ints parsed, empty cells are NaN
    assert ledger.finished_hashes(path) == {"topn-5-0", "topn-5-1", "sparks-5-0"}
    # Duplicate lines (e.g. from a union merge of two machines' files) count once, the first one.
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines, lines[1].replace(",50.0,", ",77.0,")]) + "\n")
    assert [r["val_top1"] for r in ledger.read_rows(path)] == [50.0, 51.5, 52.25]
    with open(path, newline="") as f:
        assert next(csv.reader(f)) == list(ledger.COLUMNS)


def test_csv_with_other_columns_is_refused(tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(UsageError, match="not a sparks grid CSV"):
        ledger.read_rows(path)
    with pytest.raises(UsageError, match="other columns"):
        ledger.append_rows(path, [_row("topn", 5, 0, 50.0)])


def test_paired_difference_matches_a_hand_computed_case():
    # Differences 1, 2, 3, 6: mean 3, sd sqrt(14/3), t(0.975, 3) = 3.182446 (tables: 3.182).
    a = {0: 71.0, 1: 72.0, 2: 73.0, 3: 76.0, 9: 80.0}  # seed 9 has no partner and is left out
    b = {0: 70.0, 1: 70.0, 2: 70.0, 3: 70.0, 5: 10.0}
    d = stats.paired_difference(a, b)
    half = 3.182446305 * math.sqrt(14 / 3) / 2
    assert d.n == 4 and d.seeds == (0, 1, 2, 3)
    assert d.mean == pytest.approx(3.0) and d.sd == pytest.approx(math.sqrt(14 / 3))
    assert (d.low, d.high) == (pytest.approx(3 - half, abs=1e-6), pytest.approx(3 + half, abs=1e-6))
    ref = scipy_stats.ttest_rel([71, 72, 73, 76], [70, 70, 70, 70])
    assert d.p_value == pytest.approx(ref.pvalue)
    one = stats.paired_difference({0: 2.0}, {0: 1.0})
    assert one.n == 1 and one.mean == 1.0 and math.isnan(one.low) and math.isnan(one.high)
    assert stats.mean_sd([1.0, 2.0, 4.0])[:2] == (pytest.approx(7 / 3), pytest.approx(math.sqrt(7 / 3)))


def test_generated_section_replaces_only_itself():
    text = "# Results\n\nhand text\n\n<!-- generated:begin g -->\nold\n<!-- generated:end g -->\n\nmore hand text\n"
    new = report.splice(text, "g", "new table")
    assert new == text.replace("old", "new table")
    assert report.splice(new, "g", "newer").count("generated:begin g") == 1
    other = report.splice(new, "h", "grid h")
    assert other.startswith(new.rstrip("\n")) and other.endswith("<!-- generated:end h -->\n")


def test_report_tables_and_paired_differences_from_a_csv(tmp_path):
    rows = [_row("topn", 5, s, 50.0 + s) for s in range(3)]
    rows += [_row("sparks", 5, s, 51.0 + s + 0.5 * (s == 2)) for s in range(3)]  # differences 1, 1, 1.5
    rows += [_row("sign", 9, s, 60.0) for s in range(3)]
    rows += [_row("topn", 5, 7, 10.0, shared_hash="old", finished_utc="2026-01-01")]  # older settings: left out
    path = tmp_path / "docs" / "results" / "grid.csv"
    ledger.append_rows(path, rows)
    doc = tmp_path / "docs" / "results.md"
    doc.write_text("# Results\n\nkept\n")
    block = report.write_report("g", path, doc, tmp_path / "docs" / "g", spec.DEFAULT_COMPARE)
    text = doc.read_text()
    assert text.startswith("# Results\n\nkept\n") and block in text
    assert "| topn | 5 | 0.556 | 5.0 | 3 | 51.00 ± 1.00 |" in block
    assert "| sign | 9 | 1.000 |" in block and "1 rows of older settings are left out" in block
    d = stats.paired_difference({0: 1.0, 1: 1.0, 2: 1.5}, {0: 0.0, 1: 0.0, 2: 0.0})
    assert f"| sparks − topn | 5 | 3 | +1.17 | [{d.low:+.2f}, {d.high:+.2f}] |" in block
    assert "| +1.0 | yes |" in block  # the target for sparks − topn, met on this made-up data
    assert (tmp_path / "docs" / "g_bits.png").stat().st_size > 0 and (tmp_path / "docs" / "g_bops.png").is_file()
    assert "](g_bits.png)" in block


def _write_cifar_fixture(root: Path, per_batch: int = 40) -> Path:
    """A tiny CIFAR-10 folder in the official python layout: class-coloured noise, 5 batches, no test batch."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(1, 6):
        labels = rng.integers(0, 10, per_batch)
        images = rng.integers(0, 128, (per_batch, 3072)) + 12 * labels[:, None]
        with open(folder / f"data_batch_{i}", "wb") as f:
            pickle.dump({b"data": images.astype(np.uint8), b"labels": [int(v) for v in labels]}, f)
    return root


def _grid_file(tmp_path: Path, data: Path) -> Path:
    grid = {"name": "tiny", "csv": "docs/results/tiny.csv", "doc": "docs/results.md", "plots": "docs/tiny",
            "runs_dir": "runs",
            "train": {"arch": "resnet18_cifar", "width": 0.0625, "dataset": "cifar10", "data": str(data),
                      "val_fraction": 0.2, "split_seed": 0, "epochs": 1, "subset": 128, "batch_size": 64,
                      "threads": 1, "workers": 0, "eval_test": False, "device": "cpu"},
            "step1": {"checkpoint": "step1/last.pt", "train": {"method": "float", "epochs": 1}},
            "taus": [4], "seeds": [0, 1], "methods": ["topn", "random"]}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(grid))
    return path


def test_grid_expansion_hashes_and_unknown_methods(tmp_path):
    path = _grid_file(tmp_path, tmp_path)
    raw = yaml.safe_load(path.read_text())
    raw["methods"] = ["sparks", "sign", {"label": "sparks_slow", "method": "sparks", "select_lr": 1e-3}, "nosuch"]
    path.write_text(yaml.safe_dump(raw))
    g = spec.load_grid(path)
    runs = spec.expand(g, {0: "d0", 1: "d0"})
    assert [(r.label, r.tau, r.seed) for r in runs] == [
        ("sparks", 4, 0), ("sparks", 4, 1), ("sign", 9, 0), ("sign", 9, 1), ("sparks_slow", 4, 0),
        ("sparks_slow", 4, 1), ("nosuch", 4, 0), ("nosuch", 4, 1)]
    assert len({r.run_hash for r in runs}) == len(runs) and len({r.shared_hash for r in runs}) == 1
    assert runs[4].config["select_lr"] == 1e-3 and runs[4].config["init_from"] == str(tmp_path / "step1/last.pt")
    # Operational settings (threads, data folder) do not change the identity; the step-1 checkpoint does.
    g.train["threads"], g.train["data"] = 2, "/elsewhere"
    assert [r.run_hash for r in spec.expand(g, {0: "d0", 1: "d0"})] == [r.run_hash for r in runs]
    assert spec.expand(g, {0: "d1", 1: "d1"})[0].run_hash != runs[0].run_hash
    assert [r.label for r in runner.select(runs, taus=[5])] == ["sign", "sign"]
    (tmp_path / "step1").mkdir()
    (tmp_path / "step1" / "last.pt").write_bytes(b"x")
    with pytest.raises(UsageError, match="'nosuch' is not registered"):
        runner.run_grid(g, log=lambda _: None)
    raw["train"]["seed"] = 3
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(UsageError, match="train.seed is set by the grid"):
        spec.load_grid(path)


def test_tiny_cifar10_grid_end_to_end_resumes(tmp_path, capsys, monkeypatch):
    from sparks.train import data as data_module

    split_seeds = []
    build = data_module.build_datasets

    def recording_build(*args, **kwargs):
        split_seeds.append(kwargs["seed"])
        return build(*args, **kwargs)

    monkeypatch.setattr(data_module, "build_datasets", recording_build)
    data = _write_cifar_fixture(tmp_path / "cifar")
    path = _grid_file(tmp_path, data)
    results = tmp_path / "docs" / "results" / "tiny.csv"
    # A grid run in parts, as when it is stopped and finished later: seed 0 in this process (--jobs 0; step 1 is
    # trained by the grid first), one run as a worker subprocess (the normal path; one only, as each process start
    # costs seconds), then the rest.
    assert cli_main(["sweep", str(path), "--jobs", "0", "--seeds", "0", "--no-report"]) == 0
    assert sorted(r["label"] for r in ledger.read_rows(results)) == ["random", "topn"]
    assert cli_main(["sweep", str(path), "--jobs", "2", "--seeds", "1", "--methods", "topn", "--no-report"]) == 0
    assert "epoch 1/1" in next((tmp_path / "runs").glob("topn_t4_s1_*/log.txt")).read_text()
    assert cli_main(["sweep", str(path), "--jobs", "0"]) == 0
    # Every in-process run (seeds 0 and 1, and step 1) held out seed 0's validation split (split_seed: 0).
    assert split_seeds == [0, 0, 0, 0]
    rows = ledger.read_rows(results)
    assert sorted((r["label"], r["tau"], r["seed"]) for r in rows) == [("random", 4, 0), ("random", 4, 1),
                                                                       ("topn", 4, 0), ("topn", 4, 1)]
    for r in rows:
        assert r["bits_per_weight"] == pytest.approx(4 / 9) and r["bops"] > 0 and 0 <= r["val_top1"] <= 100
        assert r["epochs"] == 1 and r["steps"] == 2 and len(r["shared_hash"]) == 12
    assert len({r["shared_hash"] for r in rows}) == 1
    doc = (tmp_path / "docs" / "results.md").read_text()
    assert "<!-- generated:begin tiny -->" in doc and "| random − topn | 4 | 2 |" in doc
    runs = sorted((tmp_path / "runs").iterdir())
    stamps = {p: (p / "last.pt").stat().st_mtime_ns for p in runs}
    before = results.read_text()
    capsys.readouterr()
    # A rerun trains nothing and appends nothing.
    assert cli_main(["sweep", str(path), "--jobs", "0", "--no-report"]) == 0
    assert "0 recorded, 4 skipped" in capsys.readouterr().out
    assert results.read_text() == before
    # A run that finished but was never recorded (stopped between the two) is recorded without training again.
    lines = before.splitlines()
    results.write_text("\n".join(lines[:-1]) + "\n")
    assert cli_main(["sweep", str(path), "--jobs", "0", "--no-report"]) == 0
    assert "1 recorded, 3 skipped" in capsys.readouterr().out
    after = results.read_text().splitlines()
    assert after[:-1] == lines[:-1] and after[-1].rsplit(",", 1)[0] == lines[-1].rsplit(",", 1)[0]
    assert {p: (p / "last.pt").stat().st_mtime_ns for p in runs} == stamps
    # Report only, from the CSV alone (the run folders are not needed); bad input is one line, exit code 2.
    assert cli_main(["sweep", str(path), "--report-only", "--runs-dir", str(tmp_path / "gone")]) == 0
    assert cli_main(["sweep", str(tmp_path / "missing.yaml")]) == 2
    assert "grid file" in capsys.readouterr().err


def test_a_diverged_run_exits_3_and_is_recorded_apart_from_failures(tmp_path, capsys, monkeypatch):
    import subprocess

    from sparks.experiments import worker
    from sparks.train.guard import EXIT_DIVERGED, TrainingDiverged

    def diverging(run_dir):
        raise TrainingDiverged("training diverged: train loss nan at epoch 1; last good checkpoint: none written yet")

    # The worker exits as `sparks train` does for a diverged run; other failures keep their codes.
    monkeypatch.setattr(worker, "run_one", diverging)
    assert worker.main([str(tmp_path)]) == EXIT_DIVERGED == 3
    assert "training diverged" in capsys.readouterr().err
    # The runner reads the worker's exit code: 3 is "diverged", any other non-zero code "failed".
    for code, status in ((0, "ok"), (EXIT_DIVERGED, "diverged"), (1, "failed"), (2, "failed")):
        monkeypatch.setattr(runner.subprocess, "run", lambda *a, code=code, **k: subprocess.CompletedProcess(a, code))
        assert runner._launch(tmp_path / "w", {"run_hash": "h", "config": {}}, None) == status
    monkeypatch.undo()
    # In a grid (in process here): topn diverges, random fails otherwise; both are reported, each in its own list.

    def fake_run_one(run_dir):
        if Path(run_dir).name.startswith("topn"):
            diverging(run_dir)
        raise RuntimeError("disk full")

    monkeypatch.setattr(runner, "run_one", fake_run_one)
    path = _grid_file(tmp_path, tmp_path)
    (tmp_path / "step1").mkdir()
    (tmp_path / "step1" / "last.pt").write_bytes(b"x")  # hashed only: no run trains here
    capsys.readouterr()
    assert cli_main(["sweep", str(path), "--jobs", "0", "--seeds", "0", "--no-report"]) == 1
    out = capsys.readouterr().out
    assert "0 recorded, 0 skipped, 1 diverged, 1 failed" in out
    assert "  diverged: topn τ=4 seed=0" in out and "  failed: random τ=4 seed=0" in out
    assert "TrainingDiverged: training diverged" in next((tmp_path / "runs").glob("topn_*/log.txt")).read_text()
