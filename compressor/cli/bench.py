"""``compress bench``: the measured speed-up of a pruned model over its dense original.

Heavy imports (onnxruntime, tensorrt, matplotlib) happen inside the command so the
rest of the CLI stays fast.
"""
from __future__ import annotations

import logging
from pathlib import Path

import click

from compressor.choices import BENCH_BACKENDS as BACKEND_NAMES
from compressor.choices import BENCH_PRECISIONS
from compressor.cli.common import MAX_COUNT, bounded_int, finite_float, stacked, trust_code_flag, user_errors
from compressor.cli.logs import verbosity_options
from compressor.cli.sections import SectionedCommand
from compressor.errors import CompressorError

log = logging.getLogger(__name__)

# Seconds of warm-up or timing per variant, at most: a bench times many variants, and an hour
# each is already a day's run; more is a slip of the keyboard (or inf, which never ends).
MAX_SECONDS = 3600.0


def _names(valid: tuple[str, ...]):
    def parse(ctx, param, value: str | None) -> tuple[str, ...] | None:
        if value is None:  # `compress run`'s --bench-* options: chosen by what the run exported
            return None
        names = tuple(v.strip() for v in value.split(",") if v.strip())
        unknown = [n for n in names if n not in valid]
        if unknown:
            raise click.BadParameter(f"unknown '{unknown[0]}'; choose from {', '.join(valid)}")
        if not names:
            raise click.BadParameter("give at least one")
        return tuple(dict.fromkeys(names))

    return parse


def _batch_sizes(ctx, param, value: str) -> tuple[int, ...]:
    if value is None:
        return None
    try:
        sizes = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers such as 1,32, got '{value}'")
    if not sizes or any(not 1 <= s <= MAX_COUNT for s in sizes):
        raise click.BadParameter(f"batch sizes must be integers in 1..{MAX_COUNT}")
    return tuple(dict.fromkeys(sizes))


BACKEND_HELP = ("Comma-separated: torch (eager), torch-compile (inductor), onnxruntime (CPU or CUDA provider by "
                "--device), onnxruntime-cuda, onnxruntime-trt (ORT's TensorRT provider), tensorrt (an engine). "
                "A backend this machine cannot run is reported as skipped, with the reason.")
BATCH_SIZE_HELP = "Comma-separated batch sizes (latency regime and throughput regime)."
PRECISION_HELP = ("Comma-separated: fp32, fp16 (GPU only; ONNX backends use an FP16 ONNX with float32 I/O), "
                  "int8 (the QDQ ONNX on onnxruntime (CPU) and the TensorRT backends: an export's model_int8.onnx "
                  "when given, else one quantized here with the export's settings, calibrated on random inputs: "
                  "enough to time it, not to judge its accuracy).")
# How long each variant is timed, and on how many threads: `compress run` offers the same options.
TIMING_OPTIONS = {
    "threads": click.option("--threads", type=bounded_int(min=1),
                            help="CPU threads for PyTorch and ONNX Runtime [default: every usable core]."),
    "warmup_s": click.option("--warmup-s", type=finite_float(min=0, max=MAX_SECONDS), default=1.0, show_default=True,
                             help="Warm-up seconds per variant (at least --warmup-runs runs too)."),
    "warmup_runs": click.option("--warmup-runs", type=bounded_int(min=1), default=10, show_default=True,
                                help="Warm-up runs per variant."),
    "min_runs": click.option("--min-runs", type=bounded_int(min=1), default=50, show_default=True,
                             help="Timed runs per variant, at least."),
    "min_time_s": click.option("--min-time-s", type=finite_float(min=0, max=MAX_SECONDS), default=2.0,
                               show_default=True,
                               help="Timed seconds per variant, at least (both this and --min-runs must be met)."),
    "rounds": click.option("--rounds", type=bounded_int(min=1), default=5, show_default=True,
                           help="Dense and pruned are timed in this many alternating rounds, so machine drift hits both."),
}
# bench's report files (bench.json, bench.md, bench.png), in --out [default: RUN/bench]
REPORT_NAMES = ("bench.json", "bench.md", "bench.png")


timing_options = stacked(TIMING_OPTIONS.values())


@click.command("bench", cls=SectionedCommand, context_settings={"max_content_width": 110})
@click.argument("sources", nargs=-1, required=True, metavar="SOURCE...")
@click.option("--backend", "backends", default="torch,onnxruntime", show_default=True, callback=_names(BACKEND_NAMES),
              help=BACKEND_HELP)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="Where to run: auto is cuda when PyTorch sees a GPU, else cpu.")
@click.option("--batch-size", "batch_sizes", default="1,32", show_default=True, callback=_batch_sizes,
              help=BATCH_SIZE_HELP)
@click.option("--precision", "precisions", default="fp32", show_default=True, callback=_names(BENCH_PRECISIONS),
              help=PRECISION_HELP)
@timing_options
@click.option("--out", type=click.Path(file_okay=False),
              help="Where bench.json, bench.md and bench.png go [default: RUN/bench for one run directory, else bench/]. "
              "A report file that is already there (an earlier bench's results, or your own file of that name) is "
              "never replaced: timings are one moment on one machine and cannot be had again, so a second bench is "
              "refused before it times anything. Give it another --out to keep both, or --overwrite.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the JSON records here instead (a new file, or --overwrite).")
