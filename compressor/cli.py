"""The ``compress`` command line.

User mistakes (unknown model, bad sizes, unreachable targets, unreadable files)
end with one line on stderr and exit code 1 (2 for malformed options), never a
traceback.

torch, the engine, the exporters and the benchmarks are imported inside the command
bodies: ``compress --help`` and ``compress COMMAND --help`` then start in a fraction of
a second instead of several (``benchmarks/cli_startup.py`` measures it,
``tests/unit/test_cli_lazy_imports.py`` holds it).
"""
from __future__ import annotations

import functools
import json
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from compressor import __version__
from compressor.errors import CompressorError

if TYPE_CHECKING:
    from compressor.analysis.graph import ChannelGraph


def user_errors(command):
    """Print CompressorError as a one-line error instead of a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except CompressorError as error:
            raise click.ClickException(str(error)) from error

    return wrapper


def parse_input_size(ctx, param, value: str | None) -> tuple[int, int, int] | None:
    if value is None:
        return None
    parts = [p for p in re.split(r"[,x×\s]+", value.strip()) if p]
    if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise click.BadParameter(f"expected three positive integers C,H,W (e.g. 3,224,224), got '{value}'")
    return tuple(int(p) for p in parts)


def _trust_code(command):
    """The --trust-code flag (compressor.trust); imported here, not at the top, like the rest."""
    from compressor.trust import trust_code_option

    return trust_code_option()(command)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="compress")
def main() -> None:
    """One-cycle structured pruning: find the channels that do not pay for themselves,
    remove them, and hand back a smaller dense network."""


@main.command("models")
@click.option(
    "--family",
    type=click.Choice(["all", "cifar", "torchvision", "timm"]),
    default="all",
    show_default=True,
    help="Only list the zoo's CIFAR models, torchvision's classifiers or timm's models "
    "(timm: needs the timm extra; 'all' leaves timm's ~1300 names out).",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
@user_errors
def models_command(family: str, as_json: bool) -> None:
    """List the model names that --model / MODEL accept.  Besides these: timm:NAME for any
    timm model, and module.path:factory for a function of yours that returns an nn.Module."""
    from compressor.zoo import entry
    from models import list_models

    rows = []
    if family == "timm":
        from models.timm_models import PREFIX, TimmError, architectures, native_input_size

        try:
            names = architectures()
        except TimmError as error:  # timm is an optional extra: say which, in one line
            raise CompressorError(str(error)) from error
        for arch in names:
            rows.append({"name": PREFIX + arch, "family": "timm", "input_size": list(native_input_size(arch))})
    for name in list_models() if family != "timm" else []:
        info = entry(name)
        if family in ("all", info.family):
            rows.append({"name": name, "family": info.family, "input_size": list(info.input_size)})
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    for row in rows:
        size = "x".join(str(v) for v in row["input_size"])
        click.echo(f"{row['name']:<24} {row['family']:<12} {size}")


@main.command("info")
@click.argument("model")
@click.option(
    "--input-size",
    callback=parse_input_size,
    metavar="C,H,W",
    help="Input size to analyse and count at (default: the model's native size).",
)
@click.option("--num-classes", type=click.IntRange(min=1), help="Classifier outputs (default: the model's).")
@click.option(
    "--flops-reduction",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    help="Also plan, apply and count a pruned model with this fraction of MACs removed (e.g. 0.5).",
)
@click.option(
    "--round-to",
    type=click.IntRange(min=1),
    help="Keep channel counts at multiples of N (default: 8 for groups of >= 16 channels, else 1).",
)
@click.option(
    "--max-prune-fraction",
    type=click.FloatRange(0, 1, min_open=True),
    default=0.75,
    show_default=True,
    help="Never remove more than this fraction of a group's channels.",
)
@click.option("--min-width", type=click.IntRange(min=1), default=1, show_default=True, help="Keep at least N channels per group.")
@click.option("--ignore", multiple=True, metavar="MODULE", help="Keep this module's channels fixed (repeatable).")
@click.option("--groups", "show_groups", is_flag=True, help="List every channel group (and the plan, with --flops-reduction).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (params, macs, groups, pruned_params, pruned_macs ...).")
@_trust_code
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
) -> None:
    """Print params, MACs and channel groups of MODEL (a zoo/torchvision name, timm:NAME,
    module.path:factory or a pruned model file); with --flops-reduction, really prune a copy
    and count it."""
    import torch

    from compressor.analysis.errors import ModelRunError
    from compressor.analysis.graph import analyse
    from compressor.flops import count_params
    from compressor.selection import SelectionConfig

    from compressor.memory import check_fits

    network, name, size, classes = _load_for_info(model, input_size, num_classes, trust_code)
    check_fits(network, size, 2, "--input-size")  # before randn: the analysis runs batches of 1 and 2
    example = torch.randn(1, *size)
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
    plan = None
    if flops_reduction is not None:
        config = SelectionConfig(flops_reduction, round_to, max_prune_fraction, min_width)
        plan, pruned_report = _prune_and_count(network, graph, config, example, timings)
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


def _load_for_info(model: str, input_size, num_classes, trust_code: bool):
    from compressor.memory import check_fits
    from compressor.serialization import load_pruned
    from compressor.zoo import build, entry

    path = Path(model)
    if path.suffix in (".pt", ".pth") or path.is_file():
        network, spec, _ = load_pruned(path, trust_code)
        return network, f"{spec.name} (pruned, {path})", input_size or spec.input_size, spec.num_classes
    info = entry(model)
    size = input_size or info.input_size
    network = build(model, num_classes or info.num_classes, input_size=size)
    check_fits(network, size, 2, "--input-size")  # _output_width runs a forward pass next
    classes = num_classes or info.num_classes or _output_width(network, size)
    return network, model, size, classes


def _output_width(network, size) -> int | None:
    """Classifier outputs of a user's factory model that does not say (one forward pass)."""
    import torch

    was_training = network.training
    try:
        with torch.no_grad():
            out = network.eval()(torch.zeros(1, *size))
    except Exception as error:  # noqa: BLE001 - the analysis below reports it with context
        raise CompressorError(f"the model cannot run on an input of shape (1, {', '.join(map(str, size))}): "
                              f"{' '.join(str(error).split())[:200]} (check --input-size)") from error
    finally:
        network.train(was_training)
    return int(out.shape[-1]) if isinstance(out, torch.Tensor) and out.dim() >= 1 else None


