"""The artifacts a ``compress prune`` run leaves in its output directory.

``metrics.jsonl`` gets one JSON line per epoch, synced to disk as soon as the
epoch ends, so a killed run loses at most the epoch in progress and a resumed
run can cut the log back to its checkpoint.  ``summary.json`` is replaced
atomically so a reader never sees half of it.  ``plot_run`` draws the curves
that show whether the prune and the regularisation went as planned.
"""
from __future__ import annotations

import json
import os
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

from compressor.artifacts import PruneShock
from compressor.atomic import atomic_write, atomic_write_text
from compressor.errors import CompressorError

if TYPE_CHECKING:  # matplotlib is only needed for plotting, so import it lazily
    from matplotlib.axes import Axes


@dataclass(frozen=True)
class EpochRecord:
    """What one epoch of a run measured; one line of ``metrics.jsonl``."""

    epoch: int  # numbered from 1, as printed (compressor.epochs)
    train_loss: float
    train_top1: float  # percent, 0..100
    val_loss: float
    val_top1: float  # percent, 0..100
    lr: float  # at the end of the epoch
    stability: float | None  # J_avg in 0..1, None before monitoring starts
    reg_lambda: float  # 0 when regularisation is off
    macs: int  # of the model as it is this epoch
    params: int
    pruned: bool  # the prune happened this epoch
    epoch_time_s: float
    search_time_s: float  # spent in the structure search, 0 if none
    images_per_s: float
    prune_shock: PruneShock | None = None  # the epoch's prune: validation right before and after the slice
    # The channels selected for removal: their norm relative to theirs at the regularisation
    # start (None before the shrink starts and after the prune).
    selected_norm: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "EpochRecord":
        """Ignore unknown keys so logs written by a newer version still load, and let fields
        with a default be missing so logs written by an older version do too."""
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data or f.default is MISSING})


