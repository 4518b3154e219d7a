"""``compress eval``: the accuracy of every model file you ship, on real images.

torch and ONNX Runtime are imported inside the command (``compressor.evaluation``),
so ``compress --help`` stays fast.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import click

from compressor.choices import DATASETS
from compressor.cli.common import bounded_int, trust_code_flag, user_errors
from compressor.cli.logs import verbosity_options
from compressor.cli.sections import SectionedCommand
from compressor.errors import CompressorError

SPLITS = ("val", "train")  # compressor.evaluation.data.SPLITS, named here without torch


@click.command("eval", cls=SectionedCommand, context_settings={"max_content_width": 110})
@click.argument("source", nargs=-1, required=True)
@click.option(
    "--data", type=click.Choice(DATASETS),
    help="Dataset to evaluate on [default: the run's own, read from its summary.json with its evaluation "
    "preprocessing]. Needed when SOURCE is not a run (a model file elsewhere, .onnx files, an export whose run "
    "is gone). Nothing is ever downloaded.",
)
@click.option(
    "--data-dir", type=click.Path(),
    help="Folder holding the dataset (cifar10/cifar100: the folder with cifar-10-batches-py/ or cifar-100-python/; "
    "imagefolder: the folder with train/ and val/). Alone, it points a run's own dataset at a new place.",
)
@click.option(
    "--split", type=click.Choice(SPLITS), default="val", show_default=True,
    help="Which split: val, or train read without augmentation (no random crop or flip), in order.",
)
@click.option("--limit", type=bounded_int(min=1), help="Evaluate only the first N images of the split.")
@click.option(
    "--batch-size", type=bounded_int(min=1),
    help="Images per batch [default: the run's own batch size, else 128]. Every model sees the same batches.",
)
@click.option(
    "--json", "json_path", type=click.Path(dir_okay=False),
    help="Also write the report as JSON to this file (written atomically; its folder must exist; an existing "
    "file is replaced only when it is an earlier eval report, or with --overwrite): the data "
    "used and one row per model with top1/top5 in percent, correct counts, loss, top1_agreement (0-1), "
    "backend and provider, or the reason it was skipped.",
)
@click.option("--overwrite", is_flag=True,
              help="Let --json replace an existing file that is not an earlier eval report.")
@trust_code_flag()
@verbosity_options
@user_errors
def eval_command(source: tuple[str, ...], data, data_dir, split, limit, batch_size, json_path, overwrite,
                 trust_code) -> None:
    """Measure top-1, top-5 and loss of SOURCE's models on the same images.

    SOURCE is a `compress prune` run directory (its model.pt, and every ONNX file of RUN/export
    when it has been exported), a pruned model file (.pt/.pth), an export directory (every
    .onnx/.plan file its manifest.json lists, plus the run's model.pt when the run still exists),
    or one or more .onnx files.

    PyTorch runs in fp32 on the CPU, ONNX files in ONNX Runtime (CUDA when available, else CPU),
    .plan engines in TensorRT (skipped, with the reason, without a GPU and TensorRT). Each row
    reports top-1, top-5 (5 or more classes), mean cross-entropy, the image count, where it ran,
    and its top-1 agreement with PyTorch. A run's PyTorch row reproduces the validation top-1 its
    summary.json recorded. Evaluating an export directory adds an "evaluation" section to its
    manifest.json (the files it lists are not touched); nothing else is written but --json.
    """
    from compressor.evaluation import evaluate

    target = _json_target(json_path, overwrite)
    report = evaluate(
        list(source), data=data, data_dir=data_dir, split=split, limit=limit, batch_size=batch_size,
        trust_code=trust_code,
    )
    if target is not None:
        _write_json(target, report.to_dict())
    click.echo(report.table())
    if target is not None:
        click.echo(f"  report in {target}")


def _json_target(text: str | None, overwrite: bool) -> Path | None:
    """Checked before the (long) evaluation: an existing, writable folder, and a name that is
    free, an earlier eval report, or --overwrite given (compressor.outdir.check_free_names)."""
    from compressor.outdir import check_free_names, lexists

    if text is None:
        return None
    path = Path(text)
    folder = path.parent
    lexists(path, "--json")  # a name too long to look up is one line, not a traceback from is_dir
    if not folder.is_dir():
        raise CompressorError(f"--json {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CompressorError(f"--json {path}: the folder {folder} is not writable")
    check_free_names([("--json", path)], overwrite, "it is not a `compress eval` report: give a new file name, or "
                     "pass --overwrite", ours=_is_eval_report)
    return path


def _is_eval_report(path: Path) -> bool:
    """An earlier eval report may be replaced by the next: a slip of the argument (the export's
    manifest.json, model.onnx, summary.json, the user's own file) would otherwise be overwritten
    with the report -- and the manifest or model are what eval reads."""
    from compressor.evaluation.report import REPORT_FORMAT

    if path.is_symlink() or not path.is_file():
        return False
    try:
        with path.open("rb") as handle:
            head = handle.read(1 << 20)  # a report is a few KB; a large file is not one
        data = json.loads(head.decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return False
    return isinstance(data, dict) and data.get("format") == REPORT_FORMAT


def _write_json(path: Path, report: dict) -> None:
    from compressor.atomic import atomic_write_text

    try:
        atomic_write_text(path, json.dumps(report, indent=1, allow_nan=False) + "\n")
    except (OSError, ValueError) as error:
        raise CompressorError(f"could not write --json {path}: {error}") from error
