"""The ``.sparks`` file: a safetensors file whose metadata holds a JSON layer table (no torch import here).

``write_sparks(path, metadata, tensors)`` / ``read_sparks(path) -> (metadata, tensors)``; bytes forms
``sparks_bytes`` / ``read_sparks_bytes``. The reader validates everything before use (header, JSON, version, every op's
fields and ranges, tensor presence/dtype/shape, value shapes through the graph, checksum), so a truncated, corrupted
or crafted file raises :class:`SparksFormatError` and nothing else. Byte-level layout: ``docs/format.md``.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from pathlib import Path
from typing import Any

import numpy as np

from sparks.atomic import atomic_path
from sparks.errors import SparksError, first_line

FORMAT_VERSION = 1
META_KEY = "sparks"  # safetensors metadata key holding our JSON
DIGEST_KEY = "sparks_sha256"  # sha256 over the JSON string and every tensor (name, dtype, shape, bytes)
CODE_BITS = 9  # a codeword is its 9-bit index (bit i = row-major position i is +1)
REEXPORT_HINT = "re-export it with `sparks export --checkpoint CKPT --out FILE`"

# Sanity limits, checked before anything is allocated from a file's numbers.
MAX_FILE_BYTES = 1 << 32
MAX_HEADER_BYTES = 1 << 24
MAX_OPS = 10_000
MAX_CHANNELS = 1 << 16
MAX_SPATIAL = 1 << 14
MAX_VALUE_ELEMENTS = 1 << 28  # elements of one activation at batch 1
MAX_KERNEL = 15
MAX_STRIDE = 16
REAL_DTYPES = ("float32", "float16")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


class SparksFormatError(SparksError, ValueError):
    """A ``.sparks`` file that cannot be used: truncated, corrupted, crafted, or of an unknown format version."""


# --------------------------------------------------------------------------------------------- bit packing
def index_bits(n: int) -> int:
    """Bits per stored index into n codewords: ⌈log2 n⌉, at least 1."""
    return max(1, (int(n) - 1).bit_length())


def packed_nbytes(count: int, bits: int) -> int:
    """Bytes holding ``count`` values of ``bits`` bits each."""
    return (count * bits + 7) // 8


def pack_bits(values: np.ndarray, bits: int) -> np.ndarray:
    """Non-negative ints → uint8 stream; value k occupies stream bits [k·bits, (k+1)·bits), least significant bit
    first, and stream bit m is bit (m mod 8) of byte m // 8 (little-endian bit order)."""
    values = np.asarray(values, dtype=np.int64).ravel()
    if values.size and (values.min() < 0 or values.max() >= (1 << bits)):
        raise ValueError(f"values must be in 0..{(1 << bits) - 1} to pack in {bits} bits")
    stream = ((values[:, None] >> np.arange(bits)) & 1).astype(np.uint8).ravel()
    return np.packbits(stream, bitorder="little")


def unpack_bits(data: np.ndarray, count: int, bits: int) -> np.ndarray:
    """Inverse of :func:`pack_bits` → int64 (count,)."""
    if data.dtype != np.uint8 or data.ndim != 1 or data.size != packed_nbytes(count, bits):
        raise SparksFormatError(f"packed stream of {data.size} bytes cannot hold {count} values of {bits} bits")
    stream = np.unpackbits(data, count=count * bits, bitorder="little").reshape(count, bits).astype(np.int64)
    return stream @ (np.int64(1) << np.arange(bits, dtype=np.int64))


def codeword_to_kernel(codes: np.ndarray) -> np.ndarray:
    """9-bit codeword indices (...) → ±1 float32 kernels (..., 3, 3) (bit i set ⇔ row-major position i is +1)."""
    bits = (np.asarray(codes, dtype=np.int64)[..., None] >> np.arange(CODE_BITS)) & 1
    return (2.0 * bits - 1.0).astype(np.float32).reshape(*np.shape(codes), 3, 3)


