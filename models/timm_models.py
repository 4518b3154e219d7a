"""timm models by name: ``timm:NAME`` (timm is an optional extra).

``timm:resnet18d``, ``timm:vit_tiny_patch16_224`` ... build ``timm.create_model(NAME,
pretrained=False, num_classes=N)``: random init, never a hub download.  The native
input size comes from the model's default pretrained config.  Models with a fixed
input size (ViT, DeiT, Swin ...) are rebuilt for another resolution with
``img_size`` when one is asked for, so the same name works at 32x32 on CIFAR-size
data and at 224x224 on ImageNet-size data (the saved model spec stores the size,
so loading rebuilds the same architecture).
"""
from __future__ import annotations

import difflib
from functools import lru_cache

from torch import nn

PREFIX = "timm:"
DEFAULT_INPUT_SIZE = (3, 224, 224)
DEFAULT_NUM_CLASSES = 1000


class TimmError(ValueError):
    """timm is missing, or the name is not a timm model (with near misses)."""


def is_timm_name(name: str) -> bool:
    return name.startswith(PREFIX)


def _timm():
    try:
        import timm
    except ImportError as error:
        raise TimmError(
            "timm models need the optional timm package: pip install 'onecycle-compress[timm]' (or pip install timm)"
        ) from error
    return timm


@lru_cache(maxsize=1)
def architectures() -> tuple[str, ...]:
    return tuple(_timm().list_models())


def architecture(name: str) -> str:
    """``timm:vit_tiny_patch16_224`` -> ``vit_tiny_patch16_224`` (checked, with suggestions)."""
    if not is_timm_name(name):
        raise TimmError(f"not a timm model name: {name!r} (expected {PREFIX}NAME)")
    arch = name[len(PREFIX):]
    timm = _timm()
    if not arch or not timm.models.is_model(arch.split(".")[0]):
        close = difflib.get_close_matches(arch, architectures(), n=3, cutoff=0.6)
        hint = (
            f"did you mean: {', '.join(PREFIX + c for c in close)}?"
            if close
            else "see timm.list_models() for the names"
        )
        raise TimmError(f"unknown timm model {arch!r}; {hint}")
    return arch


def native_input_size(arch: str) -> tuple[int, int, int]:
    cfg = _timm().models.get_pretrained_cfg(arch)
    size = getattr(cfg, "input_size", None) if cfg is not None else None
    return tuple(int(v) for v in size) if size else DEFAULT_INPUT_SIZE


def build_timm(arch: str, num_classes: int = DEFAULT_NUM_CLASSES, input_size=None, **pretrained) -> nn.Module:
    """Random-init timm model; ``input_size`` (C, H, W) other than the native one is passed
    as ``img_size`` to architectures that take it (the others accept any size anyway).
    ``pretrained``: timm's own arguments for loading weights (``compressor.models.pretrained``
    passes a local file), else random init."""
    timm = _timm()
    kwargs = {"pretrained": False, "num_classes": num_classes, **pretrained}
    if input_size is not None and tuple(input_size)[1:] != native_input_size(arch)[1:]:
        try:
            return timm.create_model(arch, img_size=tuple(input_size)[1:], **kwargs)
        except TypeError as error:
            if "img_size" not in str(error):
                raise
    return timm.create_model(arch, **kwargs)
