"""When and how much to prune during training: the one-cycle controller (``pruner``), what a
schedule is (``base``) and the names that select one (``registry``), the built-in schedules
(``once``, ``ocs``, ``gradual``, ``laasp_schedule``), their stability indicators, the shrinking
regulariser and the loss-aware steps (``laasp``).  Built on the engine; knows nothing of data
loading, run directories, export or the CLI.

A schedule of your own: subclass ``Schedule`` and ``register_schedule(name, YourSchedule)``.
Only those two (and the registry's names) are imported here: ``compress --help`` reads the
names without torch."""
from compressor.schedules.base import Schedule
from compressor.schedules.registry import register_schedule, schedule_names, unregister_schedule

__all__ = ["Schedule", "register_schedule", "schedule_names", "unregister_schedule"]
