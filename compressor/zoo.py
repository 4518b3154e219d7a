"""Building zoo models with errors the CLI can print as one line."""
from __future__ import annotations

from torch import nn

from compressor.errors import CompressorError
from models import UnknownModelError, build_model, get_entry
from models.registry import ModelEntry


def entry(name: str) -> ModelEntry:
    try:
        return get_entry(name)
    except UnknownModelError as error:
        raise CompressorError(str(error)) from error


def build(name: str, num_classes: int | None = None, weights: str | None = None) -> nn.Module:
    entry(name)
    try:
        return build_model(name, num_classes=num_classes, weights=weights)
    except (FileNotFoundError, ValueError) as error:
        raise CompressorError(str(error).splitlines()[0]) from error
