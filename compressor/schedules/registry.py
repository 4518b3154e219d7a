"""Which schedule each ``--schedule`` name builds: the one list of schedule names.

``compress --help`` lists these names and must not import torch, so the built-in
schedules are named here with the module that defines each, and imported when one is
first built.  A schedule of your own joins them with ``register_schedule``::

    from compressor.schedules import Schedule, register_schedule

    class EveryOther(Schedule): ...
    register_schedule("every-other", EveryOther)

after which ``PruneConfig(schedule="every-other")`` builds it, and ``compress prune
--schedule every-other`` accepts it in the process that registered it.
"""
from __future__ import annotations

import importlib
from types import MappingProxyType
from typing import TYPE_CHECKING, Callable, Mapping

from compressor.errors import CompressorError
from compressor.schedules.base import Schedule

if TYPE_CHECKING:  # annotations only: the config imports torch
    from compressor.schedules.config import PruneConfig

ScheduleFactory = Callable[["PruneConfig"], "Schedule"]

_FACTORIES: dict[str, ScheduleFactory] = {}
# The schedules that search once, on the dense model: a speed-up target (--speedup) prices that plan.
_SEARCH_ONCE: set[str] = set()
# Each name and what builds it, in the order --help lists them (a read-only view of the registry).
SCHEDULE_FACTORIES: Mapping[str, ScheduleFactory] = MappingProxyType(_FACTORIES)


def register_schedule(name: str, factory: ScheduleFactory, *, searches_once: bool = False) -> None:
    """Make ``factory`` (a ``Schedule`` subclass, or any callable taking the ``PruneConfig``
    and returning a ``Schedule``) selectable as ``PruneConfig(schedule=name)`` / ``--schedule
    name``.  ``searches_once``: the schedule prunes once with a plan searched on the dense
    model (as ``ocs`` does), so ``--speedup`` can price that plan.  A name is registered once."""
    if not isinstance(name, str) or not name or name != name.strip() or " " in name:
        raise CompressorError(f"register_schedule: the name must be a non-empty word, got {name!r}")
    if not callable(factory):
        raise CompressorError(f"register_schedule({name!r}, ...): the factory must be callable, got {factory!r}")
    if name in _FACTORIES:
        raise CompressorError(f"register_schedule: a schedule named '{name}' is already registered")
    _FACTORIES[name] = factory
    if searches_once:
        _SEARCH_ONCE.add(name)


def unregister_schedule(name: str) -> None:
    """Forget a schedule registered with ``register_schedule`` (tests, notebooks)."""
    if name not in _FACTORIES:
        raise CompressorError(f"unregister_schedule: no schedule named '{name}'")
    del _FACTORIES[name]
    _SEARCH_ONCE.discard(name)


def schedule_names() -> tuple[str, ...]:
    """Every selectable schedule name, built-in ones first."""
    return tuple(_FACTORIES)


def speedup_schedules() -> tuple[str, ...]:
    """The schedules a speed-up target works with (registered with ``searches_once``)."""
    return tuple(name for name in _FACTORIES if name in _SEARCH_ONCE)


def make_schedule(config: PruneConfig) -> Schedule:
    """The schedule ``config.schedule`` names, built for ``config``."""
    factory = _FACTORIES.get(config.schedule)
    if factory is None:
        raise CompressorError(f"unknown schedule '{config.schedule}'; choose from {', '.join(_FACTORIES)}")
    schedule = factory(config)
    if not isinstance(schedule, Schedule):
        raise CompressorError(f"the factory of schedule '{config.schedule}' returned {type(schedule).__name__}, "
                              "not a compressor.schedules.Schedule")
    return schedule


def _built_in(module: str, attribute: str, **keywords) -> ScheduleFactory:
    """A built-in schedule class, imported when first built (its module may import torch)."""

    def build(config: PruneConfig) -> Schedule:
        return getattr(importlib.import_module(module), attribute)(config, **keywords)

    build.__qualname__ = f"{module}.{attribute}"
    return build


def _register_built_ins() -> None:
    """The built-in schedules, in the order --help lists them."""
    for name, factory, once in (
        ("ocs", _built_in("compressor.schedules.ocs", "StabilitySchedule", regularise=True), True),
        ("dense", _built_in("compressor.schedules.once", "DenseSchedule"), False),
        ("oneshot", _built_in("compressor.schedules.once", "OneShotSchedule"), True),
        ("three-stage", _built_in("compressor.schedules.once", "ThreeStageSchedule"), True),
        ("epi", _built_in("compressor.schedules.ocs", "StabilitySchedule", regularise=False), True),
        ("gradual", _built_in("compressor.schedules.gradual", "GradualSchedule"), False),
        ("laasp", _built_in("compressor.schedules.laasp_schedule", "LaaspSchedule"), False),
    ):
        register_schedule(name, factory, searches_once=once)


_register_built_ins()
