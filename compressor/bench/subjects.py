"""What ``compress bench SOURCE...`` measures: subjects grouped for comparison.

* a ``compress prune`` run directory, or a pruned model file: two subjects, the
  dense original (the same architecture rebuilt unpruned; latency does not depend
  on the weights' values) and the pruned model.  ONNX files and TensorRT engines
  are exported into a cache next to the source when a backend needs them.
* ONNX files or engine files: one subject each, all in one group whose first file
  is the baseline the others are compared with.  Their MACs are counted from the
  ONNX graph (``macs_source`` "onnx-graph"); a ``manifest.json`` next to the file
  only makes a claim that is checked against that count.
"""
from __future__ import annotations

import atexit
import functools
import json
import logging
import os
import shutil
import tempfile
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from compressor.artifacts import MODEL_FILE, MODEL_FILE_SUFFIXES
from compressor.bench.backends.base import BackendError, Workload
from compressor.bench.provenance import cached, checked_macs, model_identity, onnx_macs
from compressor.errors import CompressorError, one_line
from compressor.hashing import file_sha256
from compressor.engine.flops import count_macs, count_params
from compressor.export.manifest import MANIFEST_NAME
from compressor.export.sources import default_export_dir

ONNX_SUFFIXES = (".onnx",)
ENGINE_SUFFIXES = (".plan", ".engine", ".trt")

log = logging.getLogger(__name__)


@dataclass
class Subject:
    """One model to time, with whatever artifacts it has or can make."""

    name: str
    variant: str  # "dense", "pruned" or "file"
    input_size: tuple[int, int, int]
    macs: int | None = None
    params: int | None = None
    model: torch.nn.Module | None = None
    cache: Path | None = None  # where exported artifacts go
    fixed_batch: int | None = None  # an ONNX file whose batch dimension is not symbolic
    files: dict = field(default_factory=dict)  # "onnx-fp32", "onnx-fp16", "engine-fp32-b32", ...
    identity: str | None = None  # the model's architecture+weights hash, once computed (provenance)
    macs_source: str = "model"  # counted by compressor.engine.flops on the module, or "onnx-graph"
    # where each INT8 file came from (keyed by its path): the export's verified file, or one
    # quantized here for timing only; bench.json says which one a cell timed
    int8_sources: dict = field(default_factory=dict)

    @property
    def stem(self) -> str:
        """File-name stem of this subject's exported artifacts."""
        return re.sub(r"[^A-Za-z0-9._-]+", "-", self.name).strip("-")

    def module(self) -> torch.nn.Module:
        if self.model is None:
            raise BackendError(f"{self.name} is an exported file; PyTorch backends need a model file or run directory")
        return self.model

    def onnx(self, precision: str) -> Path:
        key = f"onnx-{precision}"
        if key not in self.files:
            self.files[key] = self._export_onnx(precision)
        return self.files[key]

    def engine(self, workload: Workload) -> Path:
        if "engine" in self.files:  # a given engine file serves every batch its profile allows
            return self.files["engine"]
        key = f"engine-{workload.precision}-b{workload.batch_size}"
        if key not in self.files:
            self.files[key] = self._build_engine(workload)
        return self.files[key]

    # -- making artifacts ----------------------------------------------------------------
    def _needs_model(self, what: str) -> None:
        if self.model is None or self.cache is None:
            raise BackendError(f"{self.name} has no {what} and no PyTorch model to make one from")

    def _source(self) -> str:
        """What a cached export of this subject must have been made from (see provenance)."""
        if self.identity is None:
            self.identity = model_identity(self.module(), self.input_size)
        return self.identity

    def _export_onnx(self, precision: str) -> Path:
        if precision == "fp16":
            return self._fp16_onnx()
        if precision in ("int8", "int8-asymmetric"):
            return self._int8_onnx(symmetric=precision == "int8")
        self._needs_model("ONNX file")
        return cached(self.cache / f"{self.stem}.onnx", self._source(),
                      lambda target: _export_simplified(self.model, self.input_size, target))

    def _fp16_onnx(self) -> Path:
        from compressor.export.fp16 import convert_to_fp16

        target = self.cache_folder() / f"{self.stem}_fp16.onnx"
        if "onnx-fp32" not in self.files and self.model is None:
            raise BackendError(f"{self.name}: an FP16 ONNX is made from the model; give model_fp16.onnx instead")
        source = self.onnx("fp32")

        return cached(target, "fp16 of " + file_sha256(source), lambda temp: convert_to_fp16(source, temp))

    def _int8_onnx(self, symmetric: bool) -> Path:
        from compressor.export.int8 import quantize_for_timing

        form = "int8" if symmetric else "int8-asymmetric"
        target = self.cache_folder() / f"{self.stem}_{form}.onnx"
        if "onnx-fp32" not in self.files and self.model is None:
            raise BackendError(f"{self.name}: an INT8 ONNX is made from the model; give model_int8.onnx instead")
        source = self.onnx("fp32")
        made = cached(target, f"{form} for timing of " + file_sha256(source),
                      lambda temp: quantize_for_timing(source, temp, self.input_size, symmetric))
        self.int8_sources[str(made)] = {"source": "quantized by bench for timing only: calibrated on random inputs, "
                                                  "no accuracy gate", "verified": False}
        return made

    def _build_engine(self, workload: Workload) -> Path:
        from compressor.export.tensorrt import (EngineSpec, build_engine, current_build_key, default_timing_cache,
                                                fp16_from_onnx)

        fp16, int8 = workload.precision == "fp16", workload.precision == "int8"
        onnx_path = self.onnx("int8" if int8 else "fp16" if fp16 and fp16_from_onnx() else "fp32")
        target = self.cache_folder() / f"{self.stem}_{workload.precision}_b{workload.batch_size}.plan"
        make = lambda path: build_engine(  # noqa: E731
            EngineSpec(onnx_path, path, workload.batch_size, fp16, ENGINE_WORKSPACE, ENGINE_OPT_LEVEL,
                       default_timing_cache(), int8=int8))
        key = engine_key(file_sha256(onnx_path), workload.precision, workload.batch_size, current_build_key())
        return cached(target, key, make)

    def cache_folder(self) -> Path:
        """Where this subject's derived files go: its model's bench cache, or for a file given
        directly this process's scratch folder (never the current directory, never beside the
        user's file)."""
        return self.cache if self.cache is not None else _scratch()


