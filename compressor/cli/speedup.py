"""``--speedup X``: the options shared by ``compress prune`` and ``compress info``, the
latency table they price plans with, and the measurement a prune ends with.

The budget is a MACs fraction unless ``--speedup`` is given; the two are exclusive.
The table is measured on the deploy target (``--deploy-backend``, ``--deploy-device``,
``--deploy-precision``, ``--deploy-batch``) by ``compressor.bench.latency`` and cached;
after the prune the dense and pruned models are timed together on that same target
exactly as ``compress bench RUN`` does, and the measured speed-up joins the predicted
one in ``summary.json``.
"""
from __future__ import annotations

import click

from compressor.choices import BENCH_PRECISIONS
from compressor.cli.common import bounded_int, finite_float, user_said
from compressor.errors import CompressorError

SPEEDUP_HELP = ("Instead of --flops-reduction: prune until the latency on the deploy target (--deploy-backend, "
                "--deploy-device, --deploy-precision, --deploy-batch) is the dense one / X, predicted from a per-layer "
                "latency table measured there first (cached per machine, target and versions) and measured again "
                "after the prune.  Supported now: onnxruntime on cpu, fp32 or int8 (the uint8-activation QDQ form it runs).")

OPTIONS = [
    click.option("--speedup", type=finite_float(1, min_open=True), metavar="X", help=SPEEDUP_HELP),
    click.option("--deploy-precision", type=click.Choice(BENCH_PRECISIONS), default="fp32", show_default=True,
                 help="--speedup: the precision the model will run in."),
    click.option("--deploy-batch", type=bounded_int(min=1), default=1, show_default=True,
                 help="--speedup: the batch size the model will run at."),
    click.option("--deploy-threads", type=bounded_int(min=1), default=None, metavar="N",
                 help="--speedup: the CPU threads the runtime will use [default: every core this process may use, "
                      "as compress bench]; a shared machine measures steadier with 1."),
    click.option("--latency-table", type=click.Path(dir_okay=False), metavar="FILE",
                 help="--speedup: price plans with this table (a run's latency_table.json, or one measured on the "
                      "deploy machine) instead of measuring one here; its own target replaces the --deploy-* options."),
]

GIVEN = (click.core.ParameterSource.COMMANDLINE, click.core.ParameterSource.DEFAULT_MAP,
         click.core.ParameterSource.ENVIRONMENT)


def speedup_options(command):
    for option in reversed(OPTIONS):
        command = option(command)
    return command


def check_exclusive(ctx: click.Context, speedup: float | None) -> None:
    """One budget: --speedup prices plans in latency, --flops-reduction in MACs."""
    if speedup is not None and ctx.get_parameter_source("flops_reduction") in GIVEN:
        raise CompressorError("--speedup and --flops-reduction are exclusive: give one budget, a latency speed-up "
                              "on the deploy target or a fraction of the MACs")


# The deploy target's options: the first two also say what --round-to auto measures.
TARGET_OPTIONS = ("deploy_backend", "deploy_device")
SPEEDUP_ONLY_OPTIONS = ("deploy_precision", "deploy_batch", "deploy_threads", "latency_table")


def check_deploy_options_read(ctx: click.Context, speedup: float | None, round_to_auto: bool | None = None) -> None:
    """A deploy option nothing will read is refused, not ignored: without --speedup the
    target prices no plan.  ``round_to_auto``: whether --round-to auto (which reads the
    backend and device) was asked; None where the command has no such choice."""
    if speedup is not None:
        return
    names = SPEEDUP_ONLY_OPTIONS + (() if round_to_auto else TARGET_OPTIONS)
    unread = [name for name in names if user_said(ctx, name)]
    if unread:
        alone = set(unread) - set(TARGET_OPTIONS) or round_to_auto is None
        readers = "--speedup reads" if alone else "--speedup or --round-to auto read"
        flags = " and ".join(map(flag, unread))
        raise CompressorError(f"{flags}: only {readers} it; here it would be ignored, so it is refused "
                              f"(add --speedup X, or drop {flags})")


def check_no_deploy_options_on_resume(ctx: click.Context) -> None:
    """--resume keeps the run's deploy target, its latency table and its --round-to multiple."""
    typed = [flag(name) for name in TARGET_OPTIONS + SPEEDUP_ONLY_OPTIONS if user_said(ctx, name)]
    if typed:
        raise CompressorError(f"--resume keeps the run's own deploy target and latency table; {' and '.join(typed)} "
                              "would be ignored, so it is refused (drop it)")


def flag(name: str) -> str:
    return f"--{name.replace('_', '-')}"


