"""What to export: a ``compress prune`` run, a pruned model file, or a model name
(a zoo/torchvision name, ``timm:NAME`` or ``module.path:factory``).  A detector is
exported as its network without the post-processing (``compressor.models.deployable``).

SOURCE on the command line is resolved here into an ordinary ``nn.Module`` in
eval mode plus the facts the manifest records about where it came from.  Every
way this can go wrong (missing path, damaged file, unknown name) ends in a
one-line ``CompressorError`` before anything is written.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from compressor.artifacts import MODEL_FILE, MODEL_FILE_SUFFIXES
from compressor.errors import CompressorError
from compressor.hashing import file_sha256
from compressor.runfiles.modelfile import load_pruned
from compressor.models.deployable import deployable
from compressor.models.zoo import build, entry



@dataclass
class ExportSource:
    """A model ready to export, and a description of where it came from."""

    model: nn.Module
    name: str
    input_size: tuple[int, int, int]
    kind: str  # "run", "file", "zoo" or "module" (handed in through the Python API)
    pruned: bool
    path: Path | None = None
    default_out: Path = field(default_factory=lambda: Path("exports"))
    postprocessing: dict | None = None  # a detector's steps after the exported outputs (manifest bundle)
    model_file: Path | None = None  # the pruned model file it was read from (a run's model.pt)

    def describe(self) -> dict:
        return {
            "kind": self.kind,
            "model": self.name,
            "pruned": self.pruned,
            "path": None if self.path is None else str(self.path),
            "input_size": list(self.input_size),
            # which bytes were exported: bench times this export's INT8 file only for that model file
            "sha256": None if self.model_file is None else file_sha256(self.model_file),
        }


def from_module(model: nn.Module, name: str, input_size, pruned: bool) -> ExportSource:
    """Wrap a model built in Python (tests, benchmarks) as a source."""
    graph = deployable(model.eval(), input_size)
    return ExportSource(graph.model.eval(), name, graph.input_size, "module", pruned, None, Path("exports") / name,
                        graph.postprocessing)


def resolve_source(text: str, input_size=None, trust_code: bool = False) -> ExportSource:
    """Turn SOURCE into a model: an existing path wins over a model name.  ``input_size``
    (C, H, W) overrides a model name's native size (files and runs record their own).
    ``trust_code`` lets a file's ``module.path:factory`` model be imported (a name typed
    as SOURCE needs no such permission: the user chose it)."""
    path = Path(text)
    if input_size is not None and path.exists():
        raise CompressorError(
            f"--input-size applies to a model-name SOURCE; {path} is exported at the input size it was pruned at"
        )
    if path.is_dir():
        if (path / MODEL_FILE).is_file():
            return _from_run(path, trust_code)
        if not _is_model_name(text):
            raise CompressorError(
                f"{path} is not a `compress prune` run directory (it has no {MODEL_FILE})"
            )
    elif path.exists():
        return _from_file(path, "file", default_export_dir(path), trust_code)
    elif path.suffix in MODEL_FILE_SUFFIXES or len(path.parts) > 1:
        raise CompressorError(f"no such run directory or pruned model file: {path}")
    return _from_zoo(text, input_size)


def _is_model_name(text: str) -> bool:
    try:
        entry(text)
    except CompressorError:
        return False
    return True


def default_export_dir(path: Path) -> Path:
    """Where ``compress export PATH`` writes unless told: RUN/export for a run directory,
    FILE-export beside a model file (bench looks there for the export's verified INT8 file)."""
    return path / "export" if path.is_dir() else path.parent / f"{path.stem}-export"


def _from_run(directory: Path, trust_code: bool) -> ExportSource:
    source = _from_file(directory / MODEL_FILE, "run", default_export_dir(directory), trust_code)
    source.path = directory
    return source


def _from_file(path: Path, kind: str, default_out: Path, trust_code: bool) -> ExportSource:
    if not path.is_file():
        raise CompressorError(f"{path} is not a file")
    model, spec, plan = load_pruned(path, trust_code)
    pruned = plan.kept_channels() < plan.total_channels()  # a `dense` schedule run saves a full plan
    graph = deployable(model, spec.input_size)
    return ExportSource(graph.model.eval(), spec.name, graph.input_size, kind, pruned, path, default_out,
                        graph.postprocessing, path)


def _from_zoo(name: str, input_size=None) -> ExportSource:
    """Dense, randomly initialised: the baseline a pruned export is compared with."""
    info = entry(name)
    size = tuple(input_size or info.input_size)
    graph = deployable(build(name, info.num_classes, input_size=size).eval(), size)
    return ExportSource(graph.model.eval(), name, graph.input_size, "zoo", False, None,
                        Path("exports") / _dir_name(name), graph.postprocessing)


def _dir_name(name: str) -> str:
    """exports/NAME: timm:vit_x and pkg.mod:make become timm-vit_x and pkg.mod-make."""
    return name.replace(":", "-")
