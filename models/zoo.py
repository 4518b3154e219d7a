"""Building models by name, with errors the CLI can print as one line.

A model name is one of:

* a zoo or torchvision name (``resnet56``, ``mobilenet_v3_large``; ``compress models``);
* ``timm:NAME`` for a timm model (timm is an optional extra; random init, no download);
* ``module.path:factory``: a callable in an importable module that returns an
  ``nn.Module``, so a user's own architecture needs no registry change.  The module
  is imported like any Python module, and also from the current directory (a
  ``mymodels.py`` next to you works).  The factory is called with ``num_classes=N``
  when it has a ``num_classes`` parameter (or ``**kwargs``), else with no arguments.
  Its native input size is the factory's ``input_size`` attribute, else the module's
  ``INPUT_SIZE``, else 3x224x224 (``--input-size`` overrides it where a command takes one).
  A pruned model file stores the name; loading the file again imports the module only
  with ``--trust-code`` / ``trust_code=True`` (``compressor.trust``), and then the module
  must be importable as it was when the run started.
"""
from __future__ import annotations

import importlib
import inspect
import os
import re
import sys
from functools import partial
from typing import Callable

from torch import nn

from compressor.errors import CompressorError, one_line
from compressor.trust import is_factory_name
from compressor.models import TimmError, UnknownModelError, build_model, get_entry
from compressor.models.registry import IMAGENET_INPUT_SIZE, ModelEntry

_FACTORY = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")


def entry(name: str) -> ModelEntry:
    if is_factory_name(name):
        return _factory_entry(name)
    try:
        return get_entry(name)
    except (UnknownModelError, TimmError) as error:
        raise CompressorError(str(error)) from error


def build(
    name: str, num_classes: int | None = None, weights: str | None = None, input_size=None, new_head: bool = False
) -> nn.Module:
    """``input_size`` (C, H, W) only matters to timm models with a fixed input size; ``weights``
    and ``new_head`` as in ``build_model`` (a factory's weights are a file)."""
    info = entry(name)
    try:
        if info.family == "factory":
            model = info.builder(num_classes=num_classes)
            if weights is not None:
                from compressor.models.weights import load_weights

                load_weights(model, weights, num_classes if new_head else None)
            return model
        return build_model(name, num_classes=num_classes, weights=weights, input_size=input_size, new_head=new_head)
    except (FileNotFoundError, ValueError) as error:
        raise CompressorError(str(error).splitlines()[0]) from error


# -- module.path:factory ---------------------------------------------------------------------
def _factory_entry(name: str) -> ModelEntry:
    module, factory = _load_factory(name)
    size = getattr(factory, "input_size", None) or getattr(module, "INPUT_SIZE", None) or IMAGENET_INPUT_SIZE
    try:
        size = tuple(int(v) for v in size)
        assert len(size) == 3 and all(v > 0 for v in size)
    except (TypeError, ValueError, AssertionError):
        raise CompressorError(f"{name}: its input size {size!r} is not three positive integers C,H,W") from None
    default = _num_classes_default(factory)
    return ModelEntry(name, "factory", size, default, partial(_call_factory, name, factory))


def _load_factory(name: str) -> tuple[object, Callable]:
    if not _FACTORY.match(name):
        raise CompressorError(
            f"model {name!r} is not a model name, timm:NAME or module.path:factory "
            "(e.g. mymodels:make_net for make_net() in mymodels.py)"
        )
    module_name, _, attr = name.partition(":")
    # A name reaches this point only when the user typed it or, read from a file, the
    # caller passed trust_code (compressor.trust refuses it before).  Both mean "the
    # user vouches for this code", and the legitimate file case is a run of the user's
    # own mymodels:make started from their project directory, loaded again from there
    # by the `compress` script, whose sys.path lacks the current directory: searching
    # it is what makes --trust-code work for that case, and it adds nothing an
    # untrusted name could reach.
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)  # after site-packages: a local file never shadows an installed package
    importlib.invalidate_caches()  # a file written since the last import is found too
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name and (module_name == error.name or module_name.startswith(error.name + ".")):
            raise CompressorError(
                f"cannot import module '{module_name}' for model {name!r}: no module named '{error.name}' "
                f"(run from the directory that holds {module_name.split('.')[0]}.py, or install it)"
            ) from error
        raise CompressorError(f"importing '{module_name}' for model {name!r} failed: {one_line(error, 200)}") from error
    except Exception as error:  # noqa: BLE001 - any failure inside the user's module
        raise CompressorError(f"importing '{module_name}' for model {name!r} failed: {one_line(error, 200)}") from error
    factory = getattr(module, attr, None)
    if factory is None:
        public = [n for n in vars(module) if not n.startswith("_") and callable(getattr(module, n))]
        import difflib

        close = difflib.get_close_matches(attr, public, n=3)
        hint = f"; did you mean: {', '.join(close)}?" if close else ""
        raise CompressorError(f"module '{module_name}' has no attribute '{attr}'{hint}")
    if not callable(factory):
        raise CompressorError(f"{name} is a {type(factory).__name__}, not a callable that returns an nn.Module")
    return module, factory


def _accepts_num_classes(factory: Callable) -> bool:
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "num_classes" or p.kind is p.VAR_KEYWORD for p in params)


def _num_classes_default(factory: Callable) -> int | None:
    try:
        param = inspect.signature(factory).parameters.get("num_classes")
    except (TypeError, ValueError):
        return None
    if param is not None and isinstance(param.default, int) and not isinstance(param.default, bool):
        return param.default
    return None


def _call_factory(name: str, factory: Callable, num_classes: int | None = None) -> nn.Module:
    kwargs = {"num_classes": num_classes} if num_classes is not None and _accepts_num_classes(factory) else {}
    try:
        model = factory(**kwargs)
    except Exception as error:  # noqa: BLE001 - the user's code: report it in one line
        raise CompressorError(f"{name}() raised {one_line(error, 200)}") from error
    if not isinstance(model, nn.Module):
        raise CompressorError(f"{name}() returned {type(model).__name__}, not a torch.nn.Module")
    return model