ENGINE_WORKSPACE = 4 << 30
ENGINE_OPT_LEVEL = 3


def engine_key(onnx_sha256: str, precision: str, batch_size: int, build_key: str) -> str:
    """What a cached engine must have been built from and for: the ONNX, the precision and
    batch of its profile, and the TensorRT version and GPU (``tensorrt.build_key``), since an
    engine only deserialises on the version and GPU that built it."""
    return (f"engine of {onnx_sha256} | {precision} batch {batch_size} | workspace {ENGINE_WORKSPACE} "
            f"level {ENGINE_OPT_LEVEL} | {build_key}")


@functools.lru_cache(maxsize=1)
def _scratch() -> Path:
    """Where artifacts made from a given file go: this process's own temp directory (a
    file in the working directory could be the user's, or planted)."""
    folder = Path(tempfile.mkdtemp(prefix="compress-bench-"))
    atexit.register(shutil.rmtree, folder, True)
    return folder


def _export_simplified(model: torch.nn.Module, input_size, target: Path) -> None:
    """Export like ``compress export`` does (dynamo, then onnxsim when it keeps the
    batch dimension symbolic).  ``target`` is the fresh temp file ``cached`` stages;
    the raw export goes to another one, never to a fixed name a link could sit at."""
    from compressor.export.onnx_export import export_onnx
    from compressor.export.opsets import DEFAULT_OPSET
    from compressor.export.simplify import simplify_onnx

    handle, raw = tempfile.mkstemp(dir=target.parent, prefix=f"{target.name}.raw.", suffix=".tmp")
    os.close(handle)
    try:
        export_onnx(model, input_size, Path(raw), DEFAULT_OPSET)
        if not simplify_onnx(Path(raw), target).applied:
            os.replace(raw, target)
    finally:
        Path(raw).unlink(missing_ok=True)


@dataclass
class Group:
    """Subjects timed together (interleaved); the first is the baseline."""

    label: str
    subjects: list[Subject]

    @property
    def baseline(self) -> Subject:
        return self.subjects[0]


def resolve(sources: list[str], trust_code: bool = False) -> list[Group]:
    """``trust_code``: a model file's ``module.path:factory`` model may be imported."""
    groups, files = [], []
    for text in sources:
        path = Path(text)
        if path.is_dir():
            if not (path / MODEL_FILE).is_file():
                raise CompressorError(f"{path} is not a `compress prune` run directory (it has no {MODEL_FILE})")
            groups.append(_model_pair(path / MODEL_FILE, path / "bench" / "cache", trust_code, default_export_dir(path)))
        elif not path.exists():
            raise CompressorError(f"no such run directory, model file, ONNX or engine file: {path}")
        elif path.suffix in MODEL_FILE_SUFFIXES:
            groups.append(_model_pair(path, path.parent / f"{path.stem}-bench" / "cache", trust_code,
                                      default_export_dir(path)))
        elif path.suffix in ONNX_SUFFIXES + ENGINE_SUFFIXES:
            files.append(_file_subject(path))
        else:
            raise CompressorError(
                f"{path}: not a run directory, model file ({', '.join(MODEL_FILE_SUFFIXES)}), ONNX file or TensorRT engine "
                f"({', '.join(ENGINE_SUFFIXES)})"
            )
    if files:
        groups.append(Group("files", files))
    return groups


