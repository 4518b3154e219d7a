"""SOURCE -> the models to evaluate, found without running or importing anything.

* a ``compress prune`` run directory (model.pt, summary.json): the PyTorch model, and
  every artifact of RUN/export when an export is there;
* a pruned model file (.pt/.pth): the PyTorch model (RUN/model.pt beside a summary.json
  keeps the run's data);
* an export directory (manifest.json written by ``compress export``): every .onnx and
  .plan file its manifest's ``files`` lists, and the PyTorch model of the run it was
  exported from when that run directory still holds model.pt;
* one or more .onnx (or .plan) files.

Files are data here: a manifest is JSON, read and checked; a name it lists must be a
plain file name in the export directory.  Only ``runners`` opens a model.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

from compressor.artifacts import MODEL_FILE, MODEL_FILE_SUFFIXES, SUMMARY_FILE
from compressor.errors import CompressorError, one_line
from compressor.export.artifacts import file_record
from compressor.export.manifest import FORMAT_VERSION, MANIFEST_NAME

log = logging.getLogger(__name__)

EXPORT_DIR = "export"
ONNX_SUFFIX = ".onnx"
ENGINE_SUFFIX = ".plan"
PYTORCH = "pytorch"
ONNX = "onnx"
TENSORRT = "tensorrt"


# One sentence for both ways a detector reaches eval (its model file, its export).
NOT_A_CLASSIFIER = ("{what}; compress eval measures classification top-1 and loss, not a detector's mAP: "
                    "evaluate detectors in their own loop (their exports are checked by export's parity gate)")


@dataclass
class Subject:
    """One row of the report: a model file and the backend that runs it."""

    name: str  # the row's label: "pytorch" or the artifact's file name
    kind: str  # PYTORCH, ONNX or TENSORRT
    path: Path
    skip_reason: str | None = None  # set: the row is reported as skipped, nothing is run
    note: str | None = None  # something the user should know about this file (its sha256 changed)


@dataclass
class EvalSources:
    """What SOURCE resolved to."""

    source: str  # as given
    kind: str  # "run", "file", "export" or "files"
    subjects: list[Subject]
    run_dir: Path | None = None  # a run whose summary.json names the default data
    export_dir: Path | None = None  # an export directory given as SOURCE: its manifest gets the evaluation
    recorded_top1: float | None = None  # the run's own final validation top-1 (summary.json "top1")
    warnings: list[str] = field(default_factory=list)  # shown under the table

    @property
    def has_pytorch(self) -> bool:
        return any(s.kind == PYTORCH and s.skip_reason is None for s in self.subjects)


def find_subjects(sources: list[str] | tuple[str, ...]) -> EvalSources:
    """Resolve the command line's SOURCE arguments; every mistake is one ``CompressorError``."""
    if not sources:
        raise CompressorError("give a SOURCE: a run directory, a pruned model file, an export directory or .onnx files")
    paths = [Path(text) for text in sources]
    for path in paths:
        if not path.exists():
            raise CompressorError(f"no such file or directory: {path}")
    if len(paths) > 1:
        return _artifact_files(paths, " ".join(sources))
    path = paths[0]
    if path.is_dir():
        if (path / MODEL_FILE).is_file():
            return _run(path, str(path))
        if (path / MANIFEST_NAME).exists() or (path / MANIFEST_NAME).is_symlink():
            return _export(path, str(path))
        raise CompressorError(
            f"{path} is neither a `compress prune` run directory (it has no {MODEL_FILE}) nor a "
            f"`compress export` directory (it has no {MANIFEST_NAME})"
        )
    if path.suffix in MODEL_FILE_SUFFIXES:
        beside_summary = path.name == MODEL_FILE and (path.parent / SUMMARY_FILE).is_file()
        run_dir = path.parent if beside_summary else None
        sources_ = EvalSources(str(path), "file", [Subject(PYTORCH, PYTORCH, path)], run_dir=run_dir)
        if run_dir is not None:
            sources_.recorded_top1 = _recorded_top1(run_dir)
        return sources_
    return _artifact_files(paths, str(path))


def _artifact_files(paths: list[Path], text: str) -> EvalSources:
    subjects = []
    for path in paths:
        if path.is_dir() or path.suffix not in (ONNX_SUFFIX, ENGINE_SUFFIX):
            raise CompressorError(
                f"{path}: several SOURCEs must all be .onnx or .plan files"
                if len(paths) > 1 else
                f"{path} is not something eval runs: give a run directory, a pruned model file "
                f"({'/'.join(MODEL_FILE_SUFFIXES)}), an export directory, or .onnx files"
            )
        if not path.is_file():  # a FIFO or a device: ONNX Runtime's read would block forever
            raise CompressorError(f"{path} is not a regular file")
        subjects.append(_artifact(path, path.name))
    names = [s.name for s in subjects]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:  # rows are named by file name; two rows of one name would be unreadable
        subjects = [Subject(str(s.path), s.kind, s.path, s.skip_reason, s.note) for s in subjects]
    return EvalSources(text, "files", subjects)


def _artifact(path: Path, name: str) -> Subject:
    if path.suffix == ENGINE_SUFFIX:
        from compressor.export.tensorrt import tensorrt_available

        available, reason = tensorrt_available()
        return Subject(name, TENSORRT, path, skip_reason=None if available else reason)
    return Subject(name, ONNX, path)


