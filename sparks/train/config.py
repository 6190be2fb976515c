"""The training configuration: one flat dataclass whose fields are the ``sparks train`` options.

Each field carries its one-line help, so the CLI, the YAML ``--config`` file and ``DIR/config.yaml`` share one
definition. Resolution order: field defaults ← YAML file ← command-line flags; an unknown YAML key is an error.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sparks.errors import UsageError, first_line
from sparks.limits import check_size, resolve


def _opt(default: Any, help: str, **extra: Any) -> Any:
    return field(default=default, metadata={"help": help, **extra})


@dataclass
class TrainConfig:
    """Everything one training run needs (plain types only: it is stored in checkpoints and config.yaml)."""

    arch: str = _opt("resnet18_cifar", "registered architecture (see `sparks models`)")
    width: float = _opt(1.0, "channel width multiplier")
    dataset: str = _opt("fashion-mnist", "dataset: fashion-mnist, cifar10 or imagefolder")
    data: str | None = _opt(None, "dataset directory (default: the dataset's standard location)")
    tau: int = _opt(5, "bits per kernel index, 1..9 (tau/9 bits per weight)")
    method: str = _opt("sparks", "weight method: float (step 1), sparks, sign, snn, topn or random")
    method_args: dict = _opt(None, "extra weight-method options as KEY=VALUE (e.g. sinkhorn_iters=10)", nargs="*")
    real_activations: bool = _opt(False, "keep activations real-valued (for real-valued teachers)")
    epochs: int = _opt(10, "number of epochs")
    stop_after: int | None = _opt(None, "stop after this many epochs of this invocation (continue with --resume)")
    batch_size: int = _opt(128, "batch size per process")
    lr: float = _opt(1e-3, "Adam learning rate")
    select_lr: float = _opt(1e-2, "Adam learning rate of the learned selections (Sparks scores, SNN proxies)")
    weight_decay: float | None = _opt(None, "weight decay on conv/FC weights (default 1e-5 for float, 0 for sub-bit)")
    schedule: str = _opt("linear", "learning-rate schedule per step: linear (to 0) or cosine",
                         choices=("linear", "cosine"))
    temp_start: float = _opt(1.0, "Sparks Sinkhorn temperature at the first step")
    temp_end: float = _opt(0.05, "Sparks Sinkhorn temperature at the last step")
    temp_schedule: str = _opt("exp", "temperature annealing: exp, linear or constant",
                              choices=("exp", "linear", "constant"))
    teacher: str | None = _opt(None, "checkpoint of a teacher model for distillation (KL to its softmax)")
    distill_alpha: float = _opt(0.0, "with --teacher: loss = alpha*CE + (1-alpha)*KL")
    init_from: str | None = _opt(None, "step-1 checkpoint whose latent weights initialise this model")
    out: str | None = _opt(None, "output directory (last.pt, best.pt, metrics.jsonl, config.yaml, curves.png)")
    resume: str | None = _opt(None, "resume from OUT/last.pt (no value) or from the given checkpoint", nargs="?",
                              const="auto")
    overwrite: bool = _opt(False, "allow starting a fresh run in an --out that already holds one")
    val_fraction: float = _opt(0.0, "fraction of the training set held out for validation")
    subset: int | None = _opt(None, "use only the first N training (and test) examples")
    image_size: int = _opt(224, "input size for imagefolder datasets")
    augment: bool = _opt(True, "training augmentation (--no-augment to disable)")
    seed: int = _opt(0, "random seed (python, numpy, torch; offset per rank)")
    workers: int | None = _opt(None, "data-loader worker processes (default: the data module's choice)")
    device: str = _opt("auto", "cpu, cuda, cuda:N or auto")
    threads: int | None = _opt(None, "CPU threads per process (torch.set_num_threads; 1 is fastest on a busy machine)")
    amp: str = _opt("auto", "mixed precision on CUDA: auto (bf16), bf16, fp16 or off",
                    choices=("auto", "bf16", "fp16", "off"))
    eval_test: bool = _opt(True, "evaluate the test split after every epoch (--no-eval-test to skip)")
    progress: bool = _opt(True, "tqdm progress bars when attached to a terminal (--no-progress to hide)")

    def resolved_weight_decay(self) -> float:
        if self.weight_decay is not None:
            return self.weight_decay
        return 1e-5 if self.method == "float" else 0.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def parse_method_args(items: list[str] | dict | None) -> dict[str, Any] | None:
    """``["k=v", ...]`` → dict, values parsed as YAML scalars (ints, floats, bools, strings)."""
    if items is None or isinstance(items, dict):
        return items
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--method-args expects KEY=VALUE, got {item!r}")
        out[key] = yaml.safe_load(value)
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config whose keys are option names (``batch-size`` or ``batch_size``); unknown keys raise."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"config file {path} does not exist")
    check_size(f"config file {path}: size", path.stat().st_size, resolve().max_config_bytes, "max_config_bytes",
               UsageError)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError, ValueError) as err:
        raise UsageError(f"config file {path} is not valid YAML: {first_line(err)[:200]}") from None
    if not isinstance(raw, dict):
        raise UsageError(f"config file {path} must be a mapping of option names to values")
    out = {}
    for key, value in raw.items():
        name = str(key).replace("-", "_")
        if name not in FIELDS:
            raise UsageError(f"unknown key {key!r} in config file {path}")
        out[name] = value
    return out


def make_config(overrides: dict[str, Any]) -> TrainConfig:
    """A :class:`TrainConfig` from field overrides (unknown names raise)."""
    for name in overrides:
        if name not in FIELDS:
            raise UsageError(f"unknown training option {name!r}")
    values = dict(overrides)
    values["method_args"] = parse_method_args(values.get("method_args"))
    return TrainConfig(**values)


def save_yaml(config: TrainConfig, path: Path) -> None:
    """Write the resolved config (atomically) so a run can be repeated with ``--config``."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    tmp.replace(path)