def deploy_target(backend: str, device: str, precision: str, batch: int, threads: int | None = None):
    from compressor.bench.latency import DeployTarget
    from compressor.devices import auto_device

    target = DeployTarget(backend, auto_device(device), precision, batch, threads)
    target.check_supported()
    return target


def table_maker(target, round_to, max_prune_fraction: float, min_width: int, ignore, given: str | None = None):
    """What measures (or reads the cached, or the ``given``) table of a model on ``target``, and says so."""
    from compressor.bench.latency import latency_table

    def make(model, input_size):
        if given is not None:
            return given_table(given, input_size)
        click.echo(f"--speedup: measuring the latency table on {target.backend} {target.device} {target.precision} "
                   f"batch {target.batch_size} ...", err=True)
        table, cached = latency_table(model, input_size, target, round_to=round_to, max_prune_fraction=max_prune_fraction,
                                      min_width=min_width, ignore=ignore)
        click.echo(f"--speedup: latency table of {len(table.layers)} layers, dense {table.dense_ms:.3f} ms, measured in "
                   f"{table.measure_s:.1f} s" + (" (earlier on this machine; cached)" if cached else ""), err=True)
        return table

    return make


def given_table(path: str, input_size):
    from compressor.engine.latency import LatencyTable

    table = LatencyTable.load(path)
    if table.target.get("input_size") != list(input_size):
        raise CompressorError(f"the latency table {path} was measured at input {table.target.get('input_size')}, "
                              f"this run's input is {list(input_size)}")
    return table


def measure_run(out, target) -> dict:
    """Dense vs pruned of the run in ``out``, timed together on ``target`` as ``compress bench``
    times them (the same subjects, backend preparation and timing)."""
    from compressor.bench.bench import BenchConfig, run_bench
    from compressor.bench.subjects import resolve

    config = BenchConfig(backends=(target.backend,), device=target.device, batch_sizes=(target.batch_size,),
                         precisions=(target.precision,), threads=target.threads)
    from compressor.bench.latency import machine_name

    result = run_bench(resolve([str(out)]), config)
    pruned = [r for r in result.records if r["variant"] == "pruned"]
    dense = [r for r in result.records if r["variant"] == "dense"]
    if not pruned or not dense:
        reasons = "; ".join(s["reason"] for s in result.skipped) or "nothing was timed"
        raise CompressorError(f"could not measure the run on {target.backend} {target.device}: {reasons}")
    return {"backend": target.backend, "device": target.device, "machine": machine_name(target.device), "precision": target.precision,
            "batch_size": target.batch_size, "threads": pruned[0]["threads"], "dense_ms": dense[0]["median_ms"],
            "pruned_ms": pruned[0]["median_ms"], "speedup": dense[0]["median_ms"] / pruned[0]["median_ms"]}


def record_measurement(out, summary: dict, target, table_machine: str | None = None) -> dict:
    """Measure the run once and add the measured speed-up to its ``summary.json``.  A table
    measured on another machine (``table_machine``) predicted that machine: said, not hidden."""
    from pathlib import Path

    from compressor.artifacts import SUMMARY_FILE
    from compressor.training.report import write_summary

    from compressor.bench.backends import BACKENDS

    reason = BACKENDS[target.backend].unavailable(target.device, target.precision)
    if reason is not None:
        click.echo(f"--speedup: the run is not measured here ({target.backend} {target.device}: {reason}); "
                   f"compress bench {out} on the deploy machine measures it", err=True)
        return summary
    click.echo(f"--speedup: measuring dense vs pruned on {target.backend} {target.device} ...", err=True)
    measured = measure_run(out, target)
    if table_machine is not None and measured["machine"] != table_machine:
        click.echo(f"--speedup: the latency table was measured on {table_machine}, the run is measured here on "
                   f"{measured['machine']}: the prediction is for that machine", err=True)
    summary = {**summary, "measured_speedup": measured["speedup"], "measured": measured}
    write_summary(Path(out) / SUMMARY_FILE, summary)
    return summary


def speedup_words(summary: dict) -> str:
    """The done line's part: asked, predicted, measured."""
    if "speedup_target" not in summary:
        return ""
    predicted = summary.get("predicted_speedup")
    measured = summary.get("measured_speedup")
    cell = summary.get("measured") or {}
    where = f" on {cell['backend']} {cell['device']} {cell['precision']} b{cell['batch_size']}" if cell else ""
    return (f", speed-up asked {summary['speedup_target']:.2f}x, predicted "
            f"{'-' if predicted is None else f'{predicted:.2f}x'}, measured "
            f"{'-' if measured is None else f'{measured:.2f}x'}{where}")
