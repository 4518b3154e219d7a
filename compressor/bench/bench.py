"""One benchmark: every (group, backend, precision, batch size) cell, timed.

Within a cell the group's subjects (dense and pruned) are prepared together and
timed interleaved; a backend that cannot run on this machine, or a subject it
cannot prepare, becomes a *skipped* record with the reason.  Nothing is replaced
silently: an ``onnxruntime-cuda`` cell never quietly times the CPU.
"""
from __future__ import annotations

import gc
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch

from compressor.bench.backends import BACKENDS, Workload
from compressor.bench.environment import describe, usable_cores
from compressor.bench.stats import LatencyStats, compare, summarise
from compressor.bench.subjects import Group, Subject, check_batch_sizes
from compressor.bench.timing import TimingConfig, measure
from compressor.artifacts import BenchReport
from compressor.devices import auto_device
from compressor.choices import BENCH_PRECISIONS
from compressor.errors import CompressorError
from compressor.export.runlimit import RunLimitError
from compressor.hashing import file_sha256

FORMAT = "compressor.bench/1"
DEFAULT_BACKENDS = ("torch", "onnxruntime")
MODULE_BACKENDS = ("torch", "torch-compile")  # time the PyTorch module itself; the others need exported files


@dataclass(frozen=True)
class BenchConfig:
    backends: tuple[str, ...] = DEFAULT_BACKENDS
    device: str = "auto"
    batch_sizes: tuple[int, ...] = (1, 32)
    precisions: tuple[str, ...] = ("fp32",)
    threads: int | None = None  # None: every core this process may use
    timing: TimingConfig = field(default_factory=TimingConfig)

    def __post_init__(self) -> None:
        unknown = [b for b in self.backends if b not in BACKENDS]
        if unknown:
            raise CompressorError(f"unknown backend '{unknown[0]}'; choose from {', '.join(BACKENDS)}")
        wrong = [p for p in self.precisions if p not in BENCH_PRECISIONS]
        if wrong:
            raise CompressorError(f"unknown precision '{wrong[0]}'; choose from {', '.join(BENCH_PRECISIONS)}")
        if not self.backends or not self.batch_sizes or not self.precisions:
            raise CompressorError("give at least one backend, batch size and precision")
        if any(b < 1 for b in self.batch_sizes):
            raise CompressorError("batch sizes must be at least 1")
        if self.device not in ("auto", "cpu", "cuda"):
            raise CompressorError(f"--device must be auto, cpu or cuda, got '{self.device}'")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise CompressorError("--device cuda was asked for, but PyTorch sees no CUDA device on this machine")

    @property
    def resolved_device(self) -> str:
        return auto_device(self.device)

    @property
    def timed_precisions(self) -> tuple[str, ...]:
        """The precisions asked for, with fp32 first when it was left out: a reduced precision's
        speed-up is stated against the dense fp32 model a user starts from."""
        return self.precisions if "fp32" in self.precisions else ("fp32", *self.precisions)

    @property
    def resolved_threads(self) -> int:
        return self.threads or usable_cores()


@dataclass
class BenchResult:
    environment: dict
    config: dict
    records: list[dict]
    skipped: list[dict]

    def to_dict(self) -> BenchReport:  # the one definition of bench.json
        return {"format": FORMAT, **asdict(self)}


def exports_files(config: BenchConfig) -> bool:
    """Whether some cell will export an ONNX file or build an engine: a backend that can run
    here and does not time the PyTorch module itself."""
    device = config.resolved_device
    return any(BACKENDS[name].unavailable(device, precision) is None
               for name in config.backends if name not in MODULE_BACKENDS for precision in config.timed_precisions)


def cells(groups: list[Group], config: BenchConfig):
    for group in groups:
        for backend in config.backends:
            for precision in config.timed_precisions:
                for batch in config.batch_sizes:
                    yield group, backend, precision, batch


