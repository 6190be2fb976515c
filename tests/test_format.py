"""sparks.format: bit packing against a brute-force reference, codeword decoding, atomic writes, read errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sparks.core.codebook import index_to_kernel
from sparks.deploy.format import (
    SparksFormatError,
    codeword_to_kernel,
    index_bits,
    pack_bits,
    packed_nbytes,
    read_sparks,
    unpack_bits,
    write_sparks,
)


def brute_pack(values: list[int], bits: int) -> bytes:
    stream = "".join(format(v, f"0{bits}b")[::-1] for v in values)  # LSB first
    stream += "0" * (-len(stream) % 8)
    return bytes(int(stream[i:i + 8][::-1], 2) for i in range(0, len(stream), 8))


@pytest.mark.parametrize("bits", range(1, 10))
def test_pack_bits_matches_brute_force(bits):
    rng = np.random.default_rng(bits)
    for count in (0, 1, 7, 8, 9, 63, 200):
        values = rng.integers(0, 1 << bits, count)
        packed = pack_bits(values, bits)
        assert packed.dtype == np.uint8 and packed.size == packed_nbytes(count, bits)
        assert packed.tobytes() == brute_pack(values.tolist(), bits)
        assert np.array_equal(unpack_bits(packed, count, bits), values)


def test_pack_bits_rejects_out_of_range_and_wrong_sizes():
    with pytest.raises(ValueError):
        pack_bits(np.array([4]), 2)
    with pytest.raises(SparksFormatError):
        unpack_bits(np.zeros(3, np.uint8), 5, 5)
    assert [index_bits(n) for n in (1, 2, 3, 16, 17, 32, 512)] == [1, 1, 2, 4, 5, 5, 9]


def test_codeword_to_kernel_matches_codebook():
    codes = np.arange(512)
    assert np.array_equal(codeword_to_kernel(codes), index_to_kernel(torch.from_numpy(codes)).numpy())


def _tiny_file() -> tuple[dict, dict]:
    meta = {"format_version": 2, "model_name": None, "model_args": {}, "tau": 9, "method": "float", "num_classes": 2,
            "input": {"channels": 1, "height": 2, "width": 2}, "real_dtype": "float32",
            "ops": [{"op": "flatten", "name": "f", "inputs": ["input"], "output": "f"},
                    {"op": "linear", "name": "fc", "inputs": ["f"], "output": "fc", "in_features": 4,
                     "out_features": 2, "bias": False}]}
    return meta, {"fc.weight": np.arange(8, dtype=np.float32).reshape(2, 4)}


def test_write_is_atomic_and_validated(tmp_path):
    meta, tensors = _tiny_file()
    path = tmp_path / "m.sparks"
    write_sparks(path, meta, tensors)
    good = path.read_bytes()
    got_meta, got = read_sparks(path)
    assert got_meta == meta and np.array_equal(got["fc.weight"], tensors["fc.weight"])
    with pytest.raises(SparksFormatError, match="fc.weight"):
        write_sparks(path, meta, {"fc.weight": np.zeros((2, 5), np.float32)})
    assert path.read_bytes() == good  # the old file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.sparks"]  # no temp files left


def test_read_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_sparks(tmp_path / "nope.sparks")
    (tmp_path / "empty.sparks").write_bytes(b"")
    with pytest.raises(SparksFormatError, match="empty.sparks"):
        read_sparks(tmp_path / "empty.sparks")


def test_unpack_bits_spans_chunks_and_is_uint16():
    rng = np.random.default_rng(7)
    for bits in (1, 5, 9):
        count = (1 << 18) * 2 + 13  # three chunks, the last one partial
        values = rng.integers(0, 1 << bits, count)
        stream = ((values[:, None] >> np.arange(bits)) & 1).astype(np.uint8).ravel()  # one-shot reference
        packed = pack_bits(values, bits)
        assert np.array_equal(packed, np.packbits(stream, bitorder="little"))
        got = unpack_bits(packed, count, bits)
        assert got.dtype == np.uint16 and np.array_equal(got, values)


def test_version_1_file_is_refused_with_the_fix(tmp_path):
    import json
    import struct

    from safetensors.numpy import save

    meta, tensors = _tiny_file()
    meta_json = json.dumps({**meta, "format_version": 1})
    (tmp_path / "old.sparks").write_bytes(save(tensors, metadata={"sparks": meta_json, "sparks_sha256": "0" * 64}))
    with pytest.raises(SparksFormatError, match=r"format version 1 is not supported .* `sparks export"):
        read_sparks(tmp_path / "old.sparks")
    (tmp_path / "ckpt.pt").write_bytes(b"PK\x03\x04" + struct.pack("<Q", 1 << 40))
    with pytest.raises(SparksFormatError, match="training checkpoint is exported with `sparks export"):
        read_sparks(tmp_path / "ckpt.pt")


def test_any_safetensors_reader_lists_the_blobs(tmp_path):
    from safetensors.numpy import load

    meta, tensors = _tiny_file()
    write_sparks(tmp_path / "m.sparks", meta, tensors)
    blobs = load((tmp_path / "m.sparks").read_bytes())
    assert sorted(blobs) == ["F32", "layers"] and np.array_equal(blobs["F32"], tensors["fc.weight"].ravel())
