"""The fuzz harness in CI: 2,000 mutated .sparks files and 500 mutated checkpoints, each loaded in a worker
subprocess under a 3 GiB address-space limit and a timeout; every one must give the one error type or load and run
finitely (docs/reliability.md). Two workers, fixed seeds; ~1 minute of CPU in all."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sparks.fuzz import harness, mutate


def _check(result: dict, count: int) -> None:
    assert result["count"] == count
    assert result["failures"] == [], result["failures"][:5]
    assert set(result["outcomes"]) <= set(harness.GOOD)
    assert 0 < result["peak_rss_bytes"] < result["memory_limit_bytes"]
    # the mutations reach past the checksum: re-signed files load (and run) as well as fail validation
    assert result["outcomes"].get("ok", 0) >= count // 20 and result["outcomes"]["error"] >= count // 2


def test_fuzz_sparks_files():
    result = harness.run_campaign("sparks", 2000, seed=0, workers=2)
    _check(result, 2000)
    kinds = {key.split(":")[0] for key in result["by_mutation"]}
    assert {"bitflip", "truncate", "insert", "header_length", "header_json", "table", "model_args", "huge_sizes",
            "tensor_values", "blob_length", "table_bytes", "sparse_giant"} <= kinds


def test_fuzz_checkpoints():
    result = harness.run_campaign("checkpoint", 500, seed=0, workers=2)
    _check(result, 500)
    kinds = {key.split(":")[0] for key in result["by_mutation"]}
    assert {"bitflip", "truncate", "zip_field", "deflated", "sparse_giant", "model_args", "field", "rng",
            "optimizer", "model_tensor"} <= kinds


def test_mutations_are_reproducible(tmp_path: Path):
    harness.make_seeds(tmp_path)
    seeds = [mutate.SparksSeed(p.read_bytes()) for p in sorted(tmp_path.glob("seed*.sparks"))]
    cases = [mutate.sparks_case(seeds, 5, i) for i in range(40)]
    assert cases == [mutate.sparks_case(seeds, 5, i) for i in range(40)]
    assert len({c[1] for c in cases}) > 30  # and different from each other
    assert all(c[1] != s.data for c in cases for s in seeds if c[0] != "sparse_giant")
    rng = np.random.default_rng(0)
    assert mutate.mutate_sparks(seeds[0], rng)[1] != seeds[0].data
