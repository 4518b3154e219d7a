"""``evaluate(source, ...)``: every model file of SOURCE over the same batches, one report.

The order of work makes every user mistake cheap and harmless: SOURCE is resolved
and every model file opened first (a file ONNX Runtime cannot load fails here), then
the data is opened and its image size checked against every model, then the pass
runs.  Nothing is written except, when SOURCE is an export directory whose
manifest.json ``compress export`` wrote, an ``evaluation`` section in that manifest
(every other key, the ``files`` section included, is kept as it was).
"""
from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path

from compressor import __version__ as compressor_version
from compressor.errors import CompressorError, one_line
from compressor.evaluation.data import DataChoice, eval_data, where
from compressor.evaluation.metrics import Tally
from compressor.evaluation.report import OK, SKIPPED, EvalReport, EvalRow
from compressor.evaluation.runners import Runner, check_input_size, make_runner
from compressor.evaluation.subjects import PYTORCH, Subject, find_subjects

log = logging.getLogger(__name__)


def evaluate(
    source,
    *,
    data: str | None = None,
    data_dir: str | None = None,
    split: str = "val",
    limit: int | None = None,
    batch_size: int | None = None,
    trust_code: bool = False,
    record: bool = True,
    progress: bool = True,
) -> EvalReport:
    """Evaluate SOURCE (a run directory, a pruned model file, an export directory, or
    .onnx files: a path or a list of paths) on one split of a dataset.

    ``data``/``data_dir``: the dataset (default: the run's own, from its summary.json);
    ``split``: "val" or "train" (without augmentation); ``limit``: the first N images;
    ``batch_size``: default the run's own; ``trust_code``: let a model file's
    ``module.path:factory`` be imported; ``record``: add the ``evaluation`` section to an
    export directory's manifest.json; ``progress``: a progress bar on a terminal."""
    texts = [str(source)] if isinstance(source, (str, Path)) else [str(s) for s in source]
    choice = DataChoice(data, data_dir, split, limit, batch_size)
    found = find_subjects(texts)
    runners = _open(found.subjects, trust_code)
    model_size = next((r.input_size for r in runners.values() if r.backend == PYTORCH), None) or \
        next((r.input_size for r in runners.values() if r.input_size and None not in r.input_size), None)
    try:
        images = eval_data(choice, found.run_dir, model_size)
    except CompressorError as error:
        if found.kind != "export" or found.run_dir is not None or not found.warnings:
            raise
        # an export without its run: say why the run was not found (gone, or named by a relative path)
        raise CompressorError(f"{error} ({'; '.join(found.warnings)})") from error
    notes = list(found.warnings) + [note for runner in runners.values() for note in runner.notes]
    for runner in runners.values():
        check_input_size(runner, images.input_size)
        if runner.num_classes is not None and runner.num_classes != images.num_classes:
            # under the table, not a log line: a later one-line error must stay the only line on stderr
            notes.append(f"{runner.name} predicts {runner.num_classes} classes, the data has {images.num_classes}")
            log.debug(notes[-1])
    _check_memory(runners, images)
    # the start line, once every file is open and the data checked against each
    log.info("compress eval: %d model(s) of %s on %d %s images of %s, batch %d", len(runners), found.source,
             images.images, images.split, where(images.config), images.batch_size)
    tallies = _run(runners, images, progress)
    report = EvalReport(
        source=found.source, source_kind=found.kind, data=images.describe(),
        rows=[_row(subject, runners.get(id(subject)), tallies.get(id(subject))) for subject in found.subjects],
        measured_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        recorded_top1=found.recorded_top1, versions=_versions(), notes=notes,
    )
    changed = [s.name for s in found.subjects if s.note is not None]
    if record and found.export_dir is not None and changed:
        # The manifest vouches for its files by sha256: an accuracy measured on a file that is no
        # longer the one it records must not be written beside that record as if it were.
        report.notes.append(f"not recorded in {found.export_dir / 'manifest.json'}: {', '.join(changed)} changed "
                            "since the export (sha256 differs)")
    elif record and found.export_dir is not None:
        report.manifest_updated = _record_in_manifest(found.export_dir, report)
    return report


