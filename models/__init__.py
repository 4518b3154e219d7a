"""Model zoo: CIFAR networks plus every torchvision classifier, by name."""

from .registry import ModelEntry, UnknownModelError, build_model, get_entry, list_models

__all__ = ["ModelEntry", "UnknownModelError", "build_model", "get_entry", "list_models"]
