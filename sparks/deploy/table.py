"""The layer table of a ``.sparks`` file: validation and the tensors it implies (no torch import here).

:func:`validate` checks a layer table (the JSON document) and its tensors completely: every field's type and range
against :class:`sparks.limits.Limits`, shapes propagated op by op from the input, the described model's size, and
every tensor's presence, dtype, shape and values. :func:`tensor_layout` lists the tensors a table implies, in file
order, before any tensor data is touched, so a reader can check the file's declared sizes first.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from sparks.deploy.bits import CODE_BITS, FULL_CODEBOOK, index_bits, packed_nbytes, unpack_bits
from sparks.errors import SparksFormatError
from sparks.limits import Limits, check_size, resolve

FORMAT_VERSION = 2
REEXPORT_HINT = "re-export it with `sparks export --checkpoint CKPT --out FILE`"
MAX_KERNEL = 15
MAX_STRIDE = 16
REAL_DTYPES = ("float32", "float16")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def check_version(version: object) -> None:
    """Raise :class:`SparksFormatError` naming the fix unless ``version`` is the one this reader knows."""
    if isinstance(version, bool) or not isinstance(version, int):
        raise SparksFormatError(f"missing or invalid format_version {version!r:.40}; {REEXPORT_HINT}")
    if version != FORMAT_VERSION:
        raise SparksFormatError(f"format version {version} is not supported by this sparks (reads version "
                                f"{FORMAT_VERSION}); {REEXPORT_HINT}")


def _int(d: dict, key: str, lo: int, hi: int, where: str, limit: str = "") -> int:
    v = d.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        over = limit and isinstance(v, int) and v > hi
        hint = f" (over Limits.{limit}: raise it if this is intended)" if over else ""
        raise SparksFormatError(f"{where}: {key!r} must be an int in {lo}..{hi}, got {v!r:.60}{hint}")
    return v


def _pair(d: dict, key: str, lo: int, hi: int, where: str) -> tuple[int, int]:
    v = d.get(key)
    if not (isinstance(v, list) and len(v) == 2):
        raise SparksFormatError(f"{where}: {key!r} must be a list of 2 ints, got {v!r:.60}")
    return _int({"0": v[0]}, "0", lo, hi, f"{where} {key}"), _int({"1": v[1]}, "1", lo, hi, f"{where} {key}")


def _bool(d: dict, key: str, where: str) -> bool:
    v = d.get(key)
    if not isinstance(v, bool):
        raise SparksFormatError(f"{where}: {key!r} must be true/false, got {v!r:.60}")
    return v


def _str(d: dict, key: str, where: str, limit: int = 200) -> str:
    v = d.get(key)
    if not isinstance(v, str) or not 0 < len(v) <= limit:
        raise SparksFormatError(f"{where}: {key!r} must be a non-empty string, got {v!r:.60}")
    return v


def _window_out(size: int, k: int, s: int, p: int, ceil_mode: bool, where: str) -> int:
    span = size + 2 * p - k
    if span < 0:
        raise SparksFormatError(f"{where}: window {k} larger than the padded input {size + 2 * p}")
    out = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


class _Checker:
    """Checks each op and infers the shape of every value: ('map', C, H, W) or ('vec', F). With ``tensors=None`` it
    only lists the tensors the ops need (``layout``); otherwise it checks each one."""

    def __init__(self, tensors: dict[str, np.ndarray] | None, real_dtype: str, lim: Limits) -> None:
        self.tensors = tensors
        self.real = np.dtype(real_dtype)
        self.lim = lim
        self.used: set[str] = set()
        self.layout: list[tuple[str, np.dtype, tuple[int, ...]]] = []
        self.params = 0  # parameters of the model the table describes (a sub-bit kernel counts 9: torch rebuild)

    def tensor(self, name: str, shape: tuple[int, ...], dtype: np.dtype | str | None = None, params: int = -1) -> None:
        want = self.real if dtype is None else np.dtype(dtype)
        self.params += int(np.prod(shape)) if params < 0 else params
        check_size("the described model's parameter count", self.params, self.lim.max_params, "max_params",
                   SparksFormatError)
        if name in self.used:
            raise SparksFormatError(f"tensor {name!r} is defined twice")
        self.used.add(name)
        self.layout.append((name, want, tuple(shape)))
        if self.tensors is None:
            return
        t = self.tensors.get(name)
        if t is None:
            raise SparksFormatError(f"tensor {name!r} is missing")
        if not isinstance(t, np.ndarray) or t.dtype != want or t.shape != tuple(shape):
            raise SparksFormatError(f"tensor {name!r} is {getattr(t, 'dtype', type(t).__name__)}"
                                    f"{list(getattr(t, 'shape', ()))}, expected {want}{list(shape)}")
        if t.dtype.kind == "f":
            peak = float(np.abs(t).max(initial=0.0)) if np.isfinite(t).all() else float("nan")
            if not peak <= self.lim.max_abs_value:
                raise SparksFormatError(f"tensor {name!r} holds NaN, infinite or huge (|x| > "
                                        f"{self.lim.max_abs_value:g}, Limits.max_abs_value) values")

    def op(self, op: dict, ins: list[tuple], where: str) -> tuple:
        kind, name = op["op"], op["name"]
        arity = 2 if kind == "add" else 1
        if len(ins) != arity:
            raise SparksFormatError(f"{where}: {kind} takes {arity} input(s), got {len(ins)}")
        x = ins[0]
        if kind not in ("linear", "flatten", "add") and x[0] != "map":
            raise SparksFormatError(f"{where}: {kind} needs a feature map input")
        channels = self.lim.max_channels
        if kind == "conv2d":
            cin = _int(op, "in_channels", 1, channels, where, "max_channels")
            cout = _int(op, "out_channels", 1, channels, where, "max_channels")
            kh, kw = _pair(op, "kernel", 1, MAX_KERNEL, where)
            sh, sw = _pair(op, "stride", 1, MAX_STRIDE, where)
            ph, pw = _pair(op, "padding", 0, MAX_KERNEL, where)
            self._channels(x, cin, where)
            self.tensor(f"{name}.weight", (cout, cin, kh, kw))
            if _bool(op, "bias", where):
                self.tensor(f"{name}.bias", (cout,))
            return ("map", cout, _window_out(x[2], kh, sh, ph, False, where),
                    _window_out(x[3], kw, sw, pw, False, where))
        if kind == "subbit_conv2d":
            return self.subbit(op, x, where)
        if kind in ("batchnorm", "bias", "rprelu"):
            c = _int(op, "channels", 1, channels, where, "max_channels")
            self._channels(x, c, where)
            names = {"batchnorm": ("scale", "shift"), "bias": ("bias",), "rprelu": ("shift_in", "weight",
                                                                                     "shift_out")}[kind]
            for t in names:
                size = c
                if t == "weight":
                    size = _int(op, "num_parameters", 1, channels, where)
                    if size not in (1, c):
                        raise SparksFormatError(f"{where}: num_parameters must be 1 or {c}, got {size}")
                self.tensor(f"{name}.{t}", (size,))
            return x
        if kind in ("relu", "sign"):
            return x
        if kind == "add":
            if ins[0] != ins[1]:
                raise SparksFormatError(f"{where}: add of mismatched shapes {ins[0][1:]} and {ins[1][1:]}")
            return x
        if kind in ("avgpool2d", "maxpool2d"):
            kh, kw = _pair(op, "kernel", 1, MAX_KERNEL, where)
            sh, sw = _pair(op, "stride", 1, MAX_STRIDE, where)
            ph, pw = _pair(op, "padding", 0, MAX_KERNEL, where)
            if 2 * ph > kh or 2 * pw > kw:
                raise SparksFormatError(f"{where}: padding must be at most half the window")
            ceil_mode = _bool(op, "ceil_mode", where)
            if kind == "avgpool2d":
                _bool(op, "count_include_pad", where)
            return ("map", x[1], _window_out(x[2], kh, sh, ph, ceil_mode, where),
                    _window_out(x[3], kw, sw, pw, ceil_mode, where))
        if kind == "global_avgpool":
            return ("map", x[1], 1, 1)
        if kind == "flatten":
            return x if x[0] == "vec" else ("vec", x[1] * x[2] * x[3])
        if kind == "linear":
            fin = _int(op, "in_features", 1, self.lim.max_value_elements, where)
            fout = _int(op, "out_features", 1, max(channels, self.lim.max_classes), where)
            if x != ("vec", fin):
                raise SparksFormatError(f"{where}: linear expects ('vec', {fin}) input, got {x}")
            self.tensor(f"{name}.weight", (fout, fin))
            if _bool(op, "bias", where):
                self.tensor(f"{name}.bias", (fout,))
            return ("vec", fout)
        raise SparksFormatError(f"{where}: unknown op type {kind!r:.40}")

    def subbit(self, op: dict, x: tuple, where: str) -> tuple:
        name = op["name"]
        cin = _int(op, "in_channels", 1, self.lim.max_channels, where, "max_channels")
        cout = _int(op, "out_channels", 1, self.lim.max_channels, where, "max_channels")
        s = _int(op, "stride", 1, 2, where)  # what the packed kernels implement
        tau = _int(op, "tau", 1, CODE_BITS, where)
        n = _int(op, "n", 1, FULL_CODEBOOK, where)
        if n > 1 << tau:
            raise SparksFormatError(f"{where}: n={n} codewords do not fit tau={tau} bits")
        self._channels(x, cin, where)
        if n < FULL_CODEBOOK:  # n = 512: the full codebook, implicit (every codeword in index order)
            self.tensor(f"{name}.codebook", (packed_nbytes(n, CODE_BITS),), np.uint8, params=0)
        self.tensor(f"{name}.indices", (packed_nbytes(cin * cout, index_bits(n)),), np.uint8, params=9 * cin * cout)
        self.tensor(f"{name}.alpha", (cout,), np.float32)
        if _bool(op, "bias", where):
            self.tensor(f"{name}.bias", (cout,))
        if self.tensors is not None:
            idx = unpack_bits(self.tensors[f"{name}.indices"], cin * cout, index_bits(n))
            if idx.size and int(idx.max()) >= n:
                raise SparksFormatError(f"{where}: kernel index {int(idx.max())} out of range for n={n} codewords")
        return ("map", cout, _window_out(x[2], 3, s, 1, False, where), _window_out(x[3], 3, s, 1, False, where))

    @staticmethod
    def _channels(x: tuple, c: int, where: str) -> None:
        if x[0] != "map" or x[1] != c:
            raise SparksFormatError(f"{where}: expects a map of {c} channels, got {x}")


def _check(metadata: Any, tensors: dict[str, np.ndarray] | None, lim: Limits) -> _Checker:
    if not isinstance(metadata, dict):
        raise SparksFormatError("metadata must be an object")
    check_version(metadata.get("format_version"))
    where = "metadata"
    if "model_name" not in metadata:
        raise SparksFormatError("metadata: 'model_name' is missing (a registered architecture or null)")
    for key in ("model_name", "method"):
        if (key == "method" or metadata.get(key) is not None) and not _IDENTIFIER.fullmatch(_str(metadata, key, where)):
            raise SparksFormatError(f"metadata: {key!r} must be an identifier, got {metadata[key]!r:.60}")
    if not isinstance(metadata.get("model_args"), dict):
        raise SparksFormatError("metadata: 'model_args' must be an object")
    _int(metadata, "tau", 1, CODE_BITS, where)
    num_classes = _int(metadata, "num_classes", 1, lim.max_classes, where, "max_classes")
    real = metadata.get("real_dtype")
    if real not in REAL_DTYPES:
        raise SparksFormatError(f"metadata: 'real_dtype' must be one of {REAL_DTYPES}, got {real!r:.40}")
    inp = metadata.get("input")
    if not isinstance(inp, dict):
        raise SparksFormatError("metadata: 'input' must be an object")
    c = _int(inp, "channels", 1, lim.max_channels, "input", "max_channels")
    h = _int(inp, "height", 1, lim.max_spatial, "input", "max_spatial")
    w = _int(inp, "width", 1, lim.max_spatial, "input", "max_spatial")
    check_size(f"input {c}x{h}x{w}: element count", c * h * w, lim.max_value_elements, "max_value_elements",
               SparksFormatError)
    ops = metadata.get("ops")
    if not isinstance(ops, list) or not 1 <= len(ops) <= lim.max_ops:
        raise SparksFormatError(f"metadata: 'ops' must be a list of 1..{lim.max_ops} ops")
    checker = _Checker(tensors, real, lim)
    values: dict[str, tuple] = {"input": ("map", c, h, w)}
    names: set[str] = set()
    for i, op in enumerate(ops):
        if not isinstance(op, dict):
            raise SparksFormatError(f"op {i}: must be an object")
        where = f"op {i}"
        _str(op, "op", where, 40)
        name = _str(op, "name", where)
        where = f"op {i} ({name:.80})"
        if name in names:
            raise SparksFormatError(f"{where}: duplicate op name")
        names.add(name)
        if "module" in op:
            _str(op, "module", where)
        inputs, out = op.get("inputs"), _str(op, "output", where)
        if not isinstance(inputs, list) or not all(isinstance(v, str) and v in values for v in inputs):
            raise SparksFormatError(f"{where}: 'inputs' must list values defined earlier, got {inputs!r:.80}")
        if out in values:
            raise SparksFormatError(f"{where}: output {out!r:.40} is already defined")
        shape = checker.op(op, [values[v] for v in inputs], where)
        check_size(f"{where}: output {shape[1:]}: element count", int(np.prod(shape[1:], dtype=np.int64)),
                   lim.max_value_elements, "max_value_elements", SparksFormatError)
        values[out] = shape
    final = values[ops[-1]["output"]]
    if final != ("vec", num_classes):
        raise SparksFormatError(f"the last op must give {num_classes} logits per image, got {final}")
    return checker


def tensor_layout(metadata: Any, limits: Limits | None = None) -> list[tuple[str, np.dtype, tuple[int, ...]]]:
    """(name, dtype, shape) of every tensor the table needs, in file order; checks the table (not the tensors)."""
    return _check(metadata, None, resolve(limits)).layout


def table_params(metadata: Any, limits: Limits | None = None) -> int:
    """Parameters of the model the table describes (a sub-bit kernel counts 9: its latent weights in torch)."""
    return _check(metadata, None, resolve(limits)).params


def validate(metadata: Any, tensors: dict[str, np.ndarray], limits: Limits | None = None) -> None:
    """Check metadata and tensors completely (see docs/format.md); raise SparksFormatError on the first problem."""
    if not isinstance(tensors, dict):
        raise SparksFormatError("tensors must be a dict of numpy arrays")
    checker = _check(metadata, tensors, resolve(limits))
    extra = set(tensors) - checker.used
    if extra:
        raise SparksFormatError(f"unexpected tensors not used by any op: {sorted(extra)[:5]}")