def run_bench(groups: list[Group], config: BenchConfig, on_cell: Callable[[str], None] | None = None) -> BenchResult:
    check_batch_sizes(groups, config.batch_sizes)
    device, threads = config.resolved_device, config.resolved_threads
    records, skipped = [], []
    for group, backend_name, precision, batch in cells(groups, config):
        if on_cell is not None:
            on_cell(f"{group.label}: {backend_name} {precision} batch {batch}")
        backend = BACKENDS[backend_name]
        base = {"backend": backend_name, "device": device, "precision": precision, "batch_size": batch}
        reason = backend.unavailable(device, precision)
        if reason is not None:
            skipped.append({**base, "model": group.label, "reason": reason})
            continue
        workload = Workload(batch, precision, device, threads, group.baseline.input_size)
        cell_records, cell_skipped = _run_cell(group, backend, workload, config.timing, base)
        records.extend(cell_records)
        skipped.extend(cell_skipped)
    _add_combined_speedups(records)
    config_dict = {**asdict(config), "timed_precisions": list(config.timed_precisions), "device": device,
                   "threads": threads}
    return BenchResult(describe(threads), config_dict, records, skipped)


def _add_combined_speedups(records: list[dict]) -> None:
    """Pruning and reduced precision together: each fp16/int8 record against the dense fp32
    record of its group, backend and batch, where one was timed (the model a user starts from)."""
    def group(record: dict) -> str | None:
        return record["model"] if record["variant"] == "dense" else record.get("baseline")

    start = {(r["model"], r["backend"], r["batch_size"]): r for r in records
             if r["variant"] == "dense" and r["precision"] == "fp32"}
    for record in records:
        dense = start.get((group(record), record["backend"], record["batch_size"]))
        if record["precision"] != "fp32" and dense is not None:
            record["speedup_vs_dense_fp32"] = dense["median_ms"] / record["median_ms"]


def _run_cell(group: Group, backend, workload: Workload, timing: TimingConfig, base: dict):
    """Time one (group, backend, precision, batch) cell.  Any of our errors in it (a backend
    missing, an ONNX export or a trace refused, an engine that fails to build or to run) skips
    what it concerns with its reason; a bench never aborts on one cell."""
    prepared, subjects, skipped = [], [], []
    try:
        for subject in group.subjects:
            try:
                prepared.append(backend.prepare(subject, workload))
                subjects.append(subject)
            except CompressorError as error:  # BackendError included
                skipped.append({**base, "model": subject.name, "reason": str(error)})
        if not prepared:
            return [], skipped
        try:
            measurement = measure(prepared, timing)
        except RunLimitError:
            raise  # every later cell would wait out the limit too: stop the bench, in one line
        except CompressorError as error:
            return [], skipped + [{**base, "model": s.name, "reason": f"failed while timed: {error}"} for s in subjects]
        stats = [summarise(samples, workload.batch_size) for samples in measurement.samples_ms]
        records = [
            _record(subject, runnable, workload, stats[index], measurement, index, base)
            for index, (subject, runnable) in enumerate(zip(subjects, prepared))
        ]
        if subjects[0] is group.baseline:  # no baseline timed, nothing to compare with
            for record, subject, subject_stats in zip(records[1:], subjects[1:], stats[1:]):
                comparison = compare(stats[0], subject_stats, subjects[0].macs, subject.macs)
                record.update(comparison.to_dict(), baseline=records[0]["model"])
        return records, skipped
    finally:
        for runnable in prepared:
            runnable.close()
        gc.collect()
        if workload.device == "cuda":
            torch.cuda.empty_cache()


def _record(subject: Subject, runnable, workload: Workload, stats: LatencyStats, measurement, index: int,
            base: dict) -> dict:
    return {
        "model": subject.name,
        "variant": subject.variant,
        **base,
        "provider": runnable.provider,
        # what the runtime was configured with (ONNX Runtime's provider options and session
        # config entries; None for backends that take none), so a cell says what it measured
        "provider_options": runnable.provider_options,
        "session_config": runnable.session_config,
        "threads": workload.threads if workload.device == "cpu" else None,
        "timer": runnable.timer,
        "macs": subject.macs,
        "macs_source": subject.macs_source if subject.macs is not None else None,
        "params": subject.params,
        **stats.to_dict(),
        "warmup_runs": measurement.warmup_runs[index],
        "warmup_s": round(measurement.warmup_s[index], 3),
        "file": _timed_file(subject, runnable),
    }


def _timed_file(subject: Subject, runnable) -> dict | None:
    """Which bytes a cell timed, and for an INT8 file where it came from (the export's verified
    file, or one bench quantized for timing only)."""
    path = getattr(runnable, "timed_file", None)
    if path is None:
        return None
    return {"name": path.name, "sha256": file_sha256(path), **subject.int8_sources.get(str(path), {})}
