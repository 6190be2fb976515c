"""The training configuration: one flat dataclass whose fields are the ``sparks train`` options.

Each field carries its one-line help, so the CLI, the YAML ``--config`` file and ``DIR/config.yaml`` share one
definition. Resolution order: field defaults ← YAML file ← command-line flags; an unknown YAML key is an error.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import tempfile
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
    data: str | None = _opt(None, "dataset directory", default_text="the dataset's standard location")
    tau: int = _opt(None, "bits per kernel index, 1..9 (tau/9 bits per weight); sign and float are always 9",
                    default_text="5, or 9 for sign and float")
    method: str = _opt("sparks", "weight method: float (step 1), sparks, sign, snn, topn or random")
    method_args: dict = _opt(None, "extra weight-method options as KEY=VALUE (e.g. sinkhorn_iters=10)", nargs="*")
    real_activations: bool = _opt(False, "keep activations real-valued (for real-valued teachers)")
    epochs: int = _opt(10, "number of epochs")
    stop_after: int | None = _opt(None, "stop after this many epochs of this invocation (continue with --resume)")
    batch_size: int = _opt(128, "batch size per process")
    lr: float = _opt(1e-3, "Adam learning rate")
    select_lr: float = _opt(1e-2, "Adam learning rate of the learned selections (Sparks scores, SNN proxies)")
    weight_decay: float | None = _opt(None, "weight decay on conv/FC weights",
                                      default_text="1e-5 for float, 0 for sub-bit")
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
    split_seed: int | None = _opt(None, "seed of the validation split; fix it so that runs of several seeds share "
                                  "one split, the one step 1 trained on", default_text="--seed")
    subset: int | None = _opt(None, "use only the first N training (and test) examples")
    image_size: int = _opt(224, "input size for imagefolder datasets")
    augment: bool = _opt(True, "training augmentation (--no-augment to disable)")
    seed: int = _opt(0, "random seed (python, numpy, torch; offset per rank)")
    workers: int | None = _opt(None, "data-loader worker processes", default_text="the data module's choice")
    device: str = _opt("auto", "cpu, cuda, cuda:N or auto")
    threads: int | None = _opt(None, "CPU threads per process: a positive number or auto (all cores this process may "
                               "use; 1 is fastest on a busy machine)", default_text="auto")
    amp: str = _opt("auto", "mixed precision: auto (bf16 on CUDA, off on CPU), bf16, fp16 (CUDA) or off; sub-bit "
                    "convolutions stay fp32 (exact)", choices=("auto", "bf16", "fp16", "off"))
    channels_last: bool = _opt(False, "channels-last memory format for the model and its inputs (tensor cores)")
    compile: bool = _opt(False, "torch.compile the training model (CUDA; graph breaks at the Hungarian read-off)")
    data_on_device: str = _opt("auto", "keep an in-memory training set on the device and augment it there: auto "
                               "(on with CUDA), on or off", choices=("auto", "on", "off"))
    eval_test: bool = _opt(True, "evaluate the test split after every epoch (--no-eval-test to skip)")
    progress: bool = _opt(True, "tqdm progress bars when attached to a terminal (--no-progress to hide)")
    diverge_patience: int = _opt(2, "stop after this many divergent epochs in a row (exploded loss, accuracy back "
                                 "at chance), keeping the last good checkpoint; 0 turns the guard off")
    diverge_factor: float = _opt(10.0, "an epoch's train loss above this many times the first epoch's (at most "
                                 "ln(classes)) counts as divergent; 0 turns the loss check off")

    def __post_init__(self) -> None:
        validate(self)

    def resolved_weight_decay(self) -> float:
        if self.weight_decay is not None:
            return self.weight_decay
        return 1e-5 if self.method == "float" else 0.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
MAX_SEED = 2**32 - 1
MAX_IMAGE_SIZE = 4096


def default_text(name: str) -> str | None:
    """What the help text shows as the default of option ``name`` (``None``: nothing to show)."""
    f = FIELDS[name]
    if "default_text" in f.metadata:
        return f.metadata["default_text"]
    return None if f.default in (None, False) else str(f.default)


def resolve_tau(method: str, tau: int | None) -> int:
    """:func:`sparks.models.args.resolve_tau` with its ``ValueError`` as a one-line ``UsageError``."""
    from sparks.models.args import resolve_tau as resolve

    try:
        return resolve(method, tau, flags=("--tau", "--method"))
    except ValueError as err:
        raise UsageError(first_line(err)) from None


def method_arg_names(method: str) -> dict[str, Any]:
    """The keyword arguments weight method ``method`` takes (its constructors' named parameters, minus ``tau``),
    each with its default (``inspect.Parameter.empty`` if none)."""
    from sparks.core.methods import WeightMethod, get_method

    names: dict[str, Any] = {}
    for cls in get_method(method).__mro__:
        if not (isinstance(cls, type) and issubclass(cls, WeightMethod)) or "__init__" not in vars(cls):
            continue
        for p in inspect.signature(cls.__init__).parameters.values():
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in ("self", "tau"):
                names.setdefault(p.name, p.default)
    return names


def _try_method(method: str, tau: int, options: dict[str, Any]) -> None:
    """Build one weight method with ``options`` so that a bad value fails now, in one line, not mid-run."""
    from sparks.core.methods import get_method

    try:
        get_method(method)(tau=tau, **options)
    except (TypeError, ValueError) as err:
        raise UsageError(f"--method-args: {first_line(err)}") from None


def _number(cfg: TrainConfig, name: str, *, integer: bool, low: float, high: float = math.inf,
            low_open: bool = False, optional: bool = False) -> None:
    """Check (and normalise int → float) field ``name``: the type, finiteness and the range; one-line UsageError."""
    value = getattr(cfg, name)
    flag = "--" + name.replace("_", "-")
    if value is None and optional:
        return
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, int if integer else int | float) or not math.isfinite(value):
        raise UsageError(f"{flag} must be {kind if integer else 'a finite number'}, got {value!r}")
    ok = (value > low if low_open else value >= low) and value <= high
    if not ok:
        fmt = (lambda v: f"{v:d}") if integer else (lambda v: f"{v:g}")
        if high == math.inf:
            allowed = f"{'>' if low_open else '>='} {fmt(low)}"
        else:
            allowed = f"in {'(' if low_open else '['}{fmt(low)}, {fmt(high)}]"
        raise UsageError(f"{flag} must be {kind} {allowed}, got {value!r}")
    if not integer:
        setattr(cfg, name, float(value))


def validate(cfg: TrainConfig) -> None:
    """Check every value of ``cfg`` (types, ranges, finiteness, names, weight-method options, contradictions) and
    resolve ``tau``; raises a one-line ``UsageError`` naming the option and the allowed values. Touches no file."""
    from sparks.models import list_models
    from sparks.models.args import MAX_WIDTH
    from sparks.train.data import DATASETS

    for name in ("arch", "dataset", "method", "schedule", "temp_schedule", "amp", "device"):
        if not isinstance(getattr(cfg, name), str):
            raise UsageError(f"--{name.replace('_', '-')} must be a string, got {getattr(cfg, name)!r}")
    for name in ("data", "teacher", "init_from", "out", "resume"):
        if getattr(cfg, name) is not None and not isinstance(getattr(cfg, name), str):
            raise UsageError(f"--{name.replace('_', '-')} must be a string, got {getattr(cfg, name)!r}")
    for name in ("real_activations", "overwrite", "augment", "eval_test", "progress"):
        if not isinstance(getattr(cfg, name), bool):
            raise UsageError(f"--{name.replace('_', '-')} must be true or false, got {getattr(cfg, name)!r}")
    if cfg.arch not in list_models():
        raise UsageError(f"unknown architecture {cfg.arch!r}; known: {', '.join(list_models())}")
    if cfg.dataset not in DATASETS:
        raise UsageError(f"unknown dataset {cfg.dataset!r}; known: {', '.join(DATASETS)}")
    for name in ("schedule", "temp_schedule", "amp"):
        choices = FIELDS[name].metadata["choices"]
        if getattr(cfg, name) not in choices:
            raise UsageError(f"--{name.replace('_', '-')} must be one of {', '.join(choices)}, "
                             f"got {getattr(cfg, name)!r}")
    cfg.tau = resolve_tau(cfg.method, cfg.tau)
    if cfg.method_args is not None:
        if not isinstance(cfg.method_args, dict) or not all(isinstance(k, str) for k in cfg.method_args):
            raise UsageError(f"--method-args must be KEY=VALUE pairs, got {cfg.method_args!r}")
        allowed = method_arg_names(cfg.method)
        unknown = sorted(set(cfg.method_args) - set(allowed))
        if unknown:
            raise UsageError(f"--method-args: method {cfg.method!r} takes no option {unknown[0]!r}; it takes: "
                             f"{', '.join(sorted(allowed)) or 'none'}")
        for key, value in cfg.method_args.items():
            default = allowed[key]
            kind = type(default) if isinstance(default, bool | int | float | str) else None
            fits = kind is None or (isinstance(value, kind) and (kind is bool or not isinstance(value, bool))) or (
                kind is float and isinstance(value, int) and not isinstance(value, bool))
            if not fits or (isinstance(value, float) and not math.isfinite(value)):
                raise UsageError(f"--method-args {key} must be a finite {kind.__name__} like its default {default!r}, "
                                 f"got {value!r}")
        _try_method(cfg.method, cfg.tau, cfg.method_args)
    if cfg.threads == "auto":
        cfg.threads = None
    _number(cfg, "width", integer=False, low=0, high=MAX_WIDTH, low_open=True)
    _number(cfg, "epochs", integer=True, low=1)
    _number(cfg, "stop_after", integer=True, low=1, optional=True)
    _number(cfg, "batch_size", integer=True, low=1)
    _number(cfg, "lr", integer=False, low=0, low_open=True)
    _number(cfg, "select_lr", integer=False, low=0)
    _number(cfg, "weight_decay", integer=False, low=0, optional=True)
    _number(cfg, "temp_start", integer=False, low=0, low_open=True)
    _number(cfg, "temp_end", integer=False, low=0, low_open=True)
    _number(cfg, "distill_alpha", integer=False, low=0, high=1)
    _number(cfg, "val_fraction", integer=False, low=0, high=1)
    if cfg.val_fraction >= 1:
        raise UsageError(f"--val-fraction must be a number in [0, 1), got {cfg.val_fraction!r}")
    _number(cfg, "subset", integer=True, low=1, optional=True)
    _number(cfg, "image_size", integer=True, low=1, high=MAX_IMAGE_SIZE)
    _number(cfg, "seed", integer=True, low=0, high=MAX_SEED)
    _number(cfg, "workers", integer=True, low=0, optional=True)
    _number(cfg, "threads", integer=True, low=1, optional=True)


SPLIT_KEYS = ("dataset", "val_fraction", "seed", "subset")


def split_record(config: dict[str, Any] | None) -> dict[str, Any] | None:
    """The data split a run trained on (dataset, val_fraction, seed, subset) from its stored config dict, or ``None``
    when the config does not say; ``sparks export`` stores it as ``metadata["training"]["data"]``."""
    if not isinstance(config, dict) or not all(key in config for key in SPLIT_KEYS):
        return None
    record = {key: config[key] for key in SPLIT_KEYS}
    if config.get("split_seed") is not None:  # a run whose val split was drawn with its own seed
        record["seed"] = config["split_seed"]
    return record


def check_output_dir(out: str | Path, flag: str = "--out", shown: str | None = None) -> None:
    """``UsageError`` unless ``out`` is a directory, or can be created, that this process may write into (tried with
    a temporary directory: ``os.access`` says yes to root even on read-only or virtual file systems). ``shown`` is
    the value to name in the message (default ``out``)."""
    path = Path(out)
    shown = str(path) if shown is None else shown
    if path.exists() and not path.is_dir():
        raise UsageError(f"{flag} {shown} exists and is not a directory")
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise UsageError(f"{flag} {shown}: {probe} is not a directory")
    try:
        tempfile.TemporaryDirectory(dir=probe, prefix=".sparks-probe-").cleanup()
    except OSError as err:
        raise UsageError(f"{flag} {shown}: cannot write into {probe} ({err.strerror or err})") from None


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
    return option_names(raw, f"config file {path}")


def option_names(options: dict[Any, Any], where: str) -> dict[str, Any]:
    """``options`` keyed by TrainConfig field names (``--lr-x`` spellings accepted); an unknown key is a
    UsageError naming ``where``."""
    out = {}
    for key, value in options.items():
        name = str(key).replace("-", "_")
        if name not in FIELDS:
            raise UsageError(f"{where}: unknown training option {key!r}")
        out[name] = value
    return out


def make_config(overrides: dict[str, Any]) -> TrainConfig:
    """A :class:`TrainConfig` from field overrides (unknown names raise)."""
    for name in overrides:
        if name not in FIELDS:
            raise UsageError(f"unknown training option {name!r}")
    values = dict(overrides)
    values["method_args"] = parse_method_args(values.get("method_args"))
    return TrainConfig(**values)  # validated in __post_init__


def save_yaml(config: TrainConfig, path: Path) -> None:
    """Write the resolved config (atomically) so a run can be repeated with ``--config``."""
    from sparks.atomic import atomic_path

    with atomic_path(path) as tmp:
        Path(tmp).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
