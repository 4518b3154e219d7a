"""Building a frozen config from recorded values, refusing any value of the wrong type.

A run's settings come back from files (``summary.json``, a checkpoint, ``--config``):
``lr: "0.1"``, ``epochs: 1.7`` or ``epochs: true`` there is refused, never coerced, so a
file cannot quietly change what a run means.  The configs' own ``__post_init__`` checks
the ranges; this module checks the types their annotations promise.

A base-layer module (standard library only): the data floor reads a run's data settings
with it and the training run its three configs, without either importing the other.
"""
from __future__ import annotations

import math
from dataclasses import fields
from typing import Any

from compressor.errors import CompressorError

# A field's annotation (a string under ``from __future__ import annotations``) -> what it accepts.
_ACCEPTS = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "tuple": (tuple,)}


def typed_config(kind: type, values: dict, where: str = "the settings") -> Any:
    """``kind(**values)`` for the keys that are ``kind``'s fields (lists become tuples), after
    checking each value against its field's annotation; other keys are ignored."""
    names = {f.name: f.type for f in fields(kind)}
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in names}
    for key, value in kwargs.items():
        check_type(key, value, names[key], where)
    return kind(**kwargs)


def check_type(key: str, value: Any, annotation: str, where: str) -> None:
    options = [part.strip() for part in str(annotation).split("|")]
    if value is None and "None" in options:
        return
    accepted = tuple(t for part in options for t in _ACCEPTS.get(part.split("[")[0], ()))
    if not accepted:
        return  # a field type this check does not know: the config's own checks apply
    is_bool = isinstance(value, bool)
    if not isinstance(value, accepted) or (is_bool and bool not in accepted) or _bad_float(value):
        wanted = " or ".join(o for o in options)
        raise CompressorError(f"{where}: {key} must be {wanted}, got {value!r} ({type(value).__name__}); not converted")


def _bad_float(value: Any) -> bool:
    return isinstance(value, float) and not math.isfinite(value)
