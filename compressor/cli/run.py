"""``compress run``: one command from a model to a report.

prune -> export -> eval -> bench -> report, each stage the very command it stands for:
prune through the functions ``compress prune`` runs (its options pass through unchanged),
export, eval and bench through their own command's parser and body, with the arguments a
user would type (``compress export RUN --int8``, ``compress eval RUN --json RUN/eval.json``,
``compress bench RUN ...``), so every file is where and what the separate command writes.
The report (``compressor.report``) then joins those files without measuring anything again.

``stages.json`` in the run directory records each finished stage with the files it wrote;
``--resume RUN`` skips the stages whose files are still there unchanged, continues a
half-trained prune from its checkpoint (prune's own --resume), and runs the rest.
"""
from __future__ import annotations

import logging
import shlex
import sys
import time
from pathlib import Path

import click

from compressor.choices import BENCH_BACKENDS, BENCH_PRECISIONS
from compressor.cli.bench import (BACKEND_HELP, BATCH_SIZE_HELP, PRECISION_HELP, TIMING_OPTIONS, _batch_sizes, _names,
                                  bench_command)
from compressor.cli.common import stacked, user_errors
from compressor.cli.evaluate import eval_command
from compressor.cli.export import CALIB_SAMPLES_OPTION, INT8_OPTION, export_command
from compressor.cli.logs import verbosity_options
from compressor.cli.prune import plan_prune, prune_options, train
from compressor.cli.sections import SectionedCommand
from compressor.errors import CompressorError
from compressor.export.config import FORMATS

log = logging.getLogger(__name__)

RUN_PLOT = "run.png"  # the prune's curves (compressor.training.run writes it)
EVAL_FILE = "eval.json"  # where the eval stage's --json goes, in the run directory
REPORT_FILES = ("report.json", "report.md", "report.html")
DEFAULT_BENCH_BACKENDS = "torch,onnxruntime"  # bench's own default (plus tensorrt when engines were built)

OPTIONS = [
    INT8_OPTION,
    CALIB_SAMPLES_OPTION,
    click.option("--export-format", type=click.Choice(("auto", *FORMATS)), default="auto", show_default=True,
                 help="The export stage's --format: onnx, or tensorrt (also TensorRT engines; an NVIDIA GPU and "
                 "TensorRT). auto: tensorrt where this machine has both, else onnx."),
    click.option("--bench-backend", "bench_backends", callback=_names(BENCH_BACKENDS),
                 help=f"The bench stage's --backend [default: {DEFAULT_BENCH_BACKENDS}, and tensorrt when the export "
                 f"built engines]. {BACKEND_HELP}"),
    click.option("--bench-batch-size", "bench_batch_sizes", default="1,32", show_default=True, callback=_batch_sizes,
                 help=f"The bench stage's --batch-size: {BATCH_SIZE_HELP}"),
    click.option("--bench-precision", "bench_precisions", callback=_names(BENCH_PRECISIONS),
                 help=f"The bench stage's --precision [default: fp32, and int8 with --int8]. {PRECISION_HELP}"),
]
# the options of the stages after prune: recorded in stages.json, and a --resume keeps them
STAGE_OPTIONS = ("int8", "calib_samples", "export_format", "bench_backends", "bench_batch_sizes", "bench_precisions",
                 *TIMING_OPTIONS)


run_options = stacked([*OPTIONS, *TIMING_OPTIONS.values()])