@click.option("--markdown", "markdown_path", type=click.Path(dir_okay=False), help="Write the markdown table here instead (a new file, or --overwrite).")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="Write the PNG chart here instead (a new file, or --overwrite).")
@click.option("--overwrite", is_flag=True,
              help="Replace existing report files (bench.json, bench.md, bench.png or the files --json, --markdown, "
              "--plot name); nothing else is touched.")
@trust_code_flag()
@verbosity_options
@user_errors
def bench_command(sources, **options) -> None:
    """Time SOURCE's dense original against the pruned model on this machine.

    SOURCE is a `compress prune` run directory or a pruned model file (dense and pruned
    are compared; ONNX files and engines are exported into a cache next to it as the
    backends need them), or ONNX / TensorRT engine files (the first one is the baseline
    the others are compared with). Prints a table of median, p90, p99, mean ± std and
    throughput, with speed-up = dense median / pruned median next to the MACs ratio and
    efficiency = speed-up / MACs ratio (1.0: the MACs saving fully became speed).
    A pruned single-stage detector is timed as it is exported: its network, without the
    post-processing (see compress export --help).
    """

    _bench(sources, **options)


def _bench(sources, backends, device, batch_sizes, precisions, threads, warmup_s, warmup_runs, min_runs, min_time_s,
           rounds, out, json_path, markdown_path, plot_path, overwrite, trust_code) -> None:
    from compressor.bench.bench import BenchConfig, cells, run_bench
    from compressor.bench.report import environment_line, format_table, write_json, write_markdown, write_plot
    from compressor.bench.subjects import check_batch_sizes, resolve
    from compressor.bench.timing import TimingConfig
    from compressor.outdir import check_free_names

    timing = TimingConfig(warmup_s, warmup_runs, min_runs, min_time_s, rounds)
    config = BenchConfig(backends, device, batch_sizes, precisions, threads, timing)
    groups = resolve(list(sources), trust_code)
    check_batch_sizes(groups, batch_sizes)  # before the progress bar: an error is one clean line
    out_dir = Path(out) if out else _default_out(sources)
    named = [(option if given else "", Path(given) if given else out_dir / default) for option, given, default in
             zip(("--json", "--markdown", "--plot"), (json_path, markdown_path, plot_path), REPORT_NAMES)]
    targets = [path for _, path in named]
    # Read-only first: a refusal leaves even the folders' times as they were.
    check_free_names(named, overwrite, "a bench keeps earlier results: choose another --out, or pass --overwrite")
    _check_outputs(targets, None if out else out_dir, _caches(groups, config))
    models = ", ".join(dict.fromkeys(s.name.rsplit(" ", 1)[0] for g in groups for s in g.subjects))
    log.info("compress bench: %s on %s (%s threads); %s; %s; batch %s -> %s", models, config.resolved_device,
             config.resolved_threads, ", ".join(backends), ", ".join(precisions), ",".join(map(str, batch_sizes)),
             ", ".join(dict.fromkeys(str(path.parent) for path in targets)))
    progress = _progress(sum(1 for _ in cells(groups, config)))
    try:
        result = run_bench(groups, config, on_cell=progress)
    finally:
        progress.close()
    click.echo(environment_line(result.environment))
    click.echo(format_table(result))
    title = f"compress bench: {models} on {result.config['device']}"
    written = [
        write_json(result, targets[0]),
        write_markdown(result, targets[1], title),
        write_plot(result, targets[2], title),
    ]
    click.echo("wrote " + ", ".join(str(p) for p in written if p is not None))
    if not result.records:
        raise CompressorError("nothing could be timed: every backend was skipped (reasons above)")


def _check_outputs(targets: list[Path], default_out: Path | None, caches: list[Path]) -> None:
    """Every place bench writes, before any export or timing (minutes) rather than after it:
    the reports' directories and the caches exports go into.  ``default_out`` (RUN/bench)
    and the caches are directories bench names itself, so a link planted there is refused."""
    from compressor.outdir import ensure_writable_dir, refuse_links

    if default_out is not None and any(target.parent == default_out for target in targets):
        refuse_links(default_out, 1, "bench output directory")
    for cache in caches:
        refuse_links(cache, 3, "bench cache directory")  # SOURCE_DIR/bench/cache/<digest>
    for directory in dict.fromkeys(target.parent for target in targets):
        ensure_writable_dir(directory, "bench output directory", keep=False)
    for cache in caches:
        ensure_writable_dir(cache, "bench cache directory", keep=False)


def _caches(groups, config) -> list[Path]:
    """The model caches exports go into, when a backend that runs here needs exported files."""
    from compressor.bench.bench import exports_files

    if not exports_files(config):
        return []
    return list(dict.fromkeys(s.cache for g in groups for s in g.subjects if s.cache is not None))


def _default_out(sources) -> Path:
    if len(sources) == 1 and Path(sources[0]).is_dir():
        return Path(sources[0]) / "bench"
    return Path("bench")


class _progress:
    """A bar over the (model, backend, precision, batch) cells, on stderr."""

    def __init__(self, total: int):
        from compressor.progress import progress_bar

        self.bar = progress_bar(total, "bench")
        self.started = False

    def __call__(self, label: str) -> None:
        if self.started:
            self.bar.update(1)
        self.started = True
        self.bar.set_postfix_str(label, refresh=True)

    def close(self) -> None:
        self.bar.close()