def decode_subbit(op: dict[str, Any], tensors: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Sub-codebook and kernel indices of a validated ``subbit_conv2d`` op → (codes int64 (n,), indices int64
    (C_out, C_in))."""
    name, n = op["name"], op["n"]
    codes = unpack_bits(tensors[f"{name}.codebook"], n, CODE_BITS)
    idx = unpack_bits(tensors[f"{name}.indices"], op["out_channels"] * op["in_channels"], index_bits(n))
    return codes, idx.reshape(op["out_channels"], op["in_channels"])


# --------------------------------------------------------------------------------------------- read / write
def _digest(meta_json: str, tensors: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256(meta_json.encode())
    for name in sorted(tensors):
        t = tensors[name]
        h.update(f"\0{name}\0{t.dtype.str}\0{t.shape}\0".encode())
        h.update(np.ascontiguousarray(t).tobytes())
    return h.hexdigest()


def sparks_bytes(metadata: dict[str, Any], tensors: dict[str, np.ndarray]) -> bytes:
    """The file's bytes for ``metadata`` (JSON-able, with ``format_version``) and ``tensors`` (validated first)."""
    from safetensors.numpy import save

    tensors = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    validate(metadata, tensors)
    meta_json = json.dumps(metadata, sort_keys=True, separators=(",", ":"))
    return save(tensors, metadata={META_KEY: meta_json, DIGEST_KEY: _digest(meta_json, tensors)})


def write_sparks(path: str | Path, metadata: dict[str, Any], tensors: dict[str, np.ndarray]) -> None:
    """Write a ``.sparks`` file atomically (temp file in the same folder, then ``os.replace``)."""
    data = sparks_bytes(metadata, tensors)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def read_sparks(path: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read and fully validate a ``.sparks`` file → (metadata, tensors). Raises SparksFormatError/FileNotFoundError."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such model file: {path}")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise SparksFormatError(f"{path}: {size} bytes is too large for a sparks model")
    try:
        return read_sparks_bytes(path.read_bytes())
    except SparksFormatError as err:
        raise SparksFormatError(f"{path}: {err}") from None


def read_sparks_bytes(data: bytes) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """:func:`read_sparks` on the bytes of a file."""
    meta_json, digest = _read_header(data)
    try:
        metadata = json.loads(meta_json)
    except (ValueError, RecursionError) as err:
        raise SparksFormatError(f"sparks metadata is not valid JSON ({err})") from None
    if not isinstance(metadata, dict):
        raise SparksFormatError("sparks metadata must be a JSON object")
    _check_version(metadata.get("format_version"))
    try:
        from safetensors.numpy import load

        tensors = load(data)
    except Exception as err:  # safetensors raises its own error types for every malformed layout
        raise SparksFormatError(f"not a valid safetensors file ({first_line(err)[:200]})") from None
    if _digest(meta_json, tensors) != digest:
        raise SparksFormatError("checksum mismatch: the file is corrupted")
    validate(metadata, tensors)
    return metadata, tensors


def _read_header(data: bytes) -> tuple[str, str]:
    if len(data) < 8:
        raise SparksFormatError(f"truncated file: {len(data)} bytes, no safetensors header")
    (n,) = struct.unpack("<Q", data[:8])
    if n > MAX_HEADER_BYTES or 8 + n > len(data):
        raise SparksFormatError(f"truncated or corrupted file: header of {n} bytes in a {len(data)}-byte file")
    try:
        header = json.loads(data[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise SparksFormatError("corrupted safetensors header (not JSON)") from None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(meta, dict) or not isinstance(meta.get(META_KEY), str) or not isinstance(
            meta.get(DIGEST_KEY), str):
        raise SparksFormatError(f"not a sparks model: no {META_KEY!r}/{DIGEST_KEY!r} metadata in the header")
    return meta[META_KEY], meta[DIGEST_KEY]


def _check_version(version: object) -> None:
    if isinstance(version, bool) or not isinstance(version, int):
        raise SparksFormatError(f"missing or invalid format_version {version!r}; {REEXPORT_HINT}")
    if version != FORMAT_VERSION:
        raise SparksFormatError(f"format version {version} is not supported by this sparks (reads version "
                                f"{FORMAT_VERSION}); {REEXPORT_HINT}")


# --------------------------------------------------------------------------------------------- validation
def _int(d: dict, key: str, lo: int, hi: int, where: str) -> int:
    v = d.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise SparksFormatError(f"{where}: {key!r} must be an int in {lo}..{hi}, got {v!r:.60}")
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
    """Checks each op against the tensors and infers the shape of every value: ('map', C, H, W) or ('vec', F)."""

    def __init__(self, tensors: dict[str, np.ndarray], real_dtype: str) -> None:
        self.tensors = tensors
        self.real = np.dtype(real_dtype)
        self.used: set[str] = set()

    def tensor(self, name: str, shape: tuple[int, ...], dtype: np.dtype | str | None = None) -> None:
        t = self.tensors.get(name)
        if t is None:
            raise SparksFormatError(f"tensor {name!r} is missing")
        want = self.real if dtype is None else np.dtype(dtype)
        if t.dtype != want or t.shape != tuple(shape):
            raise SparksFormatError(f"tensor {name!r} is {t.dtype}{list(t.shape)}, expected {want}{list(shape)}")
        if t.dtype.kind == "f" and not np.isfinite(t).all():
            raise SparksFormatError(f"tensor {name!r} holds NaN or infinite values")
        self.used.add(name)

    def op(self, op: dict, ins: list[tuple], where: str) -> tuple:
        kind, name = op["op"], op["name"]
        arity = 2 if kind == "add" else 1
        if len(ins) != arity:
            raise SparksFormatError(f"{where}: {kind} takes {arity} input(s), got {len(ins)}")
        x = ins[0]
        if kind not in ("linear", "flatten", "add") and x[0] != "map":
            raise SparksFormatError(f"{where}: {kind} needs a feature map input")
        if kind == "conv2d":
            cin = _int(op, "in_channels", 1, MAX_CHANNELS, where)
            cout = _int(op, "out_channels", 1, MAX_CHANNELS, where)
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
            cin = _int(op, "in_channels", 1, MAX_CHANNELS, where)
            cout = _int(op, "out_channels", 1, MAX_CHANNELS, where)
            s = _int(op, "stride", 1, 2, where)  # what the packed kernels implement
            tau = _int(op, "tau", 1, CODE_BITS, where)
            n = _int(op, "n", 1, 1 << CODE_BITS, where)
            if n > 1 << tau:
                raise SparksFormatError(f"{where}: n={n} codewords do not fit tau={tau} bits")
            self._channels(x, cin, where)
            self.tensor(f"{name}.codebook", (packed_nbytes(n, CODE_BITS),), np.uint8)
            self.tensor(f"{name}.indices", (packed_nbytes(cin * cout, index_bits(n)),), np.uint8)
            self.tensor(f"{name}.alpha", (cout,), np.float32)
            if _bool(op, "bias", where):
                self.tensor(f"{name}.bias", (cout,))
            idx = unpack_bits(self.tensors[f"{name}.indices"], cin * cout, index_bits(n))
            if idx.size and idx.max() >= n:
                raise SparksFormatError(f"{where}: kernel index {int(idx.max())} out of range for n={n} codewords")
            return ("map", cout, _window_out(x[2], 3, s, 1, False, where), _window_out(x[3], 3, s, 1, False, where))
        if kind in ("batchnorm", "bias", "prelu", "rprelu"):
            c = _int(op, "channels", 1, MAX_CHANNELS, where)
            self._channels(x, c, where)
            names = {"batchnorm": ("scale", "shift"), "bias": ("bias",), "prelu": ("weight",),
                     "rprelu": ("shift_in", "weight", "shift_out")}[kind]
            for t in names:
                size = c
                if t == "weight":
                    size = _int(op, "num_parameters", 1, MAX_CHANNELS, where)
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
            fin = _int(op, "in_features", 1, MAX_VALUE_ELEMENTS, where)
            fout = _int(op, "out_features", 1, MAX_CHANNELS, where)
            if x != ("vec", fin):
                raise SparksFormatError(f"{where}: linear expects ('vec', {fin}) input, got {x}")
            self.tensor(f"{name}.weight", (fout, fin))
            if _bool(op, "bias", where):
                self.tensor(f"{name}.bias", (fout,))
            return ("vec", fout)
        raise SparksFormatError(f"{where}: unknown op type {kind!r:.40}")

    @staticmethod
    def _channels(x: tuple, c: int, where: str) -> None:
        if x[0] != "map" or x[1] != c:
            raise SparksFormatError(f"{where}: expects a map of {c} channels, got {x}")


def validate(metadata: dict[str, Any], tensors: dict[str, np.ndarray]) -> None:
    """Check metadata and tensors completely (see docs/format.md); raise SparksFormatError on the first problem."""
    if not isinstance(metadata, dict):
        raise SparksFormatError("metadata must be an object")
    _check_version(metadata.get("format_version"))
    where = "metadata"
    for key in ("model_name", "method"):
        if (key == "method" or metadata.get(key) is not None) and not _IDENTIFIER.fullmatch(_str(metadata, key, where)):
            raise SparksFormatError(f"metadata: {key!r} must be an identifier, got {metadata[key]!r:.60}")
    if not isinstance(metadata.get("model_args"), dict):
        raise SparksFormatError("metadata: 'model_args' must be an object")
    _int(metadata, "tau", 1, CODE_BITS, where)
    num_classes = _int(metadata, "num_classes", 1, MAX_CHANNELS, where)
    real = metadata.get("real_dtype")
    if real not in REAL_DTYPES:
        raise SparksFormatError(f"metadata: 'real_dtype' must be one of {REAL_DTYPES}, got {real!r:.40}")
    inp = metadata.get("input")
    if not isinstance(inp, dict):
        raise SparksFormatError("metadata: 'input' must be an object")
    c = _int(inp, "channels", 1, MAX_CHANNELS, "input")
    h = _int(inp, "height", 1, MAX_SPATIAL, "input")
    w = _int(inp, "width", 1, MAX_SPATIAL, "input")
    if c * h * w > MAX_VALUE_ELEMENTS:
        raise SparksFormatError(f"input: {c}x{h}x{w} is too large")
    ops = metadata.get("ops")
    if not isinstance(ops, list) or not 1 <= len(ops) <= MAX_OPS:
        raise SparksFormatError(f"metadata: 'ops' must be a list of 1..{MAX_OPS} ops")
    for t in tensors.values():
        if not isinstance(t, np.ndarray):
            raise SparksFormatError("tensors must be numpy arrays")
    checker = _Checker(tensors, real)
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
        if int(np.prod(shape[1:], dtype=np.int64)) > MAX_VALUE_ELEMENTS:
            raise SparksFormatError(f"{where}: output of shape {shape[1:]} is too large")
        values[out] = shape
    final = values[ops[-1]["output"]]
    if final != ("vec", num_classes):
        raise SparksFormatError(f"the last op must give {num_classes} logits per image, got {final}")
    extra = set(tensors) - checker.used
    if extra:
        raise SparksFormatError(f"unexpected tensors not used by any op: {sorted(extra)[:5]}")
