"""Argument checks at the public API's entry points.

Called with the wrong kind of argument (``analyse('resnet20', x)``, ``PruneConfig(epochs='x')``),
the library used to fail far from the call, with ``AttributeError: 'str' object has no
attribute 'named_modules'`` or ``'<' not supported between 'str' and 'int'``, which names
neither the function nor the argument.  The entry points check first, with these two rules:

* ``check_type``: one argument against the type(s) it must have;
* ``check_fields``: every field of a config dataclass against its annotation, and every float
  finite (NaN passes every range comparison, so a range check alone lets it through);
* ``typed_config``: a config built from recorded values (``summary.json``, a checkpoint, a
  ``--config`` file) under the same rule, so a file cannot quietly change what a run means.

``ArgumentTypeError`` is a ``CompressorError`` (the CLI prints it as one line) and a
``TypeError`` (what a Python caller expects from a wrong argument).  Stdlib only: the types to
check against (``nn.Module``) come from the caller.
"""
from __future__ import annotations

import math
from dataclasses import fields

from compressor.errors import CompressorError


class ArgumentTypeError(CompressorError, TypeError):
    """A public function or config got an argument of the wrong type or a non-finite number."""


def check_type(value, expected: type | tuple[type, ...], name: str, where: str, wanted: str | None = None) -> None:
    """``value`` (the argument ``name`` of ``where``) is an instance of ``expected``; a bool is
    not taken for an int (``True`` is an int to Python, never a count or a size to us)."""
    types = expected if isinstance(expected, tuple) else (expected,)
    if isinstance(value, types) and not (isinstance(value, bool) and bool not in types):
        return
    wanted = wanted or " or ".join(_type_name(t) for t in types)
    raise ArgumentTypeError(f"{where}: {name} must be {wanted}, got {_shown(value)}")


# A field's annotation (a string under ``from __future__ import annotations``) -> what it accepts.
# A list is taken for a tuple: configs built from YAML or JSON hold lists.
_ACCEPTS = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "tuple": (tuple, list)}


def check_annotation(key: str, value, annotation: str, where: str) -> None:
    """``value`` fits the field annotation ``annotation`` (``int``, ``float | None``,
    ``tuple[str, ...]``), never converted; a float must be finite.  Annotations this rule
    does not know are left to the config's own checks."""
    options = [part.strip() for part in str(annotation).split("|")]
    if value is None and "None" in options:
        return
    accepted = tuple(t for part in options for t in _ACCEPTS.get(part.split("[")[0], ()))
    if not accepted:
        return
    if not isinstance(value, accepted) or (isinstance(value, bool) and bool not in accepted):
        wanted = " or ".join(options)
        raise ArgumentTypeError(f"{where}: {key} must be {wanted}, got {value!r} ({type(value).__name__}); "
                                "not converted")
    if isinstance(value, float) and not math.isfinite(value):
        raise ArgumentTypeError(f"{where}: {key} must be finite, got {value!r}")


def check_fields(config, where: str | None = None) -> None:
    """Every field of the dataclass instance ``config`` against its annotation."""
    where = where or type(config).__name__
    for spec in fields(config):
        check_annotation(spec.name, getattr(config, spec.name), spec.type, where)


def typed_config(kind: type, values: dict, where: str = "the settings"):
    """``kind(**values)`` for the keys that are ``kind``'s fields (lists become tuples), each value
    checked against its field's annotation first and never converted; other keys are ignored."""
    names = {f.name: f.type for f in fields(kind)}
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in names}
    for key, value in kwargs.items():
        check_annotation(key, value, names[key], where)
    return kind(**kwargs)


def _type_name(kind: type) -> str:
    return kind.__name__  # callers checking a library's type (nn.Module) say so in ``wanted``


def _shown(value) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"
