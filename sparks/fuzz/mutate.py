"""Seeded mutators of ``.sparks`` files and checkpoints: case ``i`` of seed ``s`` is always the same file.

A mutation returns ``(name, prefix, size)``: the file is ``prefix`` followed by zeros up to ``size`` bytes (a sparse
file when ``size`` is much larger). Byte-level mutations (bit flips, truncations, inserts, deletions, header edits)
mostly break the checksum; re-signed mutations recompute it, so edits to the layer table, ``model_args``, declared
sizes and tensor data reach the validation behind it, as a crafted file would.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from sparks.deploy.format import TABLE, pack_container

GiB = 1 << 30
HOSTILE = [None, True, -1, 0, 1, 2, 3, 7, 8, 9, 16, 512, 513, 65535, 65536, 2**16 + 1, 2**31, 2**63, 2**64, 10**30,
           -2**63, 1e308, -1e308, 1.5, 0.5, 1e-300, "", "x", "nan", "inf", "subbit_conv2d", "input", [], [1], [0, 0],
           [2**40, 2**40], {}, {"a": 1}, "x" * 300]
MODEL_ARGS = {"width": [64, 1e6, 1e308, 0, -1, 1e-9, 0.2, 2.0, 16, True, "1", None],
              "num_classes": [10**9, 2**31, -5, 0, 1, 100_000, 1.0, "10", None],
              "in_channels": [0, -3, 3, 65536, 10**7, 2.5, None], "tau": [0, 10, -1, 9, 1, 2.0, None],
              "method": ["nope", 1, None, "float", "sign", "topn", "random", "snn"],
              "seed": [2**70, -1, 1e300, "s"], "sinkhorn_iters": [10**9, -1], "bogus": [1, "x", [1], {"a": 1}]}


def _sign(table: dict[str, Any] | bytes, parts: dict[str, bytes]) -> bytes:
    """A file with ``parts`` and ``table`` (a JSON document, or already-compressed bytes) and a valid checksum."""
    raw = table if isinstance(table, bytes) else zlib.compress(json.dumps(table).encode(), 6)
    parts = {**{k: v for k, v in parts.items() if k != TABLE}, TABLE: raw}
    order = [k for k in ("F32", "F16", "U8", TABLE) if k in parts] + [k for k in parts if k not in
                                                                      ("F32", "F16", "U8", TABLE)]
    return pack_container(parts, hashlib.sha256(b"".join(parts[k] for k in order)).hexdigest())


class SparksSeed:
    """One valid ``.sparks`` file taken apart: header, blobs and layer table."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        (self.n,) = struct.unpack("<Q", data[:8])
        self.header = json.loads(data[8:8 + self.n])
        body = data[8 + self.n:]
        self.parts = {k: body[v["data_offsets"][0]:v["data_offsets"][1]] for k, v in self.header.items()
                      if k != "__metadata__"}
        self.table = json.loads(zlib.decompress(self.parts[TABLE]))


def _walk(obj: Any, rng: np.random.Generator) -> tuple[Any, Any]:
    """A random (container, key) inside a JSON document."""
    parent, key = None, None
    node = obj
    for _ in range(int(rng.integers(1, 6))):
        if isinstance(node, dict) and node:
            k = list(node)[int(rng.integers(len(node)))]
        elif isinstance(node, list) and node:
            k = int(rng.integers(len(node)))
        else:
            break
        parent, key, node = node, k, node[k]
    return parent, key


def _hostile(rng: np.random.Generator) -> Any:
    return copy.deepcopy(HOSTILE[int(rng.integers(len(HOSTILE)))])


def _bytes_ops(data: bytes, rng: np.random.Generator) -> tuple[str, bytes]:
    buf = bytearray(data)
    op = int(rng.integers(5))
    if op == 0:
        for pos in rng.integers(0, len(buf), int(rng.integers(1, 9))):
            buf[pos] ^= 1 << int(rng.integers(8))
        return "bitflip", bytes(buf)
    if op == 1:
        return "truncate", bytes(buf[:int(rng.integers(0, len(buf)))])
    if op == 2:
        pos = int(rng.integers(0, len(buf) + 1))
        return "insert", bytes(buf[:pos] + rng.bytes(int(rng.integers(1, 64))) + buf[pos:])
    if op == 3:
        a = int(rng.integers(0, len(buf)))
        return "delete", bytes(buf[:a] + buf[a + int(rng.integers(1, 64)):])
    for pos in rng.integers(0, len(buf), int(rng.integers(1, 5))):
        buf[pos] = int(rng.integers(256))
    return "randbytes", bytes(buf)


