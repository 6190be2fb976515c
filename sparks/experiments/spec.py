"""Grid specs: a YAML file of shared training settings, a step-1 checkpoint and lists of methods × τ × seeds,
expanded into one :class:`RunSpec` per step-2 training run, each identified by a settings hash.

The hashes cover what the grid file says (its shared settings, the method entry, τ, seed, ``version``) and the
content of the step-1 checkpoint, not the code's defaults: the code is recorded per row as its git commit. Change
``version`` in the grid file to make every run new (e.g. after a code change that alters results).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sparks.errors import UsageError, first_line
from sparks.train.config import option_names

# TrainConfig fields that say where and how a run executes, not what it trains: not part of any hash.
OPERATIONAL = frozenset({"out", "resume", "overwrite", "workers", "device", "threads", "progress", "stop_after",
                         "eval_test", "data", "init_from"})
# Methods that ignore τ (1 bit, or real weights): run once per seed, at τ = 9.
ONE_TAU_METHODS = frozenset({"sign", "float"})
GRID_KEYS = frozenset({"name", "version", "csv", "doc", "plots", "runs_dir", "train", "step1", "taus", "seeds",
                       "methods", "compare", "notes"})
DEFAULT_COMPARE = ({"a": "sparks", "b": "topn", "target": 1.0}, {"a": "sparks", "b": "kmedoids", "target": 0.5},
                   {"a": "sparks", "b": "snn", "target": 0.5})


@dataclass(frozen=True)
class MethodEntry:
    """One entry of ``methods:``: a label (the name in tables), the registered weight method, and per-method
    training options (``method_args`` or any other TrainConfig field, e.g. ``select_lr``)."""

    label: str
    method: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunSpec:
    """One step-2 run: its identity (label, τ, seed, hashes) and the full TrainConfig overrides it trains with."""

    grid: str
    label: str
    method: str
    tau: int
    seed: int
    config: dict[str, Any]
    run_hash: str
    shared_hash: str

    @property
    def dirname(self) -> str:
        return f"{self.label}_t{self.tau}_s{self.seed}_{self.run_hash[:8]}"


@dataclass
class GridSpec:
    """A parsed grid file; relative paths are resolved against the file's folder."""

    name: str
    path: Path
    csv: Path
    doc: Path
    plots: Path
    runs_dir: Path
    train: dict[str, Any]
    step1_checkpoint: str
    step1_train: dict[str, Any] | None
    taus: list[int]
    seeds: list[int]
    methods: list[MethodEntry]
    compare: list[dict[str, Any]]
    version: str = "1"