def _model_pair(path: Path, cache_root: Path, trust_code: bool, export_dir: Path) -> Group:
    from compressor.models.deployable import deployable
    from compressor.runfiles.modelfile import load_pruned, rebuild

    pruned, spec, _ = load_pruned(path, trust_code)
    dense = rebuild(spec, [], trust_code).eval()
    # a detector is timed as it is exported: its network, without the post-processing
    dense, pruned = deployable(dense, spec.input_size), deployable(pruned, spec.input_size)
    group = model_pair(spec.name, dense.model, pruned.model, dense.input_size, cache_root / _digest(path), str(path))
    found = verified_int8(path, export_dir)
    if found is not None:  # time what was verified and ships, not a file quantized here
        form, int8_path, note = found
        group.subjects[1].files[form] = int8_path
        group.subjects[1].int8_sources[str(int8_path)] = note
    return group


def verified_int8(model_file: Path, export_dir: Path) -> tuple[str, Path, dict] | None:
    """The INT8 file ``compress export`` wrote for ``model_file`` into ``export_dir``, when its
    manifest says the gate passed, lists the file with its current sha256, and was made from
    these very bytes of the model file: (the subject's file key, its path, a note for bench.json).
    Anything else (no export, another model, an edited file) is None: bench quantizes its own."""
    manifest = _read_manifest(export_dir / MANIFEST_NAME)
    int8, source, files = (manifest.get(key) for key in ("int8", "source", "files"))
    if not all(isinstance(part, dict) for part in (int8, source, files)):
        return None
    name, check = int8.get("file"), int8.get("check")
    form = {"symmetric": "onnx-int8", "asymmetric": "onnx-int8-asymmetric"}.get(int8.get("form"))
    if not isinstance(name, str) or Path(name).name != name or not isinstance(check, dict) or form is None:
        return None
    path = export_dir / name
    if check.get("passed") is not True or path.is_symlink() or not path.is_file():
        return None
    digest = file_sha256(path)
    if (files.get(name) or {}).get("sha256") != digest:
        log.warning("%s differs from what its export verified; bench quantizes its own INT8 file", path)
        return None
    if source.get("sha256") != file_sha256(model_file):
        why = "does not name its model file's sha256" if source.get("sha256") is None else "is of another model file"
        log.info("the export in %s %s (not %s); bench quantizes its own INT8 file", export_dir, why, model_file)
        return None
    return form, path, {"source": f"the export's verified {name}", "verified": True, "export": str(export_dir),
                        "agreement": check.get("agreement"), "calibration": int8.get("calibration")}


def _read_manifest(path: Path) -> dict:
    """An export's manifest as plain JSON data, or {} when there is none or it cannot be read."""
    if path.is_symlink() or not path.is_file():
        return {}
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        log.warning("%s is not a readable manifest; bench quantizes its own INT8 file", path)
        return {}
    return manifest if isinstance(manifest, dict) else {}


def model_pair(name: str, dense: torch.nn.Module, pruned: torch.nn.Module, input_size, cache: Path,
               label: str | None = None, pruned_label: str = "pruned") -> Group:
    """Dense and pruned modules as a group; MACs and params counted here."""
    example = torch.zeros(1, *input_size)
    subjects = [
        Subject(f"{name} {variant}", kind, tuple(input_size), count_macs(model, example), count_params(model),
                model.eval(), cache)
        for variant, kind, model in (("dense", "dense", dense), (pruned_label, "pruned", pruned))
    ]
    return Group(label or name, subjects)


def _digest(path: Path) -> str:
    """Cached exports are keyed by the model file's content, so a re-run of the
    prune into the same directory never benchmarks stale ONNX files."""
    return file_sha256(path)[:12]


def _file_subject(path: Path) -> Subject:
    manifest = _manifest_for(path)
    if path.suffix in ONNX_SUFFIXES:
        input_size, fixed_batch = onnx_input(path)
        precision = next((p for p in ("fp16", "int8") if path.stem.endswith(p)), "fp32")
        files = {f"onnx-{precision}": path}
        if precision == "int8":  # a given INT8 file is timed as it is, whichever form it has
            files["onnx-int8-asymmetric"] = path
        subject = Subject(path.name, "file", input_size, fixed_batch=fixed_batch, files=files)
    else:
        if manifest is None or "input_size" not in manifest:
            raise CompressorError(f"{path}: an engine file needs the manifest.json of its export next to it (for its input size)")
        subject = Subject(path.name, "file", tuple(manifest["input_size"]), files={"engine": path})
    subject.macs, subject.params = _file_macs(path, manifest)
    subject.macs_source = "onnx-graph"
    return subject


