"""``compress info``: a model's channel groups, MACs and parameters, and what a given
MACs reduction would keep -- checked by slicing and comparing with the masked model."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from compressor.cli.common import INPUT_SIZE_FORMS, bounded_int, finite_float, parse_input_size, trust_code_flag, user_errors
from compressor.cli.logs import verbosity_options
from compressor.cli.sections import SectionedCommand
from compressor.choices import BENCH_BACKENDS, DEFAULT_DEPLOY_BACKEND
from compressor.cli.speedup import speedup_options
from compressor.errors import CompressorError, one_line

if TYPE_CHECKING:
    from compressor.engine.analysis.graph import ChannelGraph


@click.command("info", cls=SectionedCommand)
@click.argument("model")
@click.option(
    "--input-size",
    callback=parse_input_size,
    metavar="C,H,W",
    help=f"Input size to analyse and count at ({INPUT_SIZE_FORMS}) [default: the model's native size].",
)
@click.option("--num-classes", type=bounded_int(min=1), help="Classifier outputs (default: the model's).")
@click.option(
    "--flops-reduction",
    type=finite_float(0, 1, min_open=True, max_open=True),
    help="Also plan, apply and count a pruned model with this fraction of MACs removed (e.g. 0.5).",
)
@click.option(
    "--round-to",
    type=bounded_int(min=1),
    help="Keep channel counts at multiples of N (default: 8 for groups of >= 16 channels, else 1).",
)
@click.option(
    "--max-prune-fraction",
    type=finite_float(0, 1, min_open=True),
    default=0.75,
    show_default=True,
    help="Never remove more than this fraction of a group's channels.",
)
@click.option("--min-width", type=bounded_int(min=1), default=1, show_default=True, help="Keep at least N channels per group.")
@click.option("--ignore", multiple=True, metavar="MODULE", help="Keep this module's channels fixed (repeatable).")
@click.option("--groups", "show_groups", is_flag=True, help="List every channel group (and the plan, with --flops-reduction).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (params, macs, groups, pruned_params, pruned_macs ...).")
@click.option("--deploy-backend", type=click.Choice(BENCH_BACKENDS), default=DEFAULT_DEPLOY_BACKEND, show_default=True,
              help="--speedup: the runtime the model will ship on.")
@click.option("--deploy-device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="--speedup: where it will run (auto: cuda when there is a GPU).")
@speedup_options
@trust_code_flag()
@verbosity_options
@user_errors
def info_command(
    model: str,
    input_size,
    num_classes,
    flops_reduction,
    round_to,
    max_prune_fraction,
    min_width,
    ignore,
    show_groups,
    as_json,
    trust_code,
    deploy_backend,
    deploy_device,
    speedup,
    deploy_precision,
    deploy_batch,
    deploy_threads,
    latency_table,
) -> None:
    """Print params, MACs and channel groups of MODEL (a zoo/torchvision name, timm:NAME,
    module.path:factory or a pruned model file); with --flops-reduction (or --speedup X,
    priced with the deploy target's latency table), really prune a copy and count it."""
    from compressor.cli.speedup import check_deploy_options_read, check_exclusive, deploy_target

    check_exclusive(click.get_current_context(), speedup)
    check_deploy_options_read(click.get_current_context(), speedup)
    target = deploy_target(deploy_backend, deploy_device, deploy_precision, deploy_batch, deploy_threads) \
        if speedup is not None and latency_table is None else None

    from compressor.engine.analysis.errors import ModelRunError
    from compressor.engine.analysis.graph import analyse
    from compressor.engine.flops import count_params
    from compressor.engine.selection import SelectionConfig

    from compressor.memory import check_fits

    from compressor.models.deployable import fix_box_counts
    from compressor.models.registry import example_input

    network, name, size, classes, family = _load_for_info(model, input_size, num_classes, trust_code)
    boxes = fix_box_counts(network)  # before the analysis: the dense count must see the same boxes
    check_fits(network, size, 2, "--input-size")  # before randn: the analysis runs batches of 1 and 2
    example = example_input(family, size)
    started = time.perf_counter()
    try:
        graph = analyse(network, example, ignore=ignore)
    except ModelRunError as error:
        raise CompressorError(f"{error} (check --input-size)") from error
    timings = {"analyse_s": time.perf_counter() - started}
    report = {
        "model": name,
        "input_size": list(size),
        "num_classes": classes,
        "params": count_params(network),
        "macs": graph.dense_macs,
        "groups": len(graph.groups),
        "prunable_channels": graph.prunable_channels,
        "fixed": graph.frozen_reasons,
    }
    if boxes is not None:
        report["macs_counted_at"] = boxes
    plan = None
    if flops_reduction is not None or speedup is not None:
        config = SelectionConfig(flops_reduction or 0.5, round_to, max_prune_fraction, min_width, speedup=speedup)
        latency = None
        if speedup is not None:
            latency = _latency_model(network, graph, size, target, config, ignore, latency_table, timings)
        plan, pruned_report = _prune_and_count(network, graph, config, example, timings, family, size, latency)
        report.update(pruned_report)
    report["timings"] = {k: round(v, 4) for k, v in timings.items()}
    if show_groups:
        report["group_list"] = [
            {"name": g.name, "size": g.size, "kept": len(plan.groups[g.name].kept) if plan else g.size}
            for g in graph.groups
        ]
    if as_json:
        click.echo(json.dumps(report, indent=1))
    else:
        _print_info(report, graph)


def _latency_model(network, graph, size, target, config, ignore, given: str | None, timings: dict):
    from compressor.cli.speedup import table_maker
    from compressor.engine.latency import LatencyModel

    started = time.perf_counter()
    make = table_maker(target, config.round_to, config.max_prune_fraction, config.min_width, tuple(ignore), given)
    table = make(network, size)
    timings["latency_table_s"] = time.perf_counter() - started
    return LatencyModel(graph, table)


def _load_for_info(model: str, input_size, num_classes, trust_code: bool):
    from compressor.artifacts import MODEL_FILE_SUFFIXES
    from compressor.memory import check_fits
    from compressor.runfiles.modelfile import load_pruned
    from compressor.models.zoo import build, entry

    path = Path(model)
    if path.suffix in MODEL_FILE_SUFFIXES or path.is_file():
        network, spec, _ = load_pruned(path, trust_code)
        family = _family(spec.name)
        return network, f"{spec.name} (pruned, {path})", input_size or spec.input_size, spec.num_classes, family
    info = entry(model)
    size = input_size or info.input_size
    network = build(model, num_classes or info.num_classes, input_size=size)
    check_fits(network, size, 2, "--input-size")  # _output_width runs a forward pass next
    classes = num_classes or info.num_classes or _output_width(network, size)
    return network, model, size, classes, info.family


def _family(name: str) -> str | None:
    from compressor.models.zoo import entry

    try:
        return entry(name).family
    except CompressorError:
        return None


def _output_width(network, size) -> int | None:
    """Classifier outputs of a user's factory model that does not say (one forward pass)."""
    import torch

    was_training = network.training
    try:
        with torch.no_grad():
            out = network.eval()(torch.zeros(1, *size))
    except Exception as error:  # noqa: BLE001 - the analysis below reports it with context
        raise CompressorError(f"the model cannot run on an input of shape (1, {', '.join(map(str, size))}): "
                              f"{one_line(str(error), 200)} (check --input-size)") from error
    finally:
        network.train(was_training)
    return int(out.shape[-1]) if isinstance(out, torch.Tensor) and out.dim() >= 1 else None


def _prune_and_count(network, graph: ChannelGraph, config, example, timings, family, size, latency=None) -> tuple:
    from compressor.engine.apply import apply_plan
    from compressor.engine.flops import count_macs, count_params
    from compressor.engine.masking import masked_copy
    from compressor.engine.oneshot import plan_once
    from compressor.engine.plan import kept_class_mask
    from compressor.engine.verify import compare

    started = time.perf_counter()
    planned = plan_once(network, example, config, graph=graph, latency=latency)  # the engine's one-call plan
    plan, predicted = planned.plan, planned.predicted_macs
    speedup = {} if latency is None else {
        "speedup_target": config.speedup, "predicted_speedup": latency.speedup(kept_class_mask(graph, plan)),
        "deploy_target": latency.table.describe()}
    timings["plan_s"] = time.perf_counter() - started
    masked = masked_copy(network, graph, plan)
    started = time.perf_counter()
    pruned = apply_plan(network, graph, plan, example_input=example)
    timings["apply_s"] = time.perf_counter() - started
    from compressor.models.registry import DETECTION, example_input

    macs = count_macs(pruned, example)
    # A detector's outputs are boxes after score threshold and NMS: rounding alone changes them, so
    # apply's check (the sliced copy runs) is the check; benchmarks/detection_coverage.py compares
    # its heads' outputs.
    equivalence = None if family == DETECTION else compare(masked, masked, pruned, (example_input(family, size, 2),))
    return plan, {
        "flops_reduction_target": None if config.speedup is not None else config.flops_reduction,
        "pruned_params": count_params(pruned),
        "pruned_macs": macs,
        "predicted_macs": predicted,
        "macs_reduction": 1 - macs / graph.dense_macs,
        "kept_channels": plan.kept_channels(),
        "max_abs_diff": None if equivalence is None else equivalence.max_abs_diff,
        **speedup,
    }


def _millions(value: int) -> str:
    return f"{value / 1e9:.3f} G" if value >= 1e9 else f"{value / 1e6:.2f} M"


def _print_info(report: dict, graph: ChannelGraph) -> None:
    size = "x".join(str(v) for v in report["input_size"])
    click.echo(f"model              {report['model']}  (input {size}, {report['num_classes']} classes)")
    click.echo(f"params             {report['params']:,} ({_millions(report['params'])})")
    click.echo(f"MACs               {report['macs']:,} ({_millions(report['macs'])})")
    if "macs_counted_at" in report:
        boxes = report["macs_counted_at"]
        click.echo(f"  counted at       {boxes['proposals_per_image']} proposals and {boxes['detections_per_image']} "
                   "detections per image (score thresholds and NMS off; a trained model usually keeps fewer)")
    click.echo(f"channel groups     {report['groups']} prunable, {report['prunable_channels']:,} prunable channels")
    for name, reason in list(report["fixed"].items())[:5]:
        click.echo(f"  fixed            {name}: {reason}")
    if len(report["fixed"]) > 5:
        click.echo(f"  fixed            ... and {len(report['fixed']) - 5} more (see --json)")
    if "pruned_macs" in report:
        if "speedup_target" in report:
            click.echo(f"pruned to a {report['speedup_target']:.2f}x speed-up on {report['deploy_target']} "
                       f"(predicted {report['predicted_speedup']:.2f}x):")
        else:
            click.echo(f"pruned at {report['flops_reduction_target']:.0%} MACs reduction:")
        kept = report["kept_channels"]
        click.echo(f"  channels kept    {kept:,} / {report['prunable_channels']:,}")
        drop = 1 - report["pruned_params"] / report["params"]
        click.echo(f"  params           {report['pruned_params']:,} ({_millions(report['pruned_params'])}, -{drop:.1%})")
        click.echo(
            f"  MACs             {report['pruned_macs']:,} ({_millions(report['pruned_macs'])}, "
            f"-{report['macs_reduction']:.1%}; predicted {report['predicted_macs']:,})"
        )
        if report["max_abs_diff"] is None:
            click.echo("  sliced vs masked detections after NMS are not comparable; the sliced copy was checked to run")
        else:
            click.echo(f"  sliced vs masked max abs diff {report['max_abs_diff']:.2e}")
    for group in report.get("group_list", []):
        click.echo(f"  group {group['name']:<40} {group['kept']:>5} / {group['size']}")
    timings = ", ".join(f"{k[:-2]} {v:.2f} s" for k, v in report["timings"].items())
    click.echo(f"time               {timings}")