class MetricsLog:
    """Appends one JSON line per epoch to ``metrics.jsonl``, flushing and
    fsync-ing each line so a killed run loses at most the epoch in progress."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def append(self, record: EpochRecord) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._drop_partial_line()
        with os.fdopen(self._open(os.O_WRONLY | os.O_APPEND | os.O_CREAT), "a", encoding="utf-8") as stream:
            stream.write(json.dumps(record.to_dict()) + "\n")
            stream.flush()
            os.fsync(stream.fileno())

    def _drop_partial_line(self) -> None:
        """A run killed mid-write leaves a line without its newline; appending
        after it would glue the next record onto the fragment, so cut it off."""
        if not self.path.exists():
            return
        with os.fdopen(self._open(os.O_RDWR), "rb+") as stream:
            data = stream.read()
            if data and not data.endswith(b"\n"):
                stream.truncate(data.rfind(b"\n") + 1)

    def _open(self, flags: int) -> int:
        """Never through a symlink: one planted at metrics.jsonl could point anywhere."""
        try:
            return os.open(self.path, flags | os.O_NOFOLLOW, 0o666)
        except OSError as error:
            if self.path.is_symlink():
                raise CompressorError(f"{self.path} is a symbolic link; refused to write through it") from error
            raise

    def truncate_after(self, epoch: int) -> None:
        """On resume, forget the epochs after ``epoch`` (the checkpoint's): they will be rerun."""
        if not self.path.exists():
            return
        kept = [record for record in self.read(self.path) if record.epoch <= epoch]
        atomic_write_text(self.path, "".join(json.dumps(r.to_dict()) + "\n" for r in kept))

    @staticmethod
    def read(path: Path) -> list[EpochRecord]:
        """Skip a broken last line (the epoch a kill interrupted); a broken line
        anywhere else means the file was damaged, which is an error."""
        lines = [line for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
        records = []
        for number, line in enumerate(lines, start=1):
            try:
                records.append(EpochRecord.from_dict(json.loads(line)))
            except (ValueError, KeyError, TypeError) as error:
                if number == len(lines):
                    break
                raise CompressorError(f"{path}: line {number} is not an epoch record ({error})") from error
        return records


def write_summary(path: Path, summary: dict) -> None:
    """Atomic, so a reader polling ``summary.json`` never sees half of it."""
    atomic_write_text(Path(path), json.dumps(summary, indent=1) + "\n")


def plot_run(records: list[EpochRecord], path: Path, title: str, threshold: float | None = None,
             indicator: str = "jaccard", reg_target: float | None = None) -> Path:
    """Four panels on a shared epoch axis: accuracy, stability, λ and MACs,
    with the prune epoch marked in each so cause and effect line up; the accuracy panel
    also marks each prune's shock (validation top-1 right before and right after the
    slice, and after BatchNorm recalibration when the run did it).

    ``indicator`` names the stability curve (``jaccard``: J_avg, ``epi``: EPI) and
    ``threshold`` is the run's own prune threshold (``PruneConfig.indicator_threshold``),
    drawn as a dashed line where the curve was measured at all.  The λ panel also
    draws, on a log axis, how far the selected channels have shrunk, with the run's
    ``reg_target`` (ε) as a dashed line when given.

    Epochs are numbered from 1, as everywhere a user reads them.  Uses a
    ``Figure`` on the Agg canvas, never pyplot, so it needs no display and
    leaves no global figure state behind.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError as error:
        raise CompressorError("plotting needs matplotlib: pip install matplotlib") from error

    epochs = [r.epoch for r in records]
    figure = Figure(figsize=(8, 10), dpi=100)
    FigureCanvasAgg(figure)
    accuracy, stability, reg, macs = figure.subplots(4, 1, sharex=True)

    accuracy.plot(epochs, [r.train_top1 for r in records], marker=".", label="train")
    accuracy.plot(epochs, [r.val_top1 for r in records], marker=".", label="val")
    _mark_shocks(accuracy, records)
    accuracy.set_ylabel("top-1 %")

    monitored = [r for r in records if r.stability is not None]
    name = "EPI" if indicator == "epi" else "J_avg"
    stability.plot([r.epoch for r in monitored], [r.stability for r in monitored], marker=".", label=name)
    if threshold is not None and monitored:
        stability.axhline(threshold, linestyle="--", color="gray", label=f"prune at {threshold:g}")
    stability.set_ylabel(f"stability {name}")

    reg.plot(epochs, [r.reg_lambda for r in records], marker=".", label="λ")
    reg.set_ylabel("λ")
    reg.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    _plot_selected_norm(reg, records, reg_target)

    macs.step(epochs, [r.macs / 1e6 for r in records], where="post", marker=".", label="MACs")
    macs.set_ylabel("MACs (M)")
    macs.set_xlabel("epoch")
    macs.set_xlim(0.5, max(epochs, default=1) + 0.5)
    macs.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))

    for axes in (accuracy, stability, reg, macs):
        _mark_prune(axes, records)
        axes.grid(alpha=0.3)
        axes.legend(loc="best", fontsize="small")
    figure.suptitle(title)
    figure.tight_layout()
    # Atomic: a symlink at ``path`` is replaced, not written through (and no half PNG).
    return atomic_write(Path(path), lambda stream: figure.savefig(stream, format="png"))


def _plot_selected_norm(axes: Axes, records: list[EpochRecord], reg_target: float | None) -> None:
    """The selected channels' relative norm on a log axis sharing the λ panel: whether
    the shrink reached ε before the prune is the whole question of a lossless slice."""
    shrunk = [(r.epoch, r.selected_norm) for r in records if r.selected_norm is not None and r.selected_norm > 0]
    if not shrunk:
        return
    norm_axes = axes.twinx()
    norm_axes.plot(*zip(*shrunk), marker="s", color="tab:green", label="selected norm")
    if reg_target is not None:
        norm_axes.axhline(reg_target, linestyle="--", color="tab:green", alpha=0.6, label=f"ε {reg_target:g}")
    norm_axes.set_yscale("log")
    norm_axes.set_ylabel("selected / at reg start")
    norm_axes.legend(loc="center right", fontsize="small")


def _mark_prune(axes: Axes, records: list[EpochRecord]) -> None:
    """One labelled line per pruned epoch (normally exactly one, or none)."""
    for index, record in enumerate(r for r in records if r.pruned):
        axes.axvline(record.epoch, color="red", linestyle=":", label="prune" if index == 0 else None)


def _mark_shocks(axes: Axes, records: list[EpochRecord]) -> None:
    """Each prune's shock on the accuracy panel, at its prune line: validation top-1 right
    before and right after the slice (and after BatchNorm recalibration, when run)."""
    shocks = [(r.epoch, r.prune_shock) for r in records if r.prune_shock is not None]
    if not shocks:
        return
    x = [epoch for epoch, _ in shocks]
    axes.scatter(x, [s["top1_before"] for _, s in shocks], marker="^", color="black", zorder=3, label="before slice")
    axes.scatter(x, [s["top1_after"] for _, s in shocks], marker="v", color="red", zorder=3, label="after slice")
    recalibrated = [(epoch, s["top1_after_recalibration"]) for epoch, s in shocks if s.get("top1_after_recalibration") is not None]
    if recalibrated:
        axes.scatter(*zip(*recalibrated), marker="D", s=80, facecolors="none", edgecolors="purple", zorder=4,
                     label="after BN recalibration")


def format_epoch_line(record: EpochRecord, total_epochs: int) -> str:
    """The console line for one epoch, 1-based like a progress counter."""
    stability = "-" if record.stability is None else f"{record.stability:.3f}"
    reg = f"{record.reg_lambda:.0e}" if record.reg_lambda else "0"
    selected = "" if record.selected_norm is None else f"  sel {record.selected_norm:.3g}"
    line = (
        f"epoch {record.epoch}/{total_epochs}  loss {record.train_loss:.3f}"
        f"  top1 {record.train_top1:.1f}%  val {record.val_top1:.1f}%  lr {record.lr:.4f}"
        f"  J {stability}  λ {reg}{selected}  MACs {record.macs / 1e6:.1f}M  {record.epoch_time_s:.1f} s"
    )
    return line + "  pruned" if record.pruned else line