def _prune_and_count(network, graph: ChannelGraph, config, example, timings) -> tuple:
    from compressor.apply import apply_plan
    from compressor.cost import CostModel
    from compressor.flops import count_macs, count_params
    from compressor.importance import group_l2
    from compressor.masking import masked_copy
    from compressor.plan import kept_class_mask
    from compressor.selection import select_plan
    from compressor.verify import compare

    started = time.perf_counter()
    cost = CostModel(graph, network)
    plan = select_plan(graph, cost, group_l2(graph, network), config)
    predicted = cost.macs(kept_class_mask(graph, plan))
    timings["plan_s"] = time.perf_counter() - started
    masked = masked_copy(network, graph, plan)
    started = time.perf_counter()
    pruned = apply_plan(network, graph, plan)
    timings["apply_s"] = time.perf_counter() - started
    macs = count_macs(pruned, example)
    equivalence = compare(masked, masked, pruned, (example.repeat(2, 1, 1, 1),))
    return plan, {
        "flops_reduction_target": config.macs_reduction,
        "pruned_params": count_params(pruned),
        "pruned_macs": macs,
        "predicted_macs": predicted,
        "macs_reduction": 1 - macs / graph.dense_macs,
        "kept_channels": plan.kept_channels(),
        "max_abs_diff": equivalence.max_abs_diff,
    }


def _millions(value: int) -> str:
    return f"{value / 1e9:.3f} G" if value >= 1e9 else f"{value / 1e6:.2f} M"


def _print_info(report: dict, graph: ChannelGraph) -> None:
    size = "x".join(str(v) for v in report["input_size"])
    click.echo(f"model              {report['model']}  (input {size}, {report['num_classes']} classes)")
    click.echo(f"params             {report['params']:,} ({_millions(report['params'])})")
    click.echo(f"MACs               {report['macs']:,} ({_millions(report['macs'])})")
    click.echo(f"channel groups     {report['groups']} prunable, {report['prunable_channels']:,} prunable channels")
    for name, reason in list(report["fixed"].items())[:5]:
        click.echo(f"  fixed            {name}: {reason}")
    if len(report["fixed"]) > 5:
        click.echo(f"  fixed            ... and {len(report['fixed']) - 5} more (see --json)")
    if "pruned_macs" in report:
        click.echo(f"pruned at {report['flops_reduction_target']:.0%} MACs reduction:")
        kept = report["kept_channels"]
        click.echo(f"  channels kept    {kept:,} / {report['prunable_channels']:,}")
        drop = 1 - report["pruned_params"] / report["params"]
        click.echo(f"  params           {report['pruned_params']:,} ({_millions(report['pruned_params'])}, -{drop:.1%})")
        click.echo(
            f"  MACs             {report['pruned_macs']:,} ({_millions(report['pruned_macs'])}, "
            f"-{report['macs_reduction']:.1%}; predicted {report['predicted_macs']:,})"
        )
        click.echo(f"  sliced vs masked max abs diff {report['max_abs_diff']:.2e}")
    for group in report.get("group_list", []):
        click.echo(f"  group {group['name']:<40} {group['kept']:>5} / {group['size']}")
    timings = ", ".join(f"{k[:-2]} {v:.2f} s" for k, v in report["timings"].items())
    click.echo(f"time               {timings}")


def _register_subcommands() -> None:
    from compressor.cli_prune import prune_command
    from compressor.cli_export import export_command
    from compressor.cli_bench import bench_command

    main.add_command(prune_command)
    main.add_command(export_command)
    main.add_command(bench_command)


_register_subcommands()

if __name__ == "__main__":
    main()