def _run(directory: Path, text: str) -> EvalSources:
    found = EvalSources(text, "run", [Subject(PYTORCH, PYTORCH, directory / MODEL_FILE)], run_dir=None)
    if (directory / SUMMARY_FILE).is_file():
        found.run_dir = directory
        found.recorded_top1 = _recorded_top1(directory)
    export = directory / EXPORT_DIR
    if (export / MANIFEST_NAME).is_file():
        try:
            manifest = read_export_manifest(export)
        except CompressorError as error:  # the model itself is still worth evaluating
            found.warnings.append(f"{export} left out: {error}")
            log.debug(found.warnings[-1])
        else:
            found.subjects += manifest_subjects(export, manifest)
    return found


def _export(directory: Path, text: str) -> EvalSources:
    manifest = read_export_manifest(directory)
    if isinstance(manifest.get("bundle"), dict) and manifest["bundle"].get("postprocessing") is not None:
        raise CompressorError(NOT_A_CLASSIFIER.format(what=f"{directory} is the export of a detector"))
    found = EvalSources(text, "export", [], export_dir=directory)
    run_dir = _source_run(directory, manifest, found.warnings)
    if run_dir is not None:
        found.subjects.append(Subject(PYTORCH, PYTORCH, run_dir / MODEL_FILE))
        if (run_dir / SUMMARY_FILE).is_file():
            found.run_dir = run_dir
            found.recorded_top1 = _recorded_top1(run_dir)
    found.subjects += manifest_subjects(directory, manifest)
    if not any(s.kind != PYTORCH for s in found.subjects):
        raise CompressorError(f"{directory / MANIFEST_NAME} lists no .onnx or .plan file to evaluate")
    return found


def read_export_manifest(directory: Path) -> dict:
    """The manifest ``compress export`` wrote in ``directory``, or a one-line error."""
    path = directory / MANIFEST_NAME
    if path.is_symlink() or not path.is_file():
        raise CompressorError(f"{path} is not a regular file; an export directory holds the manifest.json export wrote")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    # RecursionError: JSON nested thousands deep ("[[[[...") exhausts the parser's stack
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as error:
        raise CompressorError(f"{path} is not a readable JSON manifest ({one_line(error, 160)})") from error
    if not isinstance(data, dict) or data.get("manifest") != FORMAT_VERSION or not isinstance(data.get("files"), dict):
        raise CompressorError(
            f"{path} is not a manifest written by `compress export` (expected \"manifest\": \"{FORMAT_VERSION}\" "
            "and a \"files\" section)"
        )
    return data


def manifest_subjects(directory: Path, manifest: dict) -> list[Subject]:
    """Every .onnx and .plan file of the manifest's ``files``, in its order."""
    subjects = []
    for name, record in manifest["files"].items():
        if not isinstance(name, str) or Path(name).suffix not in (ONNX_SUFFIX, ENGINE_SUFFIX):
            continue
        path = directory / name
        if Path(name).name != name or name in (".", ".."):
            subjects.append(Subject(name, ONNX, path, skip_reason="the manifest names a path, not a file name"))
            continue
        if path.is_symlink() or not path.is_file():
            why = "a symlink" if path.is_symlink() else "not a file" if path.exists() else "missing"
            subjects.append(Subject(name, _kind(name), path, skip_reason=f"listed in {MANIFEST_NAME} but {why}"))
            continue
        subject = _artifact(path, name)
        expected = record.get("sha256") if isinstance(record, dict) else None
        if expected is not None and file_record(path)["sha256"] != expected:
            subject.note = f"its sha256 differs from the one {MANIFEST_NAME} records"
            log.debug("%s: %s", path, subject.note)  # said in the report (and in an error), not twice
        subjects.append(subject)
    return subjects


def _kind(name: str) -> str:
    return TENSORRT if name.endswith(ENGINE_SUFFIX) else ONNX


def _source_run(directory: Path, manifest: dict, notes: list[str]) -> Path | None:
    """The run directory the export came from, when it still holds model.pt."""
    source = manifest.get("source")
    if not isinstance(source, dict) or source.get("kind") != "run" or not isinstance(source.get("path"), str):
        return None
    run = Path(source["path"])
    if not run.is_absolute():
        # Relative to wherever export ran, which eval cannot know: taken from the working directory
        # it named whatever run sits there now (an unrelated model as the agreement reference, its
        # data as the default). Only the default layout, RUN/export, says where the run is.
        parent = directory.absolute().parent
        if run.name and parent.name == run.name and (parent / MODEL_FILE).is_file():
            return parent
        notes.append(f"no PyTorch row: the manifest records its source run as the relative path {str(run)!r}, "
                     "which does not say where it is; evaluate the run directory to compare with it")
        log.debug(notes[-1])
        return None
    if (run / MODEL_FILE).is_file():
        return run
    notes.append(f"no PyTorch row: the export's source run {run} has no {MODEL_FILE} any more")
    log.debug(notes[-1])
    return None


def _recorded_top1(run_dir: Path) -> float | None:
    """The run's final validation top-1 (percent) from summary.json, None when unreadable."""
    try:
        summary = json.loads((run_dir / SUMMARY_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None
    value = summary.get("top1") if isinstance(summary, dict) else None
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    # a percentage, or nothing: a tampered inf/NaN/-5 would be "compared" with the measured top-1
    return float(value) if math.isfinite(value) and 0 <= value <= 100 else None
