"""The README runs as written: its Python snippet executes, and every `sparks ...` command in it parses."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest

from sparks.cli import build_parser

README = Path(__file__).resolve().parents[1] / "README.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)


def commands() -> list[str]:
    """Every `sparks ...` line of the README's bash blocks, continuation lines joined, comments dropped."""
    out = []
    for block in blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("sparks "):
                out.append(line)
    return out


def test_python_snippet_runs_as_written(tmp_path, monkeypatch, capsys):
    snippets = blocks("python")
    assert len(snippets) == 1
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(snippets[0], "README.md", "exec"), namespace)  # noqa: S102 - our own README
    assert (tmp_path / "model.sparks").is_file()
    logits = namespace["logits"]
    assert logits.shape == (2, 10) and np.isfinite(logits).all()
    # what it printed: τ/9 bits per binary weight
    assert f"{5 / 9}" in capsys.readouterr().out


def test_every_command_parses():
    found = commands()
    assert {c.split()[1] for c in found} >= {"models", "train", "eval", "summary", "analyze", "export", "run",
                                              "bench"}
    parser = build_parser()
    for command in found:
        try:
            parser.parse_args(shlex.split(command)[1:])
        except SystemExit:
            pytest.fail(f"README command does not parse: {command}")


def test_no_claim_that_the_file_size_is_the_bit_count():
    text = " ".join(README.read_text().split())
    assert "a file whose size is the bit count" not in text
