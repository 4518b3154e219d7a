"""One export from start to finish: a table of steps (``STEPS``: ONNX -> simplify and the
parity gate -> FP16 -> INT8 -> TensorRT engines), then the manifest.

Each step is a ``Step``: its name, the files it writes, the manifest section it fills,
when it runs, and what its failure does (``Step.failure``): a refused gate of an
``EXPORT`` step refuses the whole export; a refused gate of a ``FILES`` step (the INT8
file, its engine) refuses that step's files alone, and the export ends 'incomplete' with
the others standing.  ``register_step`` adds one (a test adds its own).

The order is chosen so that nothing looks valid before it is: every file is
written under a staging name, the gates run on the staged files, and only an
export whose gates all passed gets real file names (see ``artifacts``).  A refusal
still writes ``manifest.json`` (status ``failed``, with the numbers that failed)
so the user can see why.
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import onnx
import torch

from compressor.artifacts import MODEL_FILE, SUMMARY_FILE, ExportManifest
from compressor.errors import CompressorError
from compressor.engine.flops import count_macs, count_params
from compressor.export.artifacts import FAILED_SUFFIX, Artifacts, prepare_out_dir
from compressor.export.config import ExportConfig
from compressor.export.fp16 import convert_to_fp16
from compressor.export.manifest import files_section, tool_versions, write_manifest
from compressor.export.onnx_export import OnnxExport, export_onnx, io_signature
from compressor.export.outputs import flatten_outputs, run_model
from compressor.export.parity import ParityReport, check_onnx, check_onnx_top1
from compressor.export.simplify import Simplified, simplify_onnx
from compressor.export.sources import ExportSource, resolve_source

log = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
FP16_FILE = "model_fp16.onnx"
PLAN_FILE = "model.plan"
FP16_PLAN_FILE = "model_fp16.plan"
INT8_FILE = "model_int8.onnx"
INT8_PLAN_FILE = "model_int8.plan"
# Random-init or barely trained models have near-tied logits that half precision reorders.
FP16_REMEDY = "FP16 changes this model's outputs too much: export without --fp16"
INT8_REMEDY = ("calibrate on more or other images (--calib-samples, --calib-data, --calib-method), keep layers in "
               "float (--int8-exclude), or export without --int8")


@dataclass(frozen=True)
class ExportResult:
    out: Path
    manifest: dict

    @property
    def status(self) -> str:
        return self.manifest["status"]

    def path(self, name: str) -> Path:
        return self.out / name


class ExportStopped(CompressorError):
    """The export ended short of what was asked, with a verdict: ``result`` is what it wrote
    (a manifest saying why, and the files that stand), which the CLI shows before the error."""

    def __init__(self, message: str, result: ExportResult) -> None:
        super().__init__(message)
        self.result = result


class ExportRefused(ExportStopped):
    """A gate refused: files renamed to ``*.failed`` and the manifest says ``failed`` (or, for
    the INT8 file alone, ``incomplete``: the files whose gates passed stand)."""


class Fp16Unsupported(ExportStopped):
    """--fp16 cannot be done for this model; the fp32 ONNX part is written (and verified)."""


class TensorRTUnavailable(ExportStopped):
    """The ONNX part is done and verified; this machine cannot build the engine."""


def export(source: str, config: ExportConfig, trust_code: bool = False) -> ExportResult:
    """Export SOURCE (run directory, pruned model file or model name) as ``config`` says;
    ``trust_code``: a file's ``module.path:factory`` model may be imported (``compressor.trust``)."""
    return export_source(resolve_source(source, trust_code=trust_code), config)


def _claim_out_dir(config: ExportConfig) -> Path:
    """Writable, holding no file of someone else's that this export would replace (unless
    ``overwrite``), and cleared of what a killed export left: before any exporting."""
    from compressor.outdir import OutputDirError, lexists, remove_stale_temps
    from compressor.export.manifest import foreign_files

    out = config.out
    lexists(out, "--out")  # a name too long to look up is one line here, not a traceback below
    theirs = [] if config.overwrite else foreign_files(out, artifact_names())  # read-only: first
    if theirs:
        raise OutputDirError(
            f"{out} already holds {', '.join(theirs)}, not written by an export there; refused to replace "
            "(choose another --out, or pass --overwrite)"
        )
    prepare_out_dir(out)
    remove_stale_temps(out)
    return out


