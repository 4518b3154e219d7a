"""The handwritten digits shipped in the package: real images, offline, in the default install.

1,797 grey 8x8 images of the digits 0-9 (the UCI optical digits as scikit-learn ships them;
``DIGITS_LICENSE.md`` beside this file gives their source, creators and CC BY 4.0 licence).
A model learns them to 95-99 %, so accuracy figures measured on them mean something, where the
generated ``synthetic`` set only tells whether training runs at all.

How an image becomes a model input (``upsample``): the 0-16 counts are divided by 16, the 8x8
image is upsampled bilinearly to 32x32 (``align_corners=False``, torchvision's and PIL's
convention) and its grey channel repeated three times, so CIFAR-shaped models take it
unchanged.  The train/val split is fixed (``split``): stratified by digit, drawn once from
``SPLIT_SEED``, the same for every run and every ``--seed``, so runs with different seeds are
judged on the same 297 images.

The file is read as data: its sha256 is checked before it is parsed, and it holds nothing but
numbers.
"""
from __future__ import annotations

import gzip
import hashlib
import io
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from compressor.errors import CompressorError

FILE = Path(__file__).with_name("digits.csv.gz")
SHA256 = "09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22"
COUNT = 1797
SOURCE_SIDE = 8
MAX_VALUE = 16  # each source pixel counts the "on" pixels of a 4x4 block
SIZE = 32
CLASSES = tuple(str(digit) for digit in range(10))
VAL_IMAGES = 297  # 1,500 train / 297 val
SPLIT_SEED = 1797
# Per-channel mean and std of the training split after ``upsample`` (the three channels are
# one grey channel repeated); tests/unit/test_digits.py recomputes them from the file.
MEAN = 0.3047
STD = 0.3233


def read() -> tuple[np.ndarray, np.ndarray]:
    """(pixels ``(1797, 64)`` uint8 in 0-16, labels ``(1797,)`` int64 in 0-9) from the shipped file."""
    try:
        raw = FILE.read_bytes()
    except OSError as error:
        raise CompressorError(f"cannot read the digits file {FILE}: {error.strerror}; reinstall the package") from error
    if hashlib.sha256(raw).hexdigest() != SHA256:
        raise CompressorError(f"{FILE} is not the digits file this version ships (sha256 differs); reinstall the package")
    table = np.loadtxt(io.StringIO(gzip.decompress(raw).decode("ascii")), delimiter=",", dtype=np.int64)
    return table[:, :-1].astype(np.uint8), table[:, -1]


def split(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, val indices): per digit, a fixed shuffle; ``VAL_IMAGES`` in all, shared out
    in proportion to each digit's count (largest remainders get the leftover images)."""
    rng = np.random.default_rng(SPLIT_SEED)
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * VAL_IMAGES / len(labels)
    val_counts = np.floor(quota).astype(int)
    leftover = VAL_IMAGES - int(val_counts.sum())
    val_counts[np.argsort(-(quota - val_counts), kind="stable")[:leftover]] += 1
    train, val = [], []
    for digit, val_count in zip(classes, val_counts):
        members = rng.permutation(np.flatnonzero(labels == digit))
        val.append(members[:val_count])
        train.append(members[val_count:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def upsample(pixels: np.ndarray) -> Tensor:
    """``(N, 64)`` 0-16 counts -> ``(N, 3, 32, 32)`` float images in 0-1 (see the module docstring)."""
    images = torch.from_numpy(pixels.astype(np.float32) / MAX_VALUE).view(-1, 1, SOURCE_SIDE, SOURCE_SIDE)
    images = F.interpolate(images, size=(SIZE, SIZE), mode="bilinear", align_corners=False).clamp_(0.0, 1.0)
    return images.repeat(1, 3, 1, 1)


def load() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(train images, train labels, val images, val labels); images in 0-1, not normalised."""
    pixels, labels = read()
    train, val = split(labels)
    as_labels = torch.from_numpy(labels)
    return upsample(pixels[train]), as_labels[train], upsample(pixels[val]), as_labels[val]