def mutate_sparks(seed: SparksSeed, rng: np.random.Generator) -> tuple[str, bytes, int]:
    """One mutated ``.sparks`` file: (mutation name, prefix, total size)."""
    op = int(rng.integers(12))
    if op <= 1:
        name, data = _bytes_ops(seed.data, rng)
        return name, data, len(data)
    if op == 2:  # header length
        values = [0, 1, seed.n - 8, seed.n + 8, len(seed.data), 2**63, 2**64 - 1, int(rng.integers(0, 2**40))]
        value = values[int(rng.integers(len(values)))]
        data = struct.pack("<Q", value) + seed.data[8:]
        return "header_length", data, len(data)
    if op == 3:  # header JSON entries
        header = copy.deepcopy(seed.header)
        parent, key = _walk(header, rng)
        if parent is not None:
            parent[key] = _hostile(rng)
        raw = json.dumps(header).encode()
        data = struct.pack("<Q", len(raw)) + raw + seed.data[8 + seed.n:]
        return "header_json", data, len(data)
    if op in (4, 5):  # layer table, re-signed
        table = copy.deepcopy(seed.table)
        for _ in range(int(rng.integers(1, 3))):
            parent, key = _walk(table, rng)
            if parent is None:
                continue
            if rng.random() < 0.2 and isinstance(parent, dict):
                del parent[key]
            else:
                parent[key] = _hostile(rng)
        return "table", _sign(table, seed.parts), -1
    if op == 6:  # model_args, re-signed
        table = copy.deepcopy(seed.table)
        args = table["model_args"]
        for _ in range(int(rng.integers(1, 3))):
            key = list(MODEL_ARGS)[int(rng.integers(len(MODEL_ARGS)))]
            args[key] = MODEL_ARGS[key][int(rng.integers(len(MODEL_ARGS[key])))]
        return "model_args", _sign(table, seed.parts), -1
    if op == 7:  # huge declared sizes, re-signed
        table = copy.deepcopy(seed.table)
        big = [2**14, 2**16, 2**20, 2**31, 2**40][int(rng.integers(5))]
        if rng.random() < 0.3:
            table["input"][str(rng.choice(["channels", "height", "width"]))] = big
        else:
            ops = [o for o in table["ops"] if any(k in o for k in ("in_channels", "out_channels", "channels",
                                                                    "in_features", "out_features", "n"))]
            o = ops[int(rng.integers(len(ops)))]
            keys = [k for k in ("in_channels", "out_channels", "channels", "in_features", "out_features", "n",
                                "num_parameters") if k in o]
            o[keys[int(rng.integers(len(keys)))]] = big
        return "huge_sizes", _sign(table, seed.parts), -1
    if op == 8:  # tensor values, re-signed
        parts = dict(seed.parts)
        key = str(rng.choice([k for k in parts if k != TABLE]))
        buf = bytearray(parts[key])
        if key == "U8":
            for pos in rng.integers(0, len(buf), int(rng.integers(1, 16))):
                buf[pos] = int(rng.integers(256))
        else:
            arr = np.frombuffer(bytes(buf), dtype="<f4" if key == "F32" else "<f2").copy()
            specials = [np.nan, np.inf, -np.inf, 3e38, 1e12, 1e6, -0.0, 0.0, 65504.0]
            for pos in rng.integers(0, arr.size, int(rng.integers(1, 8))):
                with np.errstate(over="ignore"):
                    arr[pos] = specials[int(rng.integers(len(specials)))] if rng.random() < 0.7 else rng.normal()
            buf = bytearray(arr.tobytes())
        parts[key] = bytes(buf)
        return "tensor_values", _sign(seed.table, parts), -1
    if op == 9:  # blob lengths, re-signed
        parts = dict(seed.parts)
        key = str(rng.choice(list(parts)))
        k = int(rng.choice([1, 2, 4, 8, 1000]))
        parts[key] = parts[key][:-k] if rng.random() < 0.5 else parts[key] + rng.bytes(k)
        return "blob_length", _sign(seed.table if key != TABLE else parts[key], parts), -1
    if op == 10:  # compressed table bytes, re-signed (zlib errors, trailing data, a decompression bomb)
        choice = int(rng.integers(3))
        if choice == 0:
            raw = bytearray(seed.parts[TABLE])
            raw[int(rng.integers(len(raw)))] ^= 1 << int(rng.integers(8))
            raw = bytes(raw)
        elif choice == 1:
            raw = seed.parts[TABLE] + rng.bytes(int(rng.integers(1, 9)))
        else:
            raw = zlib.compress(b'{"pad":"' + b" " * (int(rng.integers(17, 40)) << 20) + b'"}', 9)
        return "table_bytes", _sign(raw, seed.parts), -1
    # a sparse giant file: a valid-looking start, then zeros up to GiBs
    sizes = [3 * GiB, 4 * GiB - 1, 4 * GiB + 1, 6 * GiB, int(rng.integers(1, 5)) * GiB]
    size = sizes[int(rng.integers(len(sizes)))]
    prefix = seed.data if rng.random() < 0.5 else struct.pack("<Q", int(rng.integers(0, 64)))
    return "sparse_giant", prefix, size


def sparks_case(seeds: list[SparksSeed], seed: int, index: int) -> tuple[str, bytes, int]:
    """Case ``index`` of campaign ``seed``: (mutation, prefix, size); size -1 means len(prefix)."""
    rng = np.random.default_rng([seed, index])
    name, prefix, size = mutate_sparks(seeds[index % len(seeds)], rng)
    return name, prefix, len(prefix) if size < 0 else size