@click.command("run", cls=SectionedCommand, context_settings={"max_content_width": 110})
@prune_options
@run_options
@verbosity_options
@click.pass_context
@user_errors
def run_command(ctx: click.Context, **options) -> None:
    """Prune MODEL, export it, evaluate and time every artifact, and write one report.

    The stages are the separate commands, run in turn into one directory (--out):
    `compress prune` (every prune option below), `compress export RUN` (--int8,
    --export-format), `compress eval RUN --json RUN/eval.json`, `compress bench RUN`
    (the --bench-* and timing options), then report.md, report.html (plots embedded,
    self-contained) and report.json: per artifact (dense baseline, pruned PyTorch, each
    exported file) top-1/top-5, MACs, params, file size, latency per backend, precision and
    batch, and the speed-up over dense, all copied from the stages' files.

    --resume RUN continues an interrupted pipeline: finished stages whose files are
    unchanged are skipped (stages.json records them), a half-trained prune continues from
    its checkpoint, the rest runs; a plain `compress prune` run directory is taken up too."""
    settings = {name: options.pop(name) for name in STAGE_OPTIONS}
    resume, trust_code = options["resume"], options["trust_code"]
    out = None
    try:
        stages = _open_stages(ctx, resume, settings)
        spec, payload = plan_prune(ctx, options)  # every check of prune's, before anything is written
        out = spec.out
        if stages is None:
            from compressor.report.stages import Stages

            stages = Stages(out, _jsonable(settings))
        _run(ctx, stages, spec, payload, trust_code)
    except KeyboardInterrupt:
        click.echo(f"interrupted; continue with compress run --resume {out or resume or '--out'}", err=True)
        sys.exit(130)


def _jsonable(settings: dict) -> dict:
    return {key: list(value) if isinstance(value, tuple) else value for key, value in settings.items()}


def _open_stages(ctx: click.Context, resume: str | None, settings: dict):
    """--resume: the pipeline's record, its stage options kept (a differing one given now is
    refused, as prune refuses its own); None for a fresh pipeline or a plain prune run."""
    from compressor.outdir import lexists
    from compressor.report.stages import STAGES_FILE, Stages
    from compressor.training.run import conflicts

    if resume is None or not lexists(Path(resume) / STAGES_FILE, "--resume"):
        return None
    stages = Stages.load(Path(resume))
    given = {key: value for key, value in settings.items()
             if ctx.get_parameter_source(key) is click.core.ParameterSource.COMMANDLINE}
    differences = conflicts(stages.settings, given)
    if differences:
        raise CompressorError("--resume refuses settings that differ from the pipeline: " + "; ".join(differences))
    settings.update(stages.settings)
    return stages


def _run(ctx: click.Context, stages, spec, payload, trust_code: bool) -> None:
    from compressor.report.stages import STAGES

    out = spec.out
    steps = {
        "prune": lambda: _prune(ctx, spec, payload),
        "export": lambda: _export(out, stages.settings, trust_code),
        "eval": lambda: _eval(out, trust_code),
        "bench": lambda: _bench(out, stages.settings, spec.train.device, stages.done.get("export"), trust_code),
        "report": lambda: _report(out, stages),
    }
    again = False  # once a stage runs, every later one runs: each reads what the one before wrote
    for number, stage in enumerate(STAGES, 1):
        where = f"stage {number}/{len(STAGES)} {stage}"
        if not again and stages.complete(stage):
            log.info("%s: done earlier (%s), skipped", where, ", ".join(stages.done[stage]["files"]))
            continue
        again = True
        stages.forget(stage)
        started = time.monotonic()
        log.info("%s: started", where)
        command, files = steps[stage]()
        stages.record(stage, command, files)
        log.info("%s: done in %.0f s (%s)", where, time.monotonic() - started,
                 ", ".join(str(f.relative_to(out)) for f in files))
    click.echo(f"report: {out / 'report.md'} and {out / 'report.html'}")


def _invoke(command: click.Command, args: list[str]) -> str:
    """`compress COMMAND ARGS` in this process: the command's own parser and body."""
    with command.make_context(command.name, list(args)) as sub:
        command.invoke(sub)
    return shlex.join(["compress", command.name, *args])


def _prune(ctx: click.Context, spec, payload) -> tuple[str, list[Path]]:
    from compressor.artifacts import MODEL_FILE, SUMMARY_FILE

    train(spec, payload)
    files = [spec.out / name for name in (SUMMARY_FILE, MODEL_FILE, "plan.json", "metrics.jsonl", RUN_PLOT)]
    return _prune_line(ctx, spec.out, payload is not None), [f for f in files if f.is_file()]


