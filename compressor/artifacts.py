"""The JSON files ``compress`` writes, one typed definition each.

``summary.json`` (a prune run), ``plan.json`` (the plans a run applied),
``manifest.json`` (an export), ``bench.json`` (a benchmark) and ``report.json``/``stages.json``
(``compress run``) are read by people,
by scripts and by later commands (export reads a run's data settings, bench reads
an export's MACs).  Their keys and value types are defined here and nowhere else;
the writers build exactly these dictionaries, and ``problems`` tells how a file
departs from its definition (``tests/unit/test_artifacts.py`` checks every file a
real run, export and bench write).  Nested sections whose contents belong to one
component (parity numbers, tool versions, options) are typed as plain mappings.

A base-layer module: only the standard library, so every layer may import it.
"""
from __future__ import annotations

import types
import typing
from typing import Any, Literal, TypedDict, Union

# The file names of a `compress prune` run directory that later commands read (here, in the base
# floor, because the output-directory checks of ``compressor.outdir`` need them too).
SUMMARY_FILE = "summary.json"
MODEL_FILE = "model.pt"  # the pruned model file (``compressor.runfiles.modelfile``)
# What a pruned model file given as SOURCE (export, eval, bench, info) is named like.
MODEL_FILE_SUFFIXES = (".pt", ".pth")
CHECKPOINT_FILE = "checkpoint.pt"  # the latest checkpoint, what --resume continues from


class RunData(TypedDict):
    """``compressor.data.datasets.DataConfig`` as saved: what export reads images back with."""

    dataset: str
    data_dir: str | None
    download: bool
    batch_size: int
    workers: int | None  # None: chosen by the device the run trained on
    pin_memory: bool
    image_size: int | None
    synthetic_train: int
    synthetic_val: int
    augment: bool
    seed: int
    num_classes: int | None  # the model's outputs (--num-classes); None: the dataset's class count


class PruneShock(TypedDict):
    """One prune's shock: validation right before and right after the slice, no training
    between (``at``: the prune came at the ``start`` or the ``end`` of ``epoch``).  With
    ``--recalibrate-bn N`` the sliced model's BatchNorm statistics were then re-estimated on
    ``recalibration_batches`` training batches and validated again (None when 0); training
    continues from the recalibrated statistics.  In ``metrics.jsonl`` (the record of that
    epoch) and in ``summary.json`` (``prune_shocks``, one per prune)."""

    epoch: int
    at: Literal["start", "end"]
    top1_before: float
    top1_after: float
    loss_before: float
    loss_after: float
    macs_before: int
    macs_after: int
    recalibration_batches: int
    top1_after_recalibration: float | None
    loss_after_recalibration: float | None
    # Why the prune came then: ready (stable, and under the target shrink the selected
    # channels at <= --reg-target of their norm), or the cap and what was still missing.
    reason: str
    # The removed channels' norm relative to theirs at the regularisation start, right
    # before the slice (None when nothing shrank them: other schedules, or no shrink yet).
    selected_norm: float | None


class _RunSummaryLaasp(TypedDict, total=False):
    laasp_steps: int
    laasp_criteria: dict[str, int]


class _RunSummarySpeedup(TypedDict, total=False):
    """A ``--speedup`` run: the asked speed-up on the deploy target, the one the latency
    table predicted for the plan, and the one measured after the prune (dense vs pruned,
    timed together on that target as ``compress bench`` does; ``measured`` holds the
    cell: backend, device, precision, batch_size, threads, both median latencies)."""

    speedup_target: float
    predicted_speedup: float | None
    measured_speedup: float | None
    measured: dict


class RunSummary(_RunSummaryLaasp, _RunSummarySpeedup):
    """``summary.json`` of ``compress prune`` (LAASP runs add the ``laasp_*`` counts,
    ``--speedup`` runs the ``*speedup*`` keys)."""

    model: str
    dataset: str
    data: RunData
    schedule: str
    criterion: str
    epochs: int
    flops_reduction_target: float
    dense_macs: int
    dense_params: int
    pruned_macs: int
    pruned_params: int
    macs_reduction: float
    prune_epoch: int | None  # epochs numbered from 1, as printed (compressor.epochs)
    prune_epochs: list[int]
    prune_shocks: list[PruneShock]
    top1: float
    best_top1: float
    wall_time_s: float
    search_time_s: float
    model_path: str
    seed: int


class PlanGroup(TypedDict):
    size: int
    kept: list[int]


class PlanFile(TypedDict):
    """One entry of ``plan.json`` (a list: one plan per prune step, in order)."""

    version: int
    groups: dict[str, PlanGroup]


class ExportManifest(TypedDict):
    """``manifest.json`` of ``compress export``; ``status`` ok | unverified | incomplete | failed."""

    manifest: str
    status: Literal["ok", "unverified", "incomplete", "failed"]
    error: str | None
    format: str
    model: str
    source: dict[str, Any]
    input_size: list[int]
    opset: int
    exporter: str | None
    exporter_fallback_reason: str | None
    allow_trace: bool
    trace_warnings: list[str]
    trace_check: str | None
    inputs: list[dict[str, Any]] | None
    outputs: list[dict[str, Any]] | None
    bundle: dict[str, Any] | None  # how to feed the model: input, preprocessing, class names, output meaning
    macs: int | None
    params: int | None
    max_batch: int
    simplify: dict[str, Any] | None
    parity: dict[str, Any]
    fp16: dict[str, Any] | None
    int8: dict[str, Any] | None
    tensorrt: dict[str, Any] | None
    files: dict[str, dict[str, Any]]
    versions: dict[str, Any]
    options: dict[str, Any]
    timings: dict[str, float]