def export_source(source: ExportSource, config: ExportConfig) -> ExportResult:
    from compressor.memory import check_fits

    if config.out is None:
        config = config.with_out(source.default_out)
    if config.int8 and source.postprocessing is not None:
        raise CompressorError(
            "--int8 is judged by top-1 class agreement on a classification dataset's images; it does not take a "
            f"detector ({source.name}) yet: export it in fp32 (or --fp16)"
        )
    batches = config.parity_batch_sizes if config.verify else (1,)  # the gate runs the largest one
    check_fits(source.model, tuple(config.input_size or source.input_size), max(batches), "--max-batch/--input-size")
    artifacts = Artifacts(_claim_out_dir(config), artifact_names())
    try:
        return _Job(source, config, artifacts).run()
    except ExportStopped:
        raise
    except BaseException:
        artifacts.cleanup()  # an error, not a verdict: leave no staged or partial files
        raise


# What a step's refused gate does (``Step.failure``).
EXPORT = "refuses the export: every file *.failed, status 'failed'"
FILES = "refuses this step's files alone (*.failed); the others stand, status 'incomplete'"


class StepFailed(Exception):
    """A step's gate refused (not a CompressorError: the table applies the step's ``failure``)."""

    def __init__(self, reason: str, remedy: str = "loosen --atol/--rtol", gate: str = "parity gate") -> None:
        super().__init__(reason)
        self.reason, self.remedy, self.gate = reason, remedy, gate


@dataclass(frozen=True)
class Step:
    """One row of the export table.  ``run(job)`` stages its files (``job.artifacts.stage``),
    fills ``job.sections[section]`` and raises ``StepFailed`` when its gate refuses;
    ``wanted(job)``: whether this export runs it.  A step that cannot be done at all ends the
    export itself (``Fp16Unsupported``, ``TensorRTUnavailable``: status 'incomplete')."""

    name: str
    run: Callable[[_Job], None]
    writes: tuple[str, ...] = ()
    section: str | None = None
    failure: str = EXPORT
    wanted: Callable[[_Job], bool] = lambda job: True


def register_step(step: Step, after: str | None = None) -> None:
    """Add ``step`` to the table, after the step named ``after`` (default: at the end)."""
    names = [known.name for known in STEPS]
    if step.name in names:
        raise ValueError(f"an export step named {step.name!r} is registered already")
    STEPS.insert(names.index(after) + 1 if after is not None else len(STEPS), step)


def artifact_names() -> tuple[str, ...]:
    """Every file an export may write: the table's, in order."""
    return tuple(name for step in STEPS for name in step.writes)


def _check_outputs(model, example: torch.Tensor) -> None:
    """Every output must be a tensor (a tuple/dict of them is fine: the gate compares each);
    a None or a number in the output is refused before anything is exported.  So is an output
    that is not finite on ordinary inputs: NaN equals NaN in no comparison, so an exported NaN
    model "matches" PyTorch perfectly, and the gate would pass a broken model."""
    generator = torch.Generator().manual_seed(0)
    for x in (example, torch.randn((2, *example.shape[1:]), generator=generator)):
        outputs = flatten_outputs(run_model(model, x))
        broken = [i for i, t in enumerate(outputs) if t.is_floating_point() and not torch.isfinite(t).all()]
        if broken:
            raise CompressorError(
                f"the model's own output {broken[0]} is not finite (NaN or inf) on {'zeros' if x is example else 'randn'}"
                " inputs: the model is broken (NaN weights? a division by zero?); nothing was exported"
            )