def _open(subjects: list[Subject], trust_code: bool) -> dict[int, Runner]:
    """A runner per subject that is not skipped, PyTorch first (the agreement reference)."""
    ordered = sorted((s for s in subjects if s.skip_reason is None), key=lambda s: s.kind != PYTORCH)
    if not ordered:
        raise CompressorError("nothing to evaluate: " + "; ".join(f"{s.name}: {s.skip_reason}" for s in subjects))
    runners = {}
    for subject in ordered:
        try:
            runners[id(subject)] = make_runner(subject, trust_code)
        except CompressorError as error:
            if subject.note is None:
                raise
            # one line that says both: the file does not load, and it is not the file exported
            raise CompressorError(f"{error} ({subject.note})") from error
    return runners


def _check_memory(runners: dict[int, Runner], images) -> None:
    """Refuse a batch that cannot fit, in one line, before decoding any image: a model file's
    input size sets the image crop where no run does (an ONNX file declaring 3x6000x6000 made
    a batch of 128 need ~55 GB and ended in an allocator traceback or the OOM killer)."""
    from torch import nn

    from compressor.memory import check_fits

    batch = min(images.batch_size, images.images)  # --limit below the batch size: one smaller batch
    what = f"eval's batch of {batch} (lower --batch-size, or evaluate on smaller images)"
    for runner in runners.values():
        # PyTorch: the input and every layer's output; other backends: the input and the decoded batch,
        # padded to a batch size the file fixes (a file fixing 10**7 asked numpy for 114 GiB of zeros)
        fixed = runner.fixed_batch or 0
        check_fits(runner.model if runner.model is not None else nn.Identity(), images.input_size,
                   max(batch, fixed), what if fixed <= batch else f"{runner.name}'s fixed batch of {fixed}")


def _run(runners: dict[int, Runner], images, progress: bool) -> dict[int, Tally]:
    tallies = {key: Tally() for key in runners}
    bar = _progress_bar(images.num_batches, progress)
    try:
        for batch, labels in images.batches():
            reference = None
            for key, runner in runners.items():
                predictions = tallies[key].add(runner(batch), labels, reference)
                if runner.backend == PYTORCH:
                    reference = predictions
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return tallies


def _progress_bar(total: int, progress: bool):
    if not progress:
        return None
    from compressor.progress import progress_bar

    return progress_bar(total, "eval", unit="batch")


def _row(subject: Subject, runner: Runner | None, tally: Tally | None) -> EvalRow:
    backend = {"pytorch": "pytorch", "onnx": "onnxruntime", "tensorrt": "tensorrt"}[subject.kind]
    if runner is None or tally is None:
        return EvalRow(subject.name, backend, None, str(subject.path), SKIPPED, subject.skip_reason, note=subject.note)
    return EvalRow(
        subject.name, runner.backend, runner.provider, str(subject.path), OK, None, tally.images, tally.top1,
        tally.top5, tally.loss, tally.correct_top1, tally.correct_top5 if tally.top5 is not None else None,
        tally.agreement, subject.note,
    )


def _versions() -> dict:
    import torch

    versions = {"compressor": compressor_version, "torch": torch.__version__}
    try:
        import onnxruntime

        versions["onnxruntime"] = onnxruntime.__version__
    except Exception:  # noqa: BLE001 - not installed or broken: no version to report
        versions["onnxruntime"] = None
    return versions


def _record_in_manifest(directory: Path, report: EvalReport) -> str | None:
    """Add the ``evaluation`` section to the export's manifest.json when export wrote it;
    a manifest that cannot be rewritten costs the record, not the evaluation."""
    from compressor.export.manifest import MANIFEST_NAME, our_manifest_files, read_manifest, write_manifest

    path = directory / MANIFEST_NAME
    if our_manifest_files(path) is None:
        log.info("%s is not a manifest `compress export` wrote; not recording the evaluation there", path)
        return None
    try:
        manifest = read_manifest(directory)
        manifest["evaluation"] = report.manifest_section()
        write_manifest(directory, manifest)
    except (OSError, ValueError) as error:
        log.warning("could not record the evaluation in %s: %s", path, one_line(error))
        return None
    return str(path)


__all__ = ["evaluate"]