def digest(obj: Any) -> str:
    """A short stable hash (sha256 of canonical JSON, 12 hex digits)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes (12 hex digits): identifies a step-1 checkpoint whatever its path."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:12]


def _method_entry(item: Any, where: str) -> MethodEntry:
    if isinstance(item, str):
        return MethodEntry(item, item)
    if not isinstance(item, dict) or not ("method" in item or "label" in item):
        raise UsageError(f"{where}: a method is a name or a mapping with 'method' (and optionally 'label')")
    item = dict(item)
    method = str(item.pop("method", item.get("label")))
    label = str(item.pop("label", method))
    options = option_names(item, f"{where} ({label})")
    for key in ("tau", "seed", "method", "init_from", "out"):
        if key in options:
            raise UsageError(f"{where} ({label}): {key!r} is set by the grid, not per method")
    return MethodEntry(label, method, options)


def _int_list(raw: Any, key: str, path: Path) -> list[int]:
    values = raw if isinstance(raw, list) else [raw]
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise UsageError(f"grid file {path}: {key} must be a non-empty list of integers")
    return list(values)


def load_grid(path: str | Path, overrides: dict[str, Any] | None = None) -> GridSpec:
    """Parse and check a grid file. ``overrides``: csv, runs_dir, step1 (checkpoint path), data, device, doc (the
    plots then go beside it)."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"grid file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise UsageError(f"grid file {path} is not valid YAML: {first_line(err)}") from None
    if not isinstance(raw, dict):
        raise UsageError(f"grid file {path} must be a mapping")
    unknown = sorted(set(raw) - GRID_KEYS)
    if unknown:
        raise UsageError(f"grid file {path}: unknown key {unknown[0]!r} (known: {', '.join(sorted(GRID_KEYS))})")
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    base = path.resolve().parent

    def resolve(value: Any) -> Path:
        p = Path(str(value)).expanduser()
        return Path(os.path.normpath(p if p.is_absolute() else base / p))

    name = str(raw.get("name") or path.stem)
    train = option_names(dict(raw.get("train") or {}), f"grid file {path}: train")
    for key in ("tau", "seed", "method", "init_from", "out", "resume"):
        if key in train:
            raise UsageError(f"grid file {path}: train.{key} is set by the grid, not shared")
    for key in ("data", "device"):
        if key in overrides:
            train[key] = overrides[key]
    if train.get("data") is not None:
        train["data"] = str(resolve(train["data"]))
    step1 = raw.get("step1") or {}
    if isinstance(step1, str):
        step1 = {"checkpoint": step1}
    checkpoint = overrides.get("step1", step1.get("checkpoint"))
    if not checkpoint:
        raise UsageError(f"grid file {path}: step1.checkpoint (the shared step-1 checkpoint) is required")
    step1_train = step1.get("train")
    if step1_train is not None:
        step1_train = option_names(dict(step1_train), f"grid file {path}: step1.train")
    methods = [_method_entry(m, f"grid file {path}: methods") for m in (raw.get("methods") or [])]
    if not methods:
        raise UsageError(f"grid file {path}: methods must list at least one method")
    labels = [m.label for m in methods]
    if len(set(labels)) != len(labels):
        raise UsageError(f"grid file {path}: duplicate method label in {labels}")
    compare = raw.get("compare", list(DEFAULT_COMPARE))
    if not isinstance(compare, list) or not all(isinstance(c, dict) and {"a", "b"} <= set(c) for c in compare):
        raise UsageError(f"grid file {path}: compare must be a list of {{a: LABEL, b: LABEL, target: POINTS}}")
    return GridSpec(
        name=name, path=path, csv=resolve(overrides.get("csv", raw.get("csv", f"{name}.csv"))),
        doc=resolve(overrides.get("doc", raw.get("doc", "results.md"))),
        plots=resolve(raw.get("plots", name)) if "doc" not in overrides
        else resolve(overrides["doc"]).parent / Path(str(raw.get("plots", name))).name,
        runs_dir=resolve(overrides.get("runs_dir", raw.get("runs_dir", f"runs_{name}"))), train=train,
        step1_checkpoint=str(checkpoint if Path(str(checkpoint)).is_absolute() else resolve(checkpoint)),
        step1_train=step1_train, taus=_int_list(raw.get("taus", [5]), "taus", path),
        seeds=_int_list(raw.get("seeds", [0]), "seeds", path), methods=methods, compare=compare,
        version=str(raw.get("version", "1")))


def step1_path(spec: GridSpec, seed: int) -> Path:
    """The step-1 checkpoint a run of ``seed`` starts from (``{seed}`` in the path is replaced)."""
    return Path(spec.step1_checkpoint.format(seed=seed))


def _hashed(options: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in sorted(options.items()) if k not in OPERATIONAL}


def expand(spec: GridSpec, step1_digests: dict[int, str]) -> list[RunSpec]:
    """Every (method, τ, seed) run of the grid, in the file's order; sign/float once per seed at τ = 9. Method
    names are not looked up here (a grid may name methods this checkout lacks; :func:`run_grid` checks the runs it
    is asked to run).

    ``step1_digests``: seed → :func:`file_digest` of that seed's step-1 checkpoint (part of every hash).
    """
    from sparks.core.methods import check_tau

    shared = {"grid_version": spec.version, "train": _hashed(spec.train), "step1": sorted(set(step1_digests.values()))}
    runs = []
    for entry in spec.methods:
        taus = [9] if entry.method in ONE_TAU_METHODS else spec.taus
        for tau in taus:
            check_tau(tau)
            for seed in spec.seeds:
                config = {**spec.train, **entry.options, "method": entry.method, "tau": tau, "seed": seed,
                          "init_from": str(step1_path(spec, seed))}
                identity = {**shared, "step1": step1_digests[seed], "label": entry.label, "run": _hashed(config)}
                runs.append(RunSpec(spec.name, entry.label, entry.method, tau, seed, config, digest(identity),
                                    digest(shared)))
    return runs
