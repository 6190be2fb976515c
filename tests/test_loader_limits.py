"""Config and data loaders check sizes before they allocate: gzip bombs, oversized configs, huge IDX shapes."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from sparks.errors import UsageError
from sparks.limits import Limits
from sparks.train.config import load_yaml
from sparks.train.data import read_idx


def _idx(shape: tuple[int, ...], data: bytes) -> bytes:
    return (0x803 if len(shape) == 3 else 0x801).to_bytes(4, "big") + b"".join(
        d.to_bytes(4, "big") for d in shape) + data


def test_idx_reads_back_and_refuses_bombs_and_lies(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / "ok.gz"
    path.write_bytes(gzip.compress(_idx((2, 3, 4), images.tobytes())))
    assert np.array_equal(read_idx(path, 3), images)
    bomb = tmp_path / "bomb.gz"
    bomb.write_bytes(gzip.compress(_idx((1000, 100, 100), bytes(10_000_000))))
    assert bomb.stat().st_size < 100_000
    with pytest.raises(UsageError, match="max_data_bytes"):
        read_idx(bomb, 3, Limits(max_data_bytes=1_000_000))
    liar = tmp_path / "liar"
    liar.write_bytes(_idx((2**32 - 1, 2**32 - 1, 2**32 - 1), b"\0" * 27))  # product overflows int64
    with pytest.raises(UsageError, match="truncated or corrupt"):
        read_idx(liar, 3)


def test_config_over_the_size_limit_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "c.yaml"
    path.write_text("epochs: 1\n" + "# padding\n" * 200)
    assert load_yaml(path) == {"epochs": 1}
    monkeypatch.setenv("SPARKS_LIMITS", "max_config_bytes=100")
    with pytest.raises(UsageError, match="max_config_bytes"):
        load_yaml(path)
    monkeypatch.setenv("SPARKS_LIMITS", "max_config_bytes=-1")
    with pytest.raises(UsageError, match="SPARKS_LIMITS"):
        load_yaml(path)
    monkeypatch.delenv("SPARKS_LIMITS")
    path.write_text("[" * 100_000)
    with pytest.raises(UsageError, match="not valid YAML"):
        load_yaml(path)
