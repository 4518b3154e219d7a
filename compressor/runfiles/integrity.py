"""A sha256 digest of what a pruned model file or a checkpoint holds, written with it and
checked when it is read.

``torch.load(weights_only=True)`` keeps a file from running code, but it reads whatever
bytes are there: 4 KB of noise written into a tensor's data loads as weights, and a
checkpoint edited by hand loads as a run.  The digest covers every value of the payload
-- each tensor's dtype, shape and bytes, and all the metadata around them -- in one
canonical encoding, so any change to what the file holds is caught on load, while the
file's container (torch's zip layout, pickle protocol) may differ.

It is not a signature: whoever edits a file on purpose can recompute it.  It proves a file
is what this tool wrote, undamaged; what may be loaded at all is still decided by
``weights_only`` and ``compressor.trust``, and what a file may say by the loaders' checks.
"""
from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import torch

from compressor.errors import CompressorError

DIGEST_KEY = "sha256"


def payload_digest(payload: dict) -> str:
    """The hex sha256 of every entry of ``payload`` except the digest itself."""
    hasher = hashlib.sha256()
    _feed(hasher, {key: value for key, value in payload.items() if key != DIGEST_KEY})
    return hasher.hexdigest()


def sealed(payload: dict) -> dict:
    """``payload`` with its digest (what the writers save)."""
    return {**payload, DIGEST_KEY: payload_digest(payload)}


def check_digest(payload: dict, path: Path, error: type[CompressorError] = CompressorError) -> bool:
    """True when ``payload`` carries its digest and it matches; False when it carries none (a
    file written before digests: each loader decides, and says why); a mismatch is refused
    with ``error`` (the loader's own kind)."""
    if DIGEST_KEY not in payload:
        return False
    stored = payload[DIGEST_KEY]
    try:
        matches = isinstance(stored, str) and stored == payload_digest(payload)
    except TypeError as odd:  # a value no writer of ours produces
        raise error(f"{path} fails its integrity check ({odd}); refused to load it") from odd
    if not matches:
        raise error(
            f"{path} fails its integrity check: the sha256 of its tensors and metadata is not the one written with "
            "it (the file was damaged or edited after it was written); refused to load it"
        )
    return True


def _feed(hasher, value) -> None:
    """Type tag, then length-prefixed content: two different payloads never encode alike."""
    if isinstance(value, torch.Tensor):
        _tensor(hasher, value)
    elif isinstance(value, dict):
        _tag(hasher, b"d", str(len(value)).encode())
        for key, item in value.items():
            _feed(hasher, key)
            _feed(hasher, item)
    elif isinstance(value, (list, tuple)):  # torch.Size too
        _tag(hasher, b"l" if isinstance(value, list) else b"t", str(len(value)).encode())
        for item in value:
            _feed(hasher, item)
    else:
        _tag(hasher, *_scalar(value))


def _scalar(value) -> tuple[bytes, bytes]:
    if value is None:
        return b"n", b""
    if isinstance(value, bool):  # before int: True is an int too
        return b"b", b"1" if value else b"0"
    if isinstance(value, int):
        return b"i", str(value).encode()
    if isinstance(value, float):
        return b"f", struct.pack("<d", value)
    if isinstance(value, str):
        return b"s", value.encode("utf-8", "surrogatepass")
    if isinstance(value, bytes):
        return b"y", value
    if isinstance(value, (torch.dtype, torch.device)):
        return b"o", str(value).encode()
    raise TypeError(f"it holds a {type(value).__name__}, which no file of this tool contains")


def _tensor(hasher, tensor: torch.Tensor) -> None:
    tensor = tensor.detach().cpu().contiguous()
    _tag(hasher, b"T", f"{tensor.dtype}|{list(tensor.shape)}".encode())
    data = tensor.reshape(-1).view(torch.uint8).numpy()  # the raw bytes, whatever the dtype
    _tag(hasher, b"B", str(data.size).encode())
    hasher.update(memoryview(data))


def _tag(hasher, kind: bytes, content: bytes) -> None:
    hasher.update(kind + str(len(content)).encode() + b":" + content)
