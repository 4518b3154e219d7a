"""Name -> model lookup for the CIFAR zoo and every torchvision classifier.

Entries only hold builders; nothing is constructed until `build_model`, so
importing the registry stays cheap even though it lists ~90 networks. The
torchvision names are read from the installed torchvision at import, so a
newer release is picked up without editing this file. All models start from
random init: weights come from a local file or a library's cache (``pretrained``), never a download.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from compressor.arguments import check_type

import torchvision
from torch import nn

from .cifar_resnet import resnet20, resnet32, resnet56, resnet110
from .mobilenetv2_cifar import mobilenetv2_cifar
from .timm_models import TimmError, architecture, build_timm, is_timm_name, native_input_size
from .vgg_cifar import vgg16_cifar, vgg19_cifar
from .vit_cifar import vit_tiny_cifar
from .pretrained import read_weights
from .weights import load_state

CIFAR_INPUT_SIZE = (3, 32, 32)
CIFAR_NUM_CLASSES = 10
IMAGENET_INPUT_SIZE = (3, 224, 224)
IMAGENET_NUM_CLASSES = 1000

# Architectures that are defined for a different resolution than 224.
# (Pretrained weights of e.g. EfficientNet-B7 or vit_h_14/SWAG were *trained*
# at larger sizes, but the randomly initialised architectures built here are
# 224-native: vit_h_14 defaults to image_size=224 when built without weights.)
TORCHVISION_INPUT_SIZES = {"inception_v3": (3, 299, 299)}

# Without aux heads these return a plain tensor in train mode too, and
# explicit init_weights silences torchvision's FutureWarning.
TORCHVISION_EXTRA_KWARGS: dict[str, dict[str, Any]] = {
    "googlenet": {"aux_logits": False, "init_weights": True},
    "inception_v3": {"aux_logits": False, "init_weights": True},
}


# torchvision's detectors and segmenters (random init, backbone too): their default class counts
# (COCO with background, Pascal VOC) and the image size their example input uses.
DETECTION = "torchvision-detection"
SEGMENTATION = "torchvision-segmentation"
TASK_DEFAULTS = {DETECTION: ((3, 320, 320), 91), SEGMENTATION: ((3, 224, 224), 21)}


@dataclass(frozen=True)
class ModelEntry:
    """What callers need to know about a model before building it."""

    name: str
    family: str  # "cifar", "torchvision", DETECTION, SEGMENTATION, "timm" or "factory" (module.path:factory)
    input_size: tuple[int, int, int]  # (C, H, W)
    num_classes: int  # default
    builder: Callable[..., nn.Module]


class UnknownModelError(ValueError):
    """Raised for a name that is not registered; suggests near misses."""

    def __init__(self, name: str, known: list[str]) -> None:
        close = difflib.get_close_matches(name, known, n=3)
        hint = f"did you mean: {', '.join(close)}?" if close else "run `compress models` for the full list"
        super().__init__(f"unknown model {name!r}; {hint}")


def _cifar_entries() -> dict[str, ModelEntry]:
    builders = (resnet20, resnet32, resnet56, resnet110,
                vgg16_cifar, vgg19_cifar, mobilenetv2_cifar, vit_tiny_cifar)
    return {
        b.__name__: ModelEntry(b.__name__, "cifar", CIFAR_INPUT_SIZE, CIFAR_NUM_CLASSES, b)
        for b in builders
    }


def _build_torchvision(name: str, num_classes: int) -> nn.Module:
    """Randomly initialised torchvision classifier (weights=None: no download)."""
    extra = TORCHVISION_EXTRA_KWARGS.get(name, {})
    return torchvision.models.get_model(name, weights=None, num_classes=num_classes, **extra)


def _torchvision_entries() -> dict[str, ModelEntry]:
    names = torchvision.models.list_models(module=torchvision.models)
    return {
        name: ModelEntry(
            name,
            "torchvision",
            TORCHVISION_INPUT_SIZES.get(name, IMAGENET_INPUT_SIZE),
            IMAGENET_NUM_CLASSES,
            partial(_build_torchvision, name),
        )
        for name in names
    }


def _build_task_model(name: str, family: str, num_classes: int, input_size=None) -> nn.Module:
    """A randomly initialised detector or segmenter, its backbone too (nothing downloaded).  A
    detector's own transform resizes images to 800 px unless told the example's size."""
    extra: dict[str, Any] = {}
    if family == DETECTION and input_size is not None and not name.startswith("ssd"):
        extra = {"min_size": input_size[-2], "max_size": max(input_size[-2:])}
    return torchvision.models.get_model(name, weights=None, weights_backbone=None, num_classes=num_classes, **extra)


def _task_entries() -> dict[str, ModelEntry]:
    entries = {}
    for family, module in ((DETECTION, torchvision.models.detection), (SEGMENTATION, torchvision.models.segmentation)):
        size, classes = TASK_DEFAULTS[family]
        for name in torchvision.models.list_models(module=module):
            entries[name] = ModelEntry(name, family, size, classes, partial(_build_task_model, name, family))
    return entries


def example_input(family: str, input_size, batch: int = 1, random: bool = True):
    """What the model of ``family`` takes: a batch tensor, or for torchvision's detectors a
    list of ``batch`` images (passed as the one positional argument, hence the outer list)."""
    import torch

    make = torch.randn if random else torch.zeros
    if family == DETECTION:
        return [[make(*input_size).abs().clamp_(max=1) for _ in range(batch)]]  # images in 0-1
    return make(batch, *input_size)


# The zoo wins should a future torchvision release reuse one of its names.
_REGISTRY: dict[str, ModelEntry] = {**_torchvision_entries(), **_task_entries(), **_cifar_entries()}


def list_models() -> list[str]:
    """All names: the CIFAR zoo first, then torchvision, each alphabetical."""
    return sorted(_REGISTRY, key=lambda name: (_REGISTRY[name].family != "cifar", name))


def get_entry(name: str) -> ModelEntry:
    """Metadata for `name`; raises UnknownModelError with suggestions (TimmError for a
    ``timm:NAME`` that timm does not know, or without timm installed)."""
    if is_timm_name(name):
        arch = architecture(name)
        return ModelEntry(name, "timm", native_input_size(arch), IMAGENET_NUM_CLASSES, partial(build_timm, arch))
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownModelError(name, list(_REGISTRY)) from None


def build_model(name: str, num_classes: int | None = None, weights: str | Path | None = None,
                input_size=None, new_head: bool = False) -> nn.Module:
    """Construct `name` (random init), optionally loading trained weights.

    `weights`: a local state_dict file, or for torchvision and timm models a weights
    name read from their cache (``IMAGENET1K_V1``, ``DEFAULT``; compressor.models.pretrained).
    `num_classes` overrides the entry's default head size; the weights must then match
    that head, unless `new_head`: then a classifier head trained for another class count
    is re-initialised for `num_classes` (compressor.models.weights).
    `input_size` (C, H, W) only matters to timm models with a fixed input size
    (ViT, Swin ...), which are then built for it; the others take any size.
    """
    check_type(name, str, "name", "build_model", "a model name (see `compress models`)")
    if num_classes is not None:
        check_type(num_classes, int, "num_classes", "build_model", "an int or None")
    if weights is not None:
        check_type(weights, (str, os.PathLike), "weights", "build_model", "a file path, a weights name or None")
    entry = get_entry(name)
    classes = entry.num_classes if num_classes is None else num_classes
    if entry.family in ("timm", DETECTION, SEGMENTATION):
        model = entry.builder(num_classes=classes, input_size=input_size)
    else:
        model = entry.builder(num_classes=classes)
    if weights is not None:
        state, source = read_weights(name, entry.family, weights, input_size)
        load_state(model, state, source, classes if new_head else None)
    return model
