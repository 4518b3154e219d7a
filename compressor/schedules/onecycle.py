"""The one-cycle pruner's old home, kept so that existing imports work: everything here
lives in a module of its own now.

    config          PruneConfig
    pruner          OneCyclePruner, PrunerView (what a schedule's hooks see)
    base            Schedule, EpochEvent
    registry        register_schedule, the --schedule names
    once, ocs, gradual, laasp_schedule   the built-in schedules
    distributed     DDP helpers (release_ddp)
"""
from __future__ import annotations

from compressor.schedules.base import EpochEvent, Schedule
from compressor.schedules.config import PruneConfig
from compressor.schedules.distributed import release_ddp
from compressor.schedules.gradual import GradualSchedule
from compressor.schedules.laasp_schedule import LaaspSchedule
from compressor.schedules.ocs import StabilitySchedule
from compressor.schedules.once import DenseSchedule, OneShotSchedule, ThreeStageSchedule
from compressor.schedules.pruner import OneCyclePruner, PrunerView
from compressor.schedules.registry import SCHEDULE_FACTORIES, register_schedule, schedule_names, unregister_schedule

__all__ = [
    "DenseSchedule", "EpochEvent", "GradualSchedule", "LaaspSchedule", "OneCyclePruner", "OneShotSchedule",
    "PruneConfig", "PrunerView", "SCHEDULE_FACTORIES", "Schedule", "StabilitySchedule", "ThreeStageSchedule",
    "register_schedule", "release_ddp", "schedule_names", "unregister_schedule",
]
