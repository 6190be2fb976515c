"""Hostile .sparks files: every truncated, bit-flipped or crafted file raises exactly SparksFormatError.

A mutation that leaves the meaning unchanged (a byte of the header's whitespace padding turned into other
whitespace) may read back, but then it must read back identical to the original. Everything runs in memory through
``read_sparks_bytes`` (the same code path as ``read_sparks``), fixed seeds.
"""

from __future__ import annotations

import copy
import json
import struct

import numpy as np
import pytest
import torch

from sparks.deploy.export import export_tables
from sparks.deploy.format import META_KEY, SparksFormatError, read_sparks_bytes, sparks_bytes
from sparks.models import create


@pytest.fixture(scope="module")
def original() -> tuple[bytes, dict, dict]:
    torch.manual_seed(0)
    model = create("resnet18_cifar", width=0.125, in_channels=1, num_classes=10, tau=4, method="topn")
    model.stem[0] = torch.nn.Conv2d(1, 8, 3, padding=1, bias=True)  # exercise an optional bias tensor
    model.features = model.features[:5]  # keep the file small: 5 blocks, one downsampling shortcut
    model.fc = torch.nn.Linear(16, 10)
    meta, tensors = export_tables(model, input_size=(1, 12, 12))
    return sparks_bytes(meta, tensors), meta, tensors


def crafted(meta: dict, tensors: dict) -> bytes:
    """A file with a valid digest but no validation on write (what an attacker can produce)."""
    return sparks_bytes(meta, tensors, check=False)


def check(data: bytes, meta: dict, tensors: dict) -> str:
    """'error' for SparksFormatError, 'same' for an identical read; any other exception or outcome fails."""
    try:
        got_meta, got_tensors = read_sparks_bytes(data)
    except SparksFormatError as err:
        assert str(err) and "\n" not in str(err)
        return "error"
    assert got_meta == meta and got_tensors.keys() == tensors.keys()
    assert all(np.array_equal(got_tensors[k], tensors[k]) for k in tensors)
    return "same"


def test_original_reads_back(original):
    data, meta, tensors = original
    assert check(data, meta, tensors) == "same"


def test_truncated(original):
    data, meta, tensors = original
    rng = np.random.default_rng(1)
    cuts = list(range(0, 16)) + sorted(rng.integers(16, len(data), 250).tolist())
    for cut in cuts:
        assert check(data[:cut], meta, tensors) == "error", cut


@pytest.mark.parametrize("region", ["header", "data"])
def test_flipped_bytes(original, region):
    data, meta, tensors = original
    header_end = 8 + struct.unpack("<Q", data[:8])[0]
    lo, hi = (0, header_end) if region == "header" else (header_end, len(data))
    rng = np.random.default_rng(2 if region == "header" else 3)
    outcomes = []
    for _ in range(300):
        mutated = bytearray(data)
        for pos in rng.integers(lo, hi, rng.integers(1, 4)):
            mutated[pos] ^= int(rng.integers(1, 256))
        outcomes.append(check(bytes(mutated), meta, tensors))
    assert outcomes.count("error") >= 290