def _prune_line(ctx: click.Context, out: Path, resumed: bool) -> str:
    """The `compress prune` line this stage stands for: the prune options typed to `compress run`."""
    if resumed:
        return shlex.join(["compress", "prune", "--resume", str(out)])
    given = (click.core.ParameterSource.COMMANDLINE, click.core.ParameterSource.DEFAULT_MAP)  # typed, or --config's
    words = ["compress", "prune"]
    for param in ctx.command.params:
        if param.name in (*STAGE_OPTIONS, "out", "resume") or param.name not in ctx.params or \
                ctx.get_parameter_source(param.name) not in given:
            continue  # --config itself is not passed on (expose_value=False): the settings it gave are
        value = ctx.params[param.name]
        if getattr(param, "is_flag", False):
            words.append(param.opts[0] if value else (param.secondary_opts or param.opts)[0])
        elif getattr(param, "multiple", False):
            words += [word for item in value for word in (param.opts[0], str(item))]
        else:
            words += [param.opts[0], ",".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)]
    return shlex.join([*words, "--out", str(out)])


def _export(out: Path, settings: dict, trust_code: bool) -> tuple[str, list[Path]]:
    from compressor.export.manifest import MANIFEST_NAME
    from compressor.export.sources import default_export_dir
    from compressor.report.collect import read_json

    args = [str(out), "--format", _export_format(settings["export_format"])]
    if settings["int8"]:
        args += ["--int8", "--calib-samples", str(settings["calib_samples"])]
    command = _invoke(export_command, args + (["--trust-code"] if trust_code else []))
    folder = default_export_dir(out)
    manifest = read_json(folder / MANIFEST_NAME)
    return command, [folder / MANIFEST_NAME, *(folder / name for name in manifest["files"])]


def _export_format(chosen: str) -> str:
    if chosen != "auto":
        return chosen
    from compressor.export.tensorrt import tensorrt_available

    return "tensorrt" if tensorrt_available()[0] else "onnx"


def _eval(out: Path, trust_code: bool) -> tuple[str, list[Path]]:
    target = out / EVAL_FILE
    return _invoke(eval_command, [str(out), "--json", str(target), *(["--trust-code"] if trust_code else [])]), [target]


def _bench(out: Path, settings: dict, device: str, export: dict | None, trust_code: bool) -> tuple[str, list[Path]]:
    from compressor.cli.bench import REPORT_NAMES, _default_out
    from compressor.export.pipeline import PLAN_FILE

    engines = export is not None and any(name.endswith(Path(PLAN_FILE).suffix) for name in export["files"])
    backends = settings["bench_backends"] or DEFAULT_BENCH_BACKENDS.split(",") + (["tensorrt"] if engines else [])
    precisions = settings["bench_precisions"] or ["fp32", *(["int8"] if settings["int8"] else [])]
    args = [str(out), "--backend", ",".join(backends), "--precision", ",".join(precisions),
            "--batch-size", ",".join(map(str, settings["bench_batch_sizes"])),
            "--device", "cuda" if device.startswith("cuda") else device]
    for name in TIMING_OPTIONS:  # bench's own options, under their own names
        if settings[name] is not None:
            args += ["--" + name.replace("_", "-"), repr(settings[name])]
    # --overwrite: RUN/bench is the pipeline's own; a stage that runs again replaces what it wrote
    command = _invoke(bench_command, [*args, "--overwrite", *(["--trust-code"] if trust_code else [])])
    folder = _default_out([str(out)])
    return command, [folder / name for name in REPORT_NAMES if (folder / name).is_file()]


def _report(out: Path, stages) -> tuple[str, list[Path]]:
    from compressor.artifacts import SUMMARY_FILE
    from compressor.cli.bench import REPORT_NAMES, _default_out
    from compressor.export.manifest import MANIFEST_NAME
    from compressor.export.sources import default_export_dir
    from compressor.report.collect import RunFiles
    from compressor.report.render import write_report

    bench = _default_out([str(out)])
    files = RunFiles(out, out / SUMMARY_FILE, out / RUN_PLOT, default_export_dir(out) / MANIFEST_NAME,
                     out / EVAL_FILE, bench / REPORT_NAMES[0], bench / REPORT_NAMES[2])
    return "compress run (the report)", write_report(files, stages.done, [out / name for name in REPORT_FILES])
