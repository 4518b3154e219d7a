"""Atomic file writes: a crash or a full disk leaves the old file or the new one.

Every artifact that a later step or a resume relies on (checkpoints, pruned model
files, summaries) is written to a temp file in the same directory, synced, then
renamed over the target.  On failure the temp file is removed and the previous
file is untouched.  The temp file is always a new one from mkstemp and the rename
replaces a link at the target rather than following it, so a symlink planted at
the target or at a staging name never redirects a write.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temp, 0o666 & ~_umask())  # mkstemp makes 0600; artifacts are shared files
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_file(path: str | os.PathLike, make: Callable[[Path], object]) -> Path:
    """For writers that only take a file name (an ONNX exporter, ``onnx.save``): ``make(temp)``
    writes a file that mkstemp just created beside ``path`` (so never a link someone planted at a
    predictable staging name), which is then renamed over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        make(Path(temp))
        os.chmod(temp, 0o666 & ~_umask())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda stream: stream.write(text.encode("utf-8")))


def atomic_torch_save(path: str | os.PathLike, payload: object) -> Path:
    """``torch.save`` into memory first: its zip writer reports a short write as a
    generic RuntimeError, while a plain write surfaces the OS error (disk full)."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return atomic_write(path, lambda stream: stream.write(buffer.getbuffer()))
