"""The ``.sparks`` file: a safetensors file holding a compressed layer table and three data blobs (no torch here).

``write_sparks(path, metadata, tensors)`` / ``read_sparks(path) -> (metadata, tensors)``; bytes forms
``sparks_bytes`` / ``read_sparks_bytes``. The reader checks before it allocates: the 8-byte header length against
the file size, the header's declared tensors against the bytes that follow, the decompressed table's size, then every
field and size in the table against :class:`sparks.limits.Limits`, and only then the tensor data (checksum, dtypes,
shapes, finite values, kernel indices). A truncated, corrupted, crafted or oversized file raises
:class:`SparksFormatError` and nothing else. Byte-level layout: ``docs/format.md``.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import zlib
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from sparks.atomic import atomic_path
from sparks.deploy.bits import (
    CODE_BITS,
    FULL_CODEBOOK,
    codeword_to_kernel,
    decode_subbit,
    index_bits,
    pack_bits,
    packed_nbytes,
    unpack_bits,
)
from sparks.deploy.table import FORMAT_VERSION, check_version, tensor_layout, validate
from sparks.errors import SparksFormatError
from sparks.limits import Limits, check_size, resolve

META_KEY = "sparks"  # safetensors metadata: '{"format_version": 2}' (what a version-1 reader checks first)
DIGEST_KEY = "sparks_sha256"  # sha256 of the data section (every byte after the header)
TABLE = "layers"  # U8 tensor: the zlib-compressed JSON layer table
BLOBS = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "U8": np.dtype("|u1")}  # tensors of each dtype, in order
_ORDER = ("F32", "F16", "U8", TABLE)  # data order in the file: 4-, 2-, then 1-byte elements (every one aligned)
_CODES = {np.dtype("<f4"): "F32", np.dtype("<f2"): "F16", np.dtype("|u1"): "U8"}

__all__ = ["CODE_BITS", "FORMAT_VERSION", "FULL_CODEBOOK", "SparksFormatError", "codeword_to_kernel",
           "decode_subbit", "index_bits", "pack_bits", "packed_nbytes", "read_sparks", "read_sparks_bytes",
           "sparks_bytes", "unpack_bits", "validate", "write_sparks"]


# --------------------------------------------------------------------------------------------- write
def sparks_bytes(metadata: dict[str, Any], tensors: dict[str, np.ndarray], *, check: bool = True) -> bytes:
    """The file's bytes for ``metadata`` (the layer table, with ``format_version``) and ``tensors``.

    ``check=False`` skips validation (for tests and the fuzzer, which write hostile files on purpose); tensors the
    table does not list then follow in the order given, each in the blob of its dtype.
    """
    tensors = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    if check:
        validate(metadata, tensors)
    try:
        order = [name for name, _, _ in tensor_layout(metadata)]
    except SparksFormatError:
        if check:
            raise
        order = []
    order += [name for name in tensors if name not in order]
    blobs: dict[str, list[bytes]] = {}
    for name in order:
        if name in tensors:
            t = tensors[name]
            blobs.setdefault(_CODES.get(t.dtype.newbyteorder("<") if t.dtype.byteorder == ">" else t.dtype,
                                        "F32" if t.dtype.kind == "f" else "U8"), []).append(t.tobytes())
    table = zlib.compress(json.dumps(metadata, separators=(",", ":")).encode(), 9)
    parts = {key: b"".join(blobs[key]) for key in _ORDER[:-1] if key in blobs}
    parts[TABLE] = table
    return pack_container(parts, hashlib.sha256(b"".join(parts[k] for k in _ORDER if k in parts)).hexdigest())


def pack_container(parts: dict[str, bytes], digest: str, version: object = FORMAT_VERSION) -> bytes:
    """A safetensors file of 1-D tensors ``parts`` (name → raw bytes; dtype from the name, U8 for ``layers``)."""
    header: dict[str, Any] = {"__metadata__": {META_KEY: json.dumps({"format_version": version}), DIGEST_KEY: digest}}
    offset = 0
    for key in [k for k in _ORDER if k in parts] + [k for k in parts if k not in _ORDER]:
        size = BLOBS.get(key, BLOBS["U8"]).itemsize
        header[key] = {"dtype": key if key in BLOBS else "U8", "shape": [len(parts[key]) // size],
                       "data_offsets": [offset, offset + len(parts[key])]}
        offset += len(parts[key])
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    body = b"".join(parts[k] for k in header if k != "__metadata__")
    return struct.pack("<Q", len(raw)) + raw + body


def write_sparks(path: str | Path, metadata: dict[str, Any], tensors: dict[str, np.ndarray]) -> None:
    """Write a ``.sparks`` file atomically (temp file in the same folder, then ``os.replace``)."""
    data = sparks_bytes(metadata, tensors)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


# --------------------------------------------------------------------------------------------- read
def read_sparks(path: str | Path, limits: Limits | None = None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read and fully validate a ``.sparks`` file → (metadata, tensors). Raises SparksFormatError/FileNotFoundError.

    ``limits`` raises the default :class:`sparks.limits.Limits` on purpose (e.g. for a model over 134 M
    parameters); memory used is about the file's size plus the tensors it describes.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such model file: {path}")
    try:
        with open(path, "rb") as f:
            return _read(f, path.stat().st_size, resolve(limits))
    except SparksFormatError as err:
        raise SparksFormatError(f"{path}: {err}") from None
    except OSError as err:
        raise SparksFormatError(f"{path}: cannot read ({err.strerror or err})") from None


def read_sparks_bytes(data: bytes, limits: Limits | None = None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """:func:`read_sparks` on the bytes of a file."""
    return _read(io.BytesIO(data), len(data), resolve(limits))


def _read_exactly(f: BinaryIO, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise SparksFormatError(f"truncated file: expected {n} more bytes, got {len(data)}")
    return data


def _read(f: BinaryIO, size: int, lim: Limits) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    check_size("file size", size, lim.max_file_bytes, "max_file_bytes", SparksFormatError)
    if size < 8:
        raise SparksFormatError(f"truncated file: {size} bytes, no safetensors header")
    first = _read_exactly(f, 8)
    if first[:4] == b"PK\x03\x04":
        raise SparksFormatError("is a zip archive, not a .sparks file: a training checkpoint is exported with "
                                "`sparks export --checkpoint CKPT --out FILE`")
    (n,) = struct.unpack("<Q", first)
    if 8 + n > size:
        raise SparksFormatError(f"truncated or corrupted file: header of {n} bytes in a {size}-byte file")
    check_size("header size", n, lim.max_header_bytes, "max_header_bytes", SparksFormatError)
    parts, digest = _parse_header(_read_exactly(f, n), size - 8 - n, lim)
    # the (small) layer table first: its tensors must fill the blobs exactly before the blobs are read
    f.seek(8 + n + parts[TABLE][0])
    metadata = _table(_read_exactly(f, parts[TABLE][1] - parts[TABLE][0]), lim)
    layout = tensor_layout(metadata, lim)
    need = dict.fromkeys(BLOBS, 0)
    for _, dtype, shape in layout:
        need[_CODES[dtype]] += int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    for key in BLOBS:
        have = parts[key][1] - parts[key][0] if key in parts else 0
        if have != need[key]:
            raise SparksFormatError(f"the {key} data holds {have:,} bytes, the layer table's tensors {need[key]:,}")
    f.seek(8 + n)
    data = _read_exactly(f, size - 8 - n)  # == the table's tensors + the table: bounded by the model it describes
    if hashlib.sha256(data).hexdigest() != digest:
        raise SparksFormatError("checksum mismatch: the file is corrupted")
    tensors: dict[str, np.ndarray] = {}
    cursor = {key: parts[key][0] for key in parts}
    for name, dtype, shape in layout:
        key = _CODES[dtype]
        count = int(np.prod(shape, dtype=np.int64))
        tensors[name] = np.frombuffer(data, dtype=dtype, count=count, offset=cursor[key]).reshape(shape)
        cursor[key] += count * dtype.itemsize
    validate(metadata, tensors, lim)
    return metadata, tensors


def _parse_header(raw: bytes, data_size: int, lim: Limits) -> tuple[dict[str, tuple[int, int]], str]:
    """The safetensors header → ({tensor name: (begin, end)}, digest); checks names, dtypes and exact coverage."""
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise SparksFormatError("corrupted safetensors header (not JSON)") from None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(meta, dict) or not isinstance(meta.get(META_KEY), str) or not isinstance(
            meta.get(DIGEST_KEY), str):
        raise SparksFormatError(f"not a sparks model: no {META_KEY!r}/{DIGEST_KEY!r} metadata in the header")
    try:
        marker = json.loads(meta[META_KEY])
    except (ValueError, RecursionError):
        raise SparksFormatError("sparks metadata is not valid JSON") from None
    check_version(marker.get("format_version") if isinstance(marker, dict) else None)
    parts: dict[str, tuple[int, int]] = {}
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        if key not in BLOBS and key != TABLE:
            raise SparksFormatError(f"unexpected tensor {key!r:.60} in the file")
        if not isinstance(entry, dict) or entry.get("dtype") != (key if key in BLOBS else "U8"):
            raise SparksFormatError(f"tensor {key!r}: dtype must be {key if key in BLOBS else 'U8'}")
        shape, offsets = entry.get("shape"), entry.get("data_offsets")
        if not (isinstance(shape, list) and len(shape) == 1 and isinstance(offsets, list) and len(offsets) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in shape + offsets)):
            raise SparksFormatError(f"tensor {key!r}: shape must be [n] and data_offsets [begin, end]")
        begin, end = offsets
        if end - begin != shape[0] * BLOBS.get(key, BLOBS["U8"]).itemsize:
            raise SparksFormatError(f"tensor {key!r}: data_offsets {offsets} do not match shape {shape}")
        parts[key] = (begin, end)
    if TABLE not in parts:
        raise SparksFormatError(f"no {TABLE!r} tensor (the layer table) in the file")
    spans = sorted(parts.values())
    gaps = any(a[1] != b[0] for a, b in zip(spans, spans[1:], strict=False))
    if spans[0][0] != 0 or spans[-1][1] != data_size or gaps:
        raise SparksFormatError(f"tensors do not cover the {data_size} data bytes exactly, without gaps or overlaps")
    check_size("layer table size", parts[TABLE][1] - parts[TABLE][0], lim.max_table_bytes, "max_table_bytes",
               SparksFormatError)
    return parts, meta[DIGEST_KEY]


def _table(compressed: bytes, lim: Limits) -> dict[str, Any]:
    """Decompress (at most ``max_table_bytes``) and parse the layer table."""
    d = zlib.decompressobj()
    try:
        raw = d.decompress(compressed, lim.max_table_bytes + 1)
    except zlib.error as err:
        raise SparksFormatError(f"layer table is not valid zlib data ({err})") from None
    check_size("decompressed layer table", len(raw), lim.max_table_bytes, "max_table_bytes", SparksFormatError)
    if not d.eof or d.unused_data or d.unconsumed_tail:
        raise SparksFormatError("layer table is truncated or has trailing bytes")
    try:
        metadata = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise SparksFormatError(f"layer table is not valid JSON ({str(err)[:80]})") from None
    if not isinstance(metadata, dict):
        raise SparksFormatError("layer table must be a JSON object")
    return metadata