class _Speedup(TypedDict, total=False):
    baseline: str
    speedup: float
    efficiency: float
    macs_ratio: float | None
    speedup_vs_dense_fp32: float  # fp16/int8 records: the dense fp32 median over this one


class LatencyFigures(TypedDict):
    """``compressor.bench.stats.LatencyStats`` as a record holds it (that dataclass's fields;
    bench.json's test fails if the two part)."""

    runs: int
    median_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    max_ms: float
    throughput: float


class BenchRecord(_Speedup, LatencyFigures):
    """One timed cell: what ran where, its latency figures; compared variants add ``_Speedup``."""

    model: str
    variant: str
    backend: str
    device: str
    precision: str
    batch_size: int
    provider: str
    provider_options: dict[str, str] | None
    session_config: dict[str, str] | None
    threads: int | None
    timer: str
    macs: int | None
    macs_source: str | None
    params: int | None
    warmup_runs: int
    warmup_s: float
    # the file it ran (name, sha256; an INT8 file's source: the export's verified file or one
    # quantized for timing only); None for a PyTorch module
    file: dict[str, Any] | None


class BenchReport(TypedDict):
    """``bench.json`` of ``compress bench``."""

    format: str
    environment: dict[str, Any]
    config: dict[str, Any]
    records: list[BenchRecord]
    skipped: list[dict[str, Any]]


class ReportLatency(TypedDict):
    """One bench cell as ``report.json`` copies it from bench.json."""

    backend: str
    precision: str
    batch_size: int
    median_ms: float
    p90_ms: float
    throughput: float
    speedup: float | None  # None for the dense baseline
    speedup_vs_dense_fp32: float | None  # bench.json has it for fp16/int8 cells only


class ReportArtifact(TypedDict):
    """One artifact of a ``compress run`` report: the dense baseline, the pruned model, an exported file."""

    name: str
    variant: Literal["dense", "pruned"]
    backend: str | None  # eval's backend (pytorch, onnxruntime, tensorrt); None: not evaluated
    precision: str
    file: str | None  # relative to the run directory
    bytes: int | None
    top1: float | None
    top5: float | None
    eval: dict[str, Any] | None  # the eval row's status, reason, provider, images, top1_agreement
    macs: int | None
    params: int | None
    latency: list[ReportLatency]


class RunReport(TypedDict):
    """``report.json`` of ``compress run`` (report.md and report.html show the same)."""

    format: str
    model: str
    dataset: str
    out: str
    files: dict[str, str]  # which file each figure was copied from
    prune: dict[str, Any]
    eval: dict[str, Any]
    bench: dict[str, Any]
    export: dict[str, Any]
    artifacts: list[ReportArtifact]
    figures: list[str]
    stages: dict[str, dict[str, str]]


class StageRecord(TypedDict):
    command: str  # the separate command the stage stands for
    finished_at: str  # ISO 8601, UTC
    files: dict[str, str]  # what it wrote (relative to the run directory) -> sha256


class RunStages(TypedDict):
    """``stages.json`` of ``compress run``: the finished stages, and the later stages' options."""

    format: str
    settings: dict[str, Any]
    stages: dict[str, StageRecord]


def problems(definition: type, value: Any, where: str = "") -> list[str]:
    """How ``value`` departs from ``definition`` (a TypedDict or a type): missing keys, keys
    the definition does not have, values of the wrong type.  Empty when it conforms."""
    return _check(definition, value, where or getattr(definition, "__name__", "value"))


def _check(expected: Any, value: Any, where: str) -> list[str]:
    if _is_typed_dict(expected):
        return _check_typed_dict(expected, value, where)
    origin, args = typing.get_origin(expected), typing.get_args(expected)
    if expected is Any:
        return []
    if origin in (Union, types.UnionType):
        found = [_check(option, value, where) for option in args]
        return [] if any(not f for f in found) else [f"{where}: {value!r:.60} is not {_name(expected)}"]
    if origin is Literal:
        return [] if value in args else [f"{where}: {value!r} is not one of {list(args)}"]
    if origin is list:
        if not isinstance(value, list):
            return [f"{where}: expected a list, got {type(value).__name__}"]
        return [p for i, item in enumerate(value) for p in _check(args[0], item, f"{where}[{i}]")] if args else []
    if origin is dict:
        if not isinstance(value, dict):
            return [f"{where}: expected an object, got {type(value).__name__}"]
        return [p for k, item in value.items() for p in _check(args[1], item, f"{where}.{k}")] if args else []
    return [] if _is_instance(value, expected) else [f"{where}: expected {_name(expected)}, got {value!r:.60}"]


def _check_typed_dict(definition: type, value: Any, where: str) -> list[str]:
    if not isinstance(value, dict):
        return [f"{where}: expected an object, got {type(value).__name__}"]
    hints = typing.get_type_hints(definition)
    found = [f"{where}: missing '{key}'" for key in sorted(definition.__required_keys__ - set(value))]
    found += [f"{where}: '{key}' is not in {definition.__name__}" for key in sorted(set(value) - set(hints))]
    for key in sorted(set(value) & set(hints)):
        found += _check(hints[key], value[key], f"{where}.{key}")
    return found


def _is_typed_dict(expected: Any) -> bool:
    return isinstance(expected, type) and issubclass(expected, dict) and hasattr(expected, "__required_keys__")


def _is_instance(value: Any, expected: Any) -> bool:
    if expected is type(None) or expected is None:
        return value is None
    if expected is float:  # JSON writes 2.0 as 2.0, but a float field may hold a whole number
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, expected)


def _name(expected: Any) -> str:
    return getattr(expected, "__name__", None) or str(expected).replace("typing.", "")
