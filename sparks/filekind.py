"""What kind of file a path holds, from its first bytes, so that a wrong file gets a message saying what to do.

A training checkpoint is a ``torch.save`` zip archive (``PK\\x03\\x04``); a ``.sparks`` file is a safetensors
container (an 8-byte little-endian header length, then a JSON header starting with ``{``). No torch import here.
"""

from __future__ import annotations

from pathlib import Path

from sparks.errors import CheckpointError, UsageError

CHECKPOINT = "a training checkpoint"
SPARKS = "a .sparks model"
_PEEK = 64


def file_kind(path: str | Path) -> str:
    """A short description of what ``path`` holds: :data:`CHECKPOINT`, :data:`SPARKS`, or what else it is
    ("an empty file", "a text file", "a directory", "a legacy (non-zip) torch pickle", "a binary file of an
    unknown kind"). Raises ``UsageError`` if it does not exist or cannot be read."""
    return _kind_and_head(path, UsageError)[0]


def _kind_and_head(path: str | Path, error: type[UsageError]) -> tuple[str, bytes]:
    """What :func:`file_kind` says, and the first bytes it read (empty for a directory)."""
    path = Path(path)
    if path.is_dir():
        return "a directory", b""
    if not path.exists():
        raise error(f"{path} does not exist")
    try:
        with open(path, "rb") as f:
            head = f.read(_PEEK)
        size = path.stat().st_size
    except OSError as err:
        raise error(f"cannot read {path}: {err.strerror or err}") from None
    if not head:
        return "an empty file", head
    if head.startswith(b"PK\x03\x04"):
        return CHECKPOINT, head
    if len(head) > 8 and head[8:9] == b"{" and 2 <= int.from_bytes(head[:8], "little") <= size - 8:
        return SPARKS, head
    if head[:1] == b"\x80" and 2 <= head[1] <= 5:
        return "a legacy (non-zip) torch pickle", head
    if _is_text(head):
        return "a text file", head
    return "a binary file of an unknown kind", head


def expect_checkpoint(path: str | Path, flag: str = "--checkpoint") -> bytes:
    """Raise ``CheckpointError`` (a ``UsageError``) saying what ``path`` is and what to do unless it looks like a
    training checkpoint; returns the first bytes read (at most 64), so that the zip check need not read them again.
    :func:`sparks.train.checkpoint.load_checkpoint` calls it, so API callers and the CLI get the same line."""
    kind, head = _kind_and_head(path, CheckpointError)
    if kind == CHECKPOINT:
        return head
    if kind == SPARKS:
        raise CheckpointError(f"{path} is {SPARKS}, not a training checkpoint; give it to "
                              f"`sparks run --model {path}` or `sparks bench --model {path}`, or pass {flag} a .pt "
                              "file written by `sparks train`")
    raise CheckpointError(f"{path} is not a sparks checkpoint (it is {kind}); pass {flag} a .pt file written by "
                          "`sparks train` (e.g. OUT/best.pt)")


def expect_sparks(path: str | Path, flag: str = "--model") -> None:
    """Raise ``UsageError`` saying what ``path`` is and what to do unless it looks like a ``.sparks`` file."""
    kind = file_kind(path)
    if kind == SPARKS:
        return
    if kind == CHECKPOINT:
        name = Path(path).name
        raise UsageError(f"{path} is a training checkpoint; export it with "
                         f"`sparks export --checkpoint {path} --out {Path(name).stem}.sparks`")
    raise UsageError(f"{path} is not a .sparks model (it is {kind}); pass {flag} a file written by `sparks export`")


def _is_text(head: bytes) -> bool:
    """Printable UTF-8 (the peek may cut a multi-byte character at its end)."""
    for cut in range(4):
        try:
            text = head[:len(head) - cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
        return bool(text) and all(ch.isprintable() or ch in "\t\r\n\f" for ch in text)
    return False