def _file_macs(path: Path, manifest: dict | None) -> tuple[int | None, int | None]:
    """(MACs, params) of a given file.  MACs are always the ONNX graph's count: a manifest's
    claim is checked against it (refused on a mismatch), a bare ONNX file is counted directly
    (an engine has no graph of its own: only its manifest names one).  Params come only from
    a manifest whose MACs held."""
    if manifest is not None and manifest.get("macs") is not None:
        macs = checked_macs(_graph_of(path, manifest), manifest["macs"])
        return macs, (manifest.get("params") if macs is not None else None)
    if path.suffix not in ONNX_SUFFIXES:
        return None, None
    macs = onnx_macs(path)
    if macs is None:
        log.warning("%s: its MACs cannot be counted from the graph (a shape is not inferred); no MACs ratio", path)
    return macs, None


def _graph_of(path: Path, manifest: dict) -> Path:
    """The ONNX whose graph the MACs are counted on: the file itself, or for an engine the
    ONNX its manifest lists next to it."""
    if path.suffix in ONNX_SUFFIXES:
        return path
    onnx_names = [name for name in (manifest.get("files") or {}) if str(name).endswith(ONNX_SUFFIXES)]
    return path.parent / onnx_names[0] if onnx_names else path


def _manifest_for(path: Path) -> dict | None:
    """The export manifest beside ``path`` when it lists the file.  One that cannot be read as a
    JSON object is refused rather than passed over: its MACs and profiles are what bench would
    report, and eval refuses the same file."""
    candidate = path.parent / "manifest.json"
    if not candidate.is_file():
        return None
    try:
        manifest = json.loads(candidate.read_text(encoding="utf-8"))
    # RecursionError: JSON nested thousands deep ("[[[[...") exhausts the parser's stack
    except (OSError, ValueError, RecursionError) as error:
        raise CompressorError(f"{candidate} (beside {path.name}) is not a readable JSON manifest "
                              f"({one_line(error, 160)}); move it away to bench the file alone") from None
    if not isinstance(manifest, dict):
        raise CompressorError(f"{candidate} (beside {path.name}) is not a manifest: a JSON "
                              f"{type(manifest).__name__}, not an object; move it away to bench the file alone")
    files = manifest.get("files")
    return manifest if isinstance(files, dict) and path.name in files else None


def onnx_input(path: Path) -> tuple[tuple[int, int, int], int | None]:
    """(C, H, W) of the first input, and its batch size when that is fixed."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # noqa: BLE001 - any parse failure: not a usable ONNX file
        raise CompressorError(f"{path} is not a readable ONNX model: {one_line(str(error), 200)}") from error
    initialisers = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initialisers]
    dims = inputs[0].type.tensor_type.shape.dim if inputs else []
    if len(dims) != 4 or not all(d.HasField("dim_value") for d in dims[1:]):
        raise CompressorError(f"{path}: expected one image input of shape (batch, C, H, W) with fixed C, H, W")
    batch = dims[0].dim_value if dims[0].HasField("dim_value") else None
    return tuple(int(d.dim_value) for d in dims[1:]), batch


def check_batch_sizes(groups: list[Group], batch_sizes) -> None:
    """Refuse batch sizes a file cannot take before any timing starts."""
    for group in groups:
        for subject in group.subjects:
            fixed = subject.fixed_batch
            wrong = [b for b in batch_sizes if fixed is not None and b != fixed]
            if wrong:
                raise CompressorError(
                    f"{subject.name} has a fixed batch size of {fixed}; --batch-size {wrong[0]} is not possible "
                    "(export it with a symbolic batch dimension: compress export)"
                )
            profile = _engine_profile(subject)
            bad = [b for b in batch_sizes if profile and not profile[0] <= b <= profile[1]]
            if bad:
                raise CompressorError(
                    f"{subject.name} was built for batch sizes {profile[0]}..{profile[1]}; --batch-size {bad[0]} is "
                    f"outside its profile (rebuild with compress export --format tensorrt --max-batch {bad[0]})"
                )


def _engine_profile(subject: Subject) -> tuple[int, int] | None:
    """The engine's batch range from its export manifest (readable without TensorRT)."""
    if "engine" not in subject.files:
        return None
    path = subject.files["engine"]
    manifest = _manifest_for(path) or {}
    engines = (manifest.get("tensorrt") or {}).get("engines") or {}
    profile = (engines.get(path.name) or {}).get("profile") or {}
    if "min" in profile and "max" in profile:
        return int(profile["min"][0]), int(profile["max"][0])
    max_batch = manifest.get("max_batch")
    return (1, int(max_batch)) if max_batch else None