# --------------------------------------------------------------------------------------------- checkpoints
def _zip_edit(data: bytes, rng: np.random.Generator) -> tuple[str, bytes]:
    """Edit a size, offset or compression field of a zip record (local or central directory)."""
    buf = bytearray(data)
    starts = [i for i in range(len(buf) - 4) if buf[i:i + 2] == b"PK" and buf[i + 2:i + 4] in (b"\x01\x02",
                                                                                                 b"\x03\x04")]
    pos = starts[int(rng.integers(len(starts)))]
    central = buf[pos + 2:pos + 4] == b"\x01\x02"
    fields = [10, 20, 24, 42] if central else [8, 18, 22, 26]
    field = fields[int(rng.integers(4))]
    width = 2 if field in (8, 10, 26) else 4
    values = [0, 8, 0xFFFF, 0xFFFFFFFF, int(rng.integers(0, 1 << (8 * width)))]
    value = values[int(rng.integers(len(values)))] % (1 << (8 * width))
    buf[pos + field:pos + field + width] = value.to_bytes(width, "little")
    return "zip_field", bytes(buf)


def _deflated(data: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
    return out.getvalue()


def mutate_state(state: dict[str, Any], rng: np.random.Generator) -> str:
    """Edit ``state`` (a checkpoint dict, in place) in one hostile way; returns what was done."""
    import torch

    op = int(rng.integers(7))
    if op == 0:
        key = list(MODEL_ARGS)[int(rng.integers(len(MODEL_ARGS)))]
        if not isinstance(state.get("model_args"), dict):  # an earlier edit replaced it
            state["model_args"] = {}
        state["model_args"][key] = MODEL_ARGS[key][int(rng.integers(len(MODEL_ARGS[key])))]
        return "model_args"
    if op == 1:
        key = str(rng.choice(list(state)))
        if rng.random() < 0.3:
            del state[key]
        else:
            state[key] = _hostile(rng)
        return "field"
    if op == 2 and isinstance(state.get("model"), dict) and state["model"]:
        model = state["model"]
        key = list(model)[int(rng.integers(len(model)))]
        t = model[key]
        choice = int(rng.integers(5))
        if choice == 0:
            model[key] = torch.zeros(int(rng.integers(1, 5)), int(rng.integers(1, 5)))
        elif choice == 1 and t.is_floating_point() and t.numel():
            t = t.clone()
            t.view(-1)[int(rng.integers(t.numel()))] = float(rng.choice([np.nan, np.inf, 3e38, -1e30]))
            model[key] = t
        elif choice == 2:
            model[key] = t.to(torch.float64 if t.is_floating_point() else torch.float32)
        elif choice == 3:
            del model[key]
        else:
            model[key + ".extra"] = torch.zeros(2)
        return "model_tensor"
    rngs = state.get("rng")
    if op == 3 and isinstance(rngs, list) and rngs and isinstance(rngs[0], dict):
        entry = rngs[0]
        parent, key = _walk(entry, rng)
        if parent is not None:
            parent[key] = _hostile(rng) if rng.random() < 0.6 else torch.zeros(int(rng.integers(0, 700)),
                                                                                 dtype=torch.int64)
        return "rng"
    if op == 4 and isinstance(state.get("optimizer"), dict):
        parent, key = _walk(state["optimizer"], rng)
        if parent is not None:
            parent[key] = _hostile(rng)
        return "optimizer"
    if op == 5:
        parent, key = _walk(state, rng)
        if parent is not None and not isinstance(parent, torch.Tensor):
            parent[key] = _hostile(rng)
        return "deep_field"
    state["format_version"] = _hostile(rng)
    return "format_version"


def checkpoint_case(seeds: list[tuple[bytes, dict[str, Any]]], seed: int, index: int) -> tuple[str, bytes, int]:
    """Case ``index`` of campaign ``seed`` for checkpoints: (mutation, prefix, size)."""
    import torch

    rng = np.random.default_rng([seed, index, 1])
    data, state = seeds[index % len(seeds)]
    op = int(rng.integers(10))
    if op <= 2:
        name, out = _bytes_ops(data, rng)
    elif op == 3:
        name, out = _zip_edit(data, rng)
    elif op == 4:
        name, out = "deflated", _deflated(data)
    elif op == 5:
        return "sparse_giant", data if rng.random() < 0.5 else data[:64], (3 if rng.random() < 0.5 else 5) * GiB
    else:
        state = copy.deepcopy(state)
        name = mutate_state(state, rng)
        if rng.random() < 0.3:
            name += "+" + mutate_state(state, rng)
        buf = io.BytesIO()
        torch.save(state, buf)
        out = buf.getvalue()
    return name, out, len(out)


def write_case(path: Path, prefix: bytes, size: int) -> None:
    """Write ``prefix`` then zeros up to ``size`` bytes (sparse)."""
    with open(path, "wb") as f:
        f.write(prefix)
        if size > len(prefix):
            f.truncate(size)