def _mutations(meta: dict, tensors: dict) -> list[tuple[dict, dict]]:
    """Crafted (metadata, tensors) pairs, each invalid in one way."""
    rng = np.random.default_rng(4)
    out: list[tuple[dict, dict]] = []

    def with_meta(fn):
        m = copy.deepcopy(meta)
        fn(m)
        if m != meta:  # e.g. setting a field to the value it has
            out.append((m, tensors))

    def with_tensors(fn):
        t = dict(tensors)
        fn(t)
        out.append((meta, t))

    bad_values = [None, -1, 0, 2**31, 2**63, 10**30, 1.5, [], {}, True, [1], [-1, 1], [0, 2**40], "x" * 300]
    for key in ("format_version", "tau", "num_classes", "method", "model_args", "input", "ops", "real_dtype"):
        for value in (None, -3, 0, 10**12, "no such/name", [], {}, 2.5):
            if key == "model_args" and value == {}:
                continue  # any object is a valid model_args
            with_meta(lambda m, k=key, v=value: m.__setitem__(k, v))
        with_meta(lambda m, k=key: m.pop(k))
    for key in ("channels", "height", "width"):
        for value in (0, -1, 10**6, "3", None, 1.0, 2**40):
            with_meta(lambda m, k=key, v=value: m["input"].__setitem__(k, v))
    with_meta(lambda m: m["input"].update(channels=4096, height=16384, width=16384))
    for version in (0, 1, 3, 99, -1):
        with_meta(lambda m, v=version: m.__setitem__("format_version", v))
    # every field of every op: wrong types, huge, negative, missing
    for i, op in enumerate(meta["ops"]):
        for key in op:
            for value in rng.choice(np.array(bad_values, dtype=object), 3, replace=False):
                if value is True and key in ("ceil_mode", "count_include_pad"):
                    continue  # a valid (different) model
                with_meta(lambda m, i=i, k=key, v=value: m["ops"][i].__setitem__(k, v))
            if key != "module":  # optional
                with_meta(lambda m, i=i, k=key: m["ops"][i].pop(k))
    for extra in ({"op": "gelu"}, {"inputs": ["nowhere"]}, {"inputs": []}, {"output": "input"}):
        with_meta(lambda m, e=extra: m["ops"][3].update(e))
    with_meta(lambda m: m["ops"].append(copy.deepcopy(m["ops"][-1])))  # duplicate name
    with_meta(lambda m: m["ops"].reverse())
    with_meta(lambda m: m.__setitem__("ops", m["ops"] * 2000))
    with_meta(lambda m: m.__setitem__("ops", []))
    with_meta(lambda m: m.__setitem__("ops", m["ops"][:-1]))  # output is not the logits
    # tensors: missing, extra, wrong dtype/shape, NaN, huge declared shapes
    names = sorted(tensors)
    for name in rng.choice(names, 12, replace=False):
        with_tensors(lambda t, n=name: t.pop(n))
        with_tensors(lambda t, n=name: t.__setitem__(n, t[n].astype(np.float64)))
        with_tensors(lambda t, n=name: t.__setitem__(n, np.concatenate([t[n].ravel(), t[n].ravel()[:1]])))
        with_tensors(lambda t, n=name: t.__setitem__(n, t[n].ravel()[:-1]))  # (v2 stores no per-tensor shapes)
    with_tensors(lambda t: t.__setitem__("extra.weight", np.zeros(3, np.float32)))
    weight = next(n for n in names if n.endswith("fc.weight"))
    with_tensors(lambda t: t.__setitem__(weight, np.full_like(t[weight], np.nan)))
    with_tensors(lambda t: t.__setitem__(weight, np.full_like(t[weight], np.inf)))
    # sub-bit ops: n not a power of two with an index >= n, n > 2^tau, channel counts that do not fit
    sub = next(i for i, op in enumerate(meta["ops"]) if op["op"] == "subbit_conv2d")
    name = meta["ops"][sub]["name"]

    def index_past_n(m: dict) -> None:
        m["ops"][sub]["n"] = 15  # still 4 bits per index; the stored indices reach 15 for this layer

    m = copy.deepcopy(meta)
    index_past_n(m)
    t = dict(tensors)
    t[f"{name}.codebook"] = t[f"{name}.codebook"][:17]
    idx = np.unpackbits(t[f"{name}.indices"], bitorder="little")
    idx[:4] = 1  # first index = 15
    t[f"{name}.indices"] = np.packbits(idx, bitorder="little")
    out.append((m, t))
    with_meta(lambda m: m["ops"][sub].update(n=512))
    with_meta(lambda m: m["ops"][sub].update(in_channels=16))
    with_meta(lambda m: m["ops"][sub].update(out_channels=2**16))
    with_meta(lambda m: m["ops"][sub].update(stride=3))
    return out


def test_crafted_metadata_and_tensors(original):
    _, meta, tensors = original
    mutations = _mutations(meta, tensors)
    assert len(mutations) >= 400
    for i, (m, t) in enumerate(mutations):
        assert check(crafted(m, t), meta, tensors) == "error", (i, json.dumps(m)[:200])


def test_crafted_headers(original):
    data, meta, tensors = original
    header_len = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + header_len])
    cases = [struct.pack("<Q", 2**63) + data[8:], struct.pack("<Q", len(data)) + data[8:], b"\0" * 8,
             struct.pack("<Q", 2) + b"[]", struct.pack("<Q", 4) + b"null", struct.pack("<Q", 5) + b"\xff\xfe{}x",
             struct.pack("<Q", 200_002) + b"[" * 100_001 + b"]" * 100_001]
    for key in [k for k in header if k != "__metadata__"][:20]:
        for change in ({"shape": [2**40, 2**40]}, {"dtype": "F64"}, {"dtype": "??"}, {"data_offsets": [0, 2**62]},
                       {"shape": [-1]}):
            h = copy.deepcopy(header)
            h[key].update(change)
            raw = json.dumps(h).encode()
            cases.append(struct.pack("<Q", len(raw)) + raw + data[8 + header_len:])
    for meta_value in ("{", "[]", "1", json.dumps({"format_version": 1}), ""):
        h = copy.deepcopy(header)
        h["__metadata__"][META_KEY] = meta_value
        raw = json.dumps(h).encode()
        cases.append(struct.pack("<Q", len(raw)) + raw + data[8 + header_len:])
    h = copy.deepcopy(header)
    del h["__metadata__"]
    raw = json.dumps(h).encode()
    cases.append(struct.pack("<Q", len(raw)) + raw + data[8 + header_len:])
    for case in cases:
        assert check(case, meta, tensors) == "error"


def test_unknown_version_names_the_fix(original):
    _, meta, tensors = original
    with pytest.raises(SparksFormatError, match="sparks export"):
        read_sparks_bytes(crafted({**meta, "format_version": 3}, tensors))
