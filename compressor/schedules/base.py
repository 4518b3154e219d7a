"""What a schedule is: the base class whose hooks decide *when* to search and prune, and the
event each epoch's hooks fill in.

A schedule never slices anything itself.  Its hooks get a narrow view of the pruner
(``compressor.schedules.pruner.PrunerView``): what has been pruned so far, whether the
searched sub-network is stable, the model and its cost model, and four actions --
``search`` a plan for a MACs reduction, ``track`` its stability, ``regularise`` towards
it, or ``propose`` a plan the schedule found itself.  A hook sets ``event.prune_due`` and
the pruner does the prune.  Light on purpose (no torch): ``compress --help`` lists the
schedules through ``compressor.schedules.registry``, which imports this module.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator

if TYPE_CHECKING:  # annotations only: the pruner imports torch
    from compressor.schedules.config import PruneConfig
    from compressor.schedules.pruner import PrunerView


@dataclass
class EpochEvent:
    epoch: int
    searched: bool = False
    stability: float | None = None
    reg_lambda: float = 0.0
    plan_macs: int | None = None
    prune_due: bool = False
    pruned: bool = False
    search_time_s: float = 0.0
    # The selected channels' norm relative to theirs at the regularisation start (None before it).
    selected_norm: float | None = None
    prune_reason: str | None = None  # why this epoch prunes: ready, or the cap and what was missing


class Schedule:
    """Decides when the pruner searches and prunes.  Subclass it, override the hooks you
    need, and make it selectable by name with ``register_schedule(name, YourSchedule)``.

    ``epoch`` is the training loop's index (from 0; ``compressor.epochs`` translates the
    numbers users type).  ``pruner`` is a ``PrunerView``.  A hook that wants the model
    pruned searches (or proposes) a plan and sets ``event.prune_due = True``; it may also
    say why in ``event.prune_reason``."""

    def __init__(self, config: PruneConfig):
        self.config = config

    def prune_at_start(self, epoch: int, pruner: PrunerView) -> bool:
        """Before the epoch's first step: True to search the configured reduction and prune now."""
        return False

    def epoch_end(self, epoch: int, pruner: PrunerView, event: EpochEvent) -> None:
        """After the epoch's last step: search, track, regularise; set ``event.prune_due``."""
        return None

    def state(self) -> dict:
        """What a checkpoint must keep of this schedule (JSON-like values)."""
        return {}

    def load_state(self, state: dict) -> None:
        """Restore what ``state()`` returned, on resume."""
        return None


@contextmanager
def timed_search(event: EpochEvent) -> Iterator[None]:
    """Record how long the enclosed search took in ``event.search_time_s`` (also when it finds nothing)."""
    started = time.perf_counter()
    try:
        yield
    finally:
        event.search_time_s = time.perf_counter() - started