class _Job:
    """The state of one export while it runs; each step fills one manifest section."""

    def __init__(self, source: ExportSource, config: ExportConfig, artifacts: Artifacts) -> None:
        self.source, self.config, self.artifacts = source, config, artifacts
        self.opset = config.export_opset
        self.model = source.model.eval().float().cpu()
        self.input_size = tuple(config.input_size or source.input_size)
        self.exported: OnnxExport | None = None
        self.timings: dict[str, float] = {}
        self.sections: dict = {"parity": {"checked": False, "reason": "--no-verify"}, "fp16": None, "int8": None,
                               "tensorrt": None}
        self.images: torch.Tensor | None = None  # real images for the gate, when the source has a dataset
        self.calibration = None  # ``calibration.CalibrationSets`` with --int8
        self.int8_reference = None  # PyTorch fp32 logits on the calibration split's held-out images
        self.refused: dict[str, StepFailed] = {}  # file -> why its FILES step's gate refused it
        self.onnx_path: Path | None = None  # the fp32 ONNX file, staged by the first step

    def run(self) -> ExportResult:
        with self._timed("count_s"):
            example = torch.zeros(1, *self.input_size)
            _check_outputs(self.model, example)
            self.sections.update(macs=count_macs(self.model, example), params=count_params(self.model))
        if self.config.int8:
            # bad calibration data is refused before anything is written, and before the gate's
            # images: those read the same run data, and would warn about it on a line of their own
            self._load_calibration()
        if self.config.verify:
            self._load_gate_images()
        log.info(self._start_line())
        for step in list(STEPS):
            if step.wanted(self):
                self._run_step(step)
        if self.refused:
            self._end_files_refused()
        return self._finish("ok" if self.config.verify else "unverified")

    def _run_step(self, step: Step) -> None:
        try:
            step.run(self)
        except StepFailed as failure:
            if step.failure == FILES:
                self._refuse_files(step, failure)
            else:
                self._refuse(failure.reason, failure.remedy, failure.gate)

    def _start_line(self) -> str:
        """Once the source, the output directory and the data are checked: what is exported where,
        'compress export: resnet20 (pruned run runs/r), 3x32x32, onnx opset 20 + fp16, parity gate on -> runs/r/export'."""
        s, c = self.source, self.config
        origin = f"{'pruned' if s.pruned else 'dense'} {s.kind}" + (f" {s.path}" if s.path is not None else "")
        outputs = " + ".join([f"onnx opset {self.opset}", *(["fp16"] if c.fp16 else []), *(["int8"] if c.int8 else []),
                              *(["tensorrt"] if c.format == "tensorrt" else [])])
        gate = "parity gate on" if c.verify else "unverified (--no-verify)"
        size = "x".join(str(v) for v in self.input_size)
        return f"compress export: {s.name} ({origin}), {size}, {outputs}, {gate} -> {c.out}"

    # -- steps ---------------------------------------------------------------------------

    def _run_dir(self) -> Path | None:
        """The run directory the source came from, whose dataset the gates read."""
        path = self.source.path
        if self.source.kind == "run":
            return path
        if self.source.kind == "file" and path.name == MODEL_FILE and (path.parent / SUMMARY_FILE).is_file():
            return path.parent  # RUN/model.pt given as a file: still the run's data
        return None

    def _load_gate_images(self) -> None:
        from compressor.export.gate_images import run_images

        with self._timed("gate_images_s"):
            self.images, self.sections["gate_images"] = run_images(
                self._run_dir(), self.config.parity_images, self.input_size)

    def _load_calibration(self) -> None:
        from compressor.export import calibration
        from compressor.export.int8 import reference_logits

        c = self.config
        with self._timed("int8_data_s"):
            data = calibration.data_config_for(self._run_dir(), c.calib_data, c.calib_data_dir, self.input_size)
            self.calibration = calibration.calibration_sets(data, c.calib_samples, c.int8_check_images,
                                                            self.input_size)
            self.int8_reference = reference_logits(self.model, self.calibration.check)

    def _export(self) -> None:
        path = self.onnx_path = self.artifacts.stage(ONNX_FILE)
        with self._timed("export_s"):
            self.exported = export_onnx(self.model, self.input_size, path, self.opset, self.config.allow_trace)
        from compressor.export.bundle import bundle_section

        inputs, outputs = io_signature(onnx.load(str(path), load_external_data=False))
        self.sections.update(inputs=inputs, outputs=outputs, bundle=bundle_section(
            self._run_dir(), inputs, outputs, self.source.postprocessing))

    def _simplify_and_verify(self) -> None:
        """Gate the simplified model; if it fails, fall back to (and gate) the unsimplified one."""
        onnx_path = self.onnx_path
        simplified = self._simplify(onnx_path)
        if not self.config.verify:
            if simplified.applied:
                os.replace(simplified.path, onnx_path)
            return
        if simplified.applied and self._adopt_simplified(simplified.path, onnx_path):
            return
        report = self._gate_onnx(onnx_path)
        if not report.passed:
            raise StepFailed(report.failure())

    def _adopt_simplified(self, simplified: Path, onnx_path: Path) -> bool:
        """Keep the simplified model only if it passes the gate on its own."""
        try:
            report = self._gate_onnx(simplified)
        except CompressorError as error:  # e.g. ONNX Runtime cannot load what onnxsim wrote
            self.sections["simplify"].update(applied=False, reason=f"{error}; kept the unsimplified model")
            return False
        if report.passed:
            os.replace(simplified, onnx_path)
            return True
        self.sections["simplify"].update(
            applied=False,
            reason="the simplified model failed the parity gate; kept the unsimplified one",
            rejected_parity=report.to_dict(),
        )
        return False

    def _simplify(self, onnx_path: Path) -> Simplified:
        if not self.config.simplify:
            nodes = len(onnx.load(str(onnx_path)).graph.node)
            simplified = Simplified(False, None, "disabled (--no-simplify)", nodes, None)
        else:
            with self._timed("simplify_s"):
                simplified = simplify_onnx(onnx_path, self.artifacts.scratch("model.simplified.onnx"))
        self.sections["simplify"] = simplified.to_dict()
        return simplified

    def _gate_onnx(self, path: Path) -> ParityReport:
        c = self.config
        with self._timed("verify_s"):
            report = check_onnx(self.model, path, self.input_size, c.parity_batch_sizes, c.atol, c.rtol, c.seed,
                                ONNX_FILE, c.parity_scales, self.images, c.parity_sweep_sizes)
        self.sections["parity"] = {**report.to_dict(), "dataset_images": self.sections.get("gate_images")}
        return report

    def _fp16(self) -> None:
        c, onnx_path = self.config, self.onnx_path
        path = self.artifacts.stage(FP16_FILE)
        try:
            with self._timed("fp16_s"):
                convert_to_fp16(onnx_path, path)
            unchecked = {"checked": False, "reason": "--no-verify"}
            self.sections["fp16"] = {"file": FP16_FILE, "io_dtype": "float32", "check": unchecked}
            if not c.verify:
                return
            with self._timed("fp16_verify_s"):
                top1 = check_onnx_top1(self.model, path, self.input_size, c.fp16_check_batch, c.fp16_min_top1,
                                       c.seed, FP16_FILE, self._class_scores())
        except CompressorError as error:
            # the model or the converter, not the fp32 file, is at fault: keep what was verified
            self._fp16_unsupported(str(error))
        self.sections["fp16"]["check"] = top1.to_dict()
        if not top1.passed:
            raise StepFailed(top1.failure(), FP16_REMEDY)

    def _class_scores(self) -> bool:
        """Whether outputs with a class axis are class scores that top-1 can judge: not a
        detector's raw per-anchor outputs (see parity.RAW_DETECTOR_OUTPUTS)."""
        return self.source.postprocessing is None

    def _fp16_unsupported(self, reason: str) -> None:
        """No FP16 file; model.onnx and the manifest (status 'incomplete') are written as if
        --fp16 had not been given, since their checks passed without it."""
        self.artifacts.discard(FP16_FILE)
        self.sections["fp16"] = {"file": None, "status": "unsupported", "reason": reason,
                                 "check": {"checked": False, "reason": reason}}
        result = self._finish("incomplete")
        verified = " (parity verified)" if self.config.verify else ""
        engine = f" and no {PLAN_FILE}" if self.config.format == "tensorrt" else ""
        raise Fp16Unsupported(
            f"{reason}: wrote {ONNX_FILE}{verified} and manifest.json (status 'incomplete') in {result.out}, "
            f"no {FP16_FILE}{engine}; export without --fp16",
            result,
        )

    def _int8(self) -> None:
        from compressor.export.int8 import Int8Settings, quantize_gated

        c, onnx_path = self.config, self.onnx_path
        path = self.artifacts.stage(INT8_FILE)
        settings = Int8Settings(c.calib_method, c.int8_min_agreement if c.verify else 0.0, c.int8_exclude,
                                c.activation_form == "symmetric", c.int8_fallback and c.verify)
        with self._timed("int8_s"):
            outcome = quantize_gated(onnx_path, path, self.artifacts.scratch, self.calibration, self.int8_reference,
                                     settings)
        calibration = {**self.calibration.note, "method": c.calib_method}
        check = outcome.to_dict() if c.verify else {"checked": False, "reason": "--no-verify",
                                                     "agreement": outcome.agreement}
        self.sections["int8"] = {
            "file": INT8_FILE, "format": "QDQ", "weights": "int8, symmetric, per output channel",
            "activations": ("int8, symmetric, per tensor" if c.activation_form == "symmetric"
                            else "uint8, asymmetric (zero point), per tensor"),
            "form": c.activation_form,  # symmetric | asymmetric: what a reader (bench) matches on
            "activations_chosen": (f"auto: {c.activation_form} for --format {c.format}"
                                   if c.int8_activations == "auto" else f"--int8-activations {c.activation_form}"),
            "consumers": (["onnxruntime", "tensorrt"] if c.activation_form == "symmetric" else ["onnxruntime"]),
            "calibration": calibration, "check": check,
        }
        if c.verify and not outcome.passed:
            raise StepFailed(outcome.failure(INT8_FILE, calibration), INT8_REMEDY, "INT8 gate")

    def _tensorrt(self) -> None:
        """The fp32 engine (and the FP16 one with --fp16): gated like model.onnx."""
        from compressor.export import tensorrt as trt_export

        onnx_path = self.onnx_path
        available, found = trt_export.tensorrt_available()
        if not available:
            self.sections["tensorrt"] = {"status": "unavailable", "reason": found}
            result = self._finish("incomplete")
            verified = " (parity verified)" if self.config.verify else ""
            raise TensorRTUnavailable(
                f"--format tensorrt: {found}; wrote {ONNX_FILE}{verified} and manifest.json (status 'incomplete') "
                f"in {result.out}; to build {PLAN_FILE}, {trt_export.INSTALL_HINT}",
                result,
            )
        self.sections["tensorrt"] = {"status": "built", "found": found, "engines": {}}
        self._engine(trt_export, onnx_path, PLAN_FILE, fp16=False)
        if self.config.fp16:
            source = self.artifacts.staged[FP16_FILE] if trt_export.fp16_from_onnx() else onnx_path
            self._engine(trt_export, source, FP16_PLAN_FILE, fp16=True)

    def _engine(self, trt_export, onnx_path: Path, name: str, fp16: bool) -> None:
        c = self.config
        spec = trt_export.EngineSpec(
            onnx_path, self.artifacts.stage(name), c.max_batch, fp16, c.trt_workspace_bytes,
            c.trt_optimization_level, c.trt_timing_cache or trt_export.default_timing_cache(),
        )
        onnx_name = FP16_FILE if onnx_path == self.artifacts.staged.get(FP16_FILE) else ONNX_FILE
        with self._timed(f"{name}_build_s"):
            build = trt_export.build_engine(spec)
        section = self.sections["tensorrt"]
        section["engines"][name] = {**build.to_dict(), "onnx_file": onnx_name}
        if not c.verify:
            return
        with self._timed(f"{name}_verify_s"):
            if fp16:
                report = trt_export.check_engine_top1(self.model, spec.plan_path, self.input_size, c.fp16_check_batch,
                                                     c.max_batch, c.fp16_min_top1, c.seed, name, self._output_names(),
                                                     self._class_scores())
            else:
                report = trt_export.check_engine(self.model, spec.plan_path, self.input_size, c.parity_batch_sizes,
                                                 c.atol, c.rtol, c.seed, name, c.parity_scales, self.images,
                                                 self._output_names(), c.parity_sweep_sizes)
        section["fp16_parity" if fp16 else "parity"] = report.to_dict()
        if not report.passed:
            raise StepFailed(report.failure(), FP16_REMEDY if fp16 else "loosen --atol/--rtol")

    def _int8_engine(self) -> None:
        """TensorRT's explicit quantization of model_int8.onnx, judged like the ONNX file: top-1
        agreement with PyTorch fp32 on the held-out calibration-split images."""
        from compressor.export import tensorrt as trt_export

        c = self.config
        spec = trt_export.EngineSpec(
            self.artifacts.staged[INT8_FILE], self.artifacts.stage(INT8_PLAN_FILE), c.max_batch, False,
            c.trt_workspace_bytes, c.trt_optimization_level, c.trt_timing_cache or trt_export.default_timing_cache(),
            int8=True,
        )
        with self._timed(f"{INT8_PLAN_FILE}_build_s"):
            build = trt_export.build_engine(spec)
        section = self.sections["tensorrt"]
        section["engines"][INT8_PLAN_FILE] = {**build.to_dict(), "onnx_file": INT8_FILE}
        if not c.verify:
            return
        with self._timed(f"{INT8_PLAN_FILE}_verify_s"):
            agreement = trt_export.engine_agreement(spec.plan_path, self.calibration.check, self.int8_reference,
                                                    c.max_batch, self._output_names())
        passed = agreement >= c.int8_min_agreement
        section["int8_check"] = {"agreement": agreement, "min_agreement": c.int8_min_agreement,
                                 "check_images": len(self.calibration.check), "passed": passed}
        if not passed:
            raise StepFailed(f"{INT8_PLAN_FILE} agrees with PyTorch fp32 on top-1 for only {agreement:.1%} of "
                             f"{len(self.calibration.check)} held-out images (needs {c.int8_min_agreement:.0%})",
                             INT8_REMEDY, "INT8 gate")

    def _output_names(self) -> list[str]:
        return [output["name"] for output in self.sections.get("outputs") or []]

    # -- endings -------------------------------------------------------------------------

    def _refuse(self, reason: str, remedy: str = "loosen --atol/--rtol", gate: str = "parity gate") -> None:
        result = self._write(self.artifacts.fail(), "failed", reason)
        raise ExportRefused(
            f"{gate} refused the export: {reason}; the files in {result.out} are renamed *.failed and "
            f"manifest.json says status 'failed' ({remedy}, or skip the gate with --no-verify)",
            result,
        )

    def _refuse_files(self, step: Step, failure: StepFailed) -> None:
        """One rule for every ``FILES`` step (the INT8 file on ONNX Runtime, its TensorRT engine):
        a refused gate refuses that step's files alone.  The export goes on (no engine is built
        of a refused INT8 file); at its end the refused files become ``NAME.failed`` beside the
        fp32 and FP16 files, whose gates passed, under a manifest with status 'incomplete', and
        the command fails: a failed INT8 calibration must not take the verified model away."""
        for name in step.writes:
            if name in self.artifacts.staged:
                self.refused[name] = failure
        if step.section is not None and isinstance(self.sections.get(step.section), dict):
            self.sections[step.section]["refused"] = {name: self.refused[name].reason for name in step.writes
                                                      if name in self.refused}

    def _end_files_refused(self) -> None:
        result = self._finish("incomplete")
        names, failures = list(self.refused), list(dict.fromkeys(self.refused.values()))
        kept = [name for name in result.manifest["files"] if not name.endswith(FAILED_SUFFIX)]
        renamed = ", ".join(name + FAILED_SUFFIX for name in names)
        raise ExportRefused(
            f"{failures[0].gate} refused {', '.join(names)}: {'; '.join(f.reason for f in failures)}; "
            f"{'it is' if len(names) == 1 else 'they are'} renamed {renamed}, and {', '.join(kept)} (verified) and "
            f"manifest.json (status 'incomplete') are in {result.out} ({failures[0].remedy})",
            result,
        )

    def _finish(self, status: str) -> ExportResult:
        """Every staged file under its real name, an INT8 one its gate refused as ``.failed``."""
        error = "; ".join(dict.fromkeys(f.reason for f in self.refused.values())) or None
        return self._write(self.artifacts.promote(self.refused), status, error)

    def _write(self, files: list[Path], status: str, error: str | None) -> ExportResult:
        manifest = self._manifest(files, status, error)
        write_manifest(self.artifacts.out, manifest)
        return ExportResult(self.artifacts.out, manifest)

    def _manifest(self, files: list[Path], status: str, error: str | None) -> ExportManifest:
        exported = self.exported
        return {
            "status": status,
            "error": error,
            "format": self.config.format,
            "model": self.source.name,
            "source": self._source_record(),
            "input_size": list(self.input_size),
            "opset": exported.opset if exported else self.opset,
            "exporter": exported.exporter if exported else None,
            "exporter_fallback_reason": exported.fallback_reason if exported else None,
            "allow_trace": self.config.allow_trace,
            "trace_warnings": list(exported.trace_warnings) if exported else [],
            "trace_check": exported.trace_check if exported else None,
            "inputs": self.sections.get("inputs"),
            "outputs": self.sections.get("outputs"),
            "bundle": self.sections.get("bundle"),
            "macs": self.sections.get("macs"),
            "params": self.sections.get("params"),
            "max_batch": self.config.max_batch,
            "simplify": self.sections.get("simplify"),
            "parity": self.sections["parity"],
            "fp16": self.sections["fp16"],
            "int8": self.sections["int8"],
            "tensorrt": self.sections["tensorrt"],
            "files": files_section(files),
            "versions": tool_versions(),
            "options": self.config.to_dict(),
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            # a registered step's own section (the built-in steps' are named above)
            **{step.section: self.sections.get(step.section) for step in STEPS
               if step.section is not None and step.section not in _BUILT_IN_SECTIONS},
        }

    def _source_record(self) -> dict:
        """The source, its path absolute: ``compress eval`` of the export finds the run (its
        PyTorch row and data) from any working directory, not whatever a relative path names there."""
        record = self.source.describe()
        if record.get("kind") in ("run", "file") and record.get("path") is not None:
            record["path"] = os.path.abspath(record["path"])
        return record

    @contextlib.contextmanager
    def _timed(self, key: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            self.timings[key] = self.timings.get(key, 0.0) + time.perf_counter() - started


def _wants_tensorrt(job: _Job) -> bool:
    return job.config.format == "tensorrt"


# The export, in order.  Sections the manifest names itself (ExportManifest); a registered
# step's section is added under its own key.
STEPS: list[Step] = [
    Step("onnx", _Job._export, (ONNX_FILE,), "inputs"),
    Step("simplify", _Job._simplify_and_verify, (), "parity"),
    Step("fp16", _Job._fp16, (FP16_FILE,), "fp16", wanted=lambda job: job.config.fp16),
    Step("int8", _Job._int8, (INT8_FILE,), "int8", FILES, wanted=lambda job: job.config.int8),
    Step("tensorrt", _Job._tensorrt, (PLAN_FILE, FP16_PLAN_FILE), "tensorrt", wanted=_wants_tensorrt),
    # no engine of a refused INT8 file
    Step("tensorrt-int8", _Job._int8_engine, (INT8_PLAN_FILE,), "tensorrt", FILES,
         wanted=lambda job: _wants_tensorrt(job) and job.config.int8 and INT8_FILE not in job.refused),
]
_BUILT_IN_SECTIONS = ("inputs", "outputs", "bundle", "macs", "params", "simplify", "parity", "fp16", "int8", "tensorrt")
ARTIFACT_NAMES = artifact_names()  # the built-in table's files (with registered steps: artifact_names())
