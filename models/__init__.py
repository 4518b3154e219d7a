"""Model zoo: CIFAR networks, every torchvision classifier and (with timm installed) ``timm:NAME``."""

from .registry import ModelEntry, UnknownModelError, build_model, get_entry, list_models
from .timm_models import TimmError

__all__ = ["ModelEntry", "TimmError", "UnknownModelError", "build_model", "get_entry", "list_models"]
