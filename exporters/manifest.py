"""``manifest.json``: what was exported, how, and the evidence that it is right.

Its keys (format, opset, input/output names and shapes, macs, params, parity,
tool versions, the status, the files' sha256 and sizes, the exporter used and the
source) are defined once, in ``compressor.artifacts.ExportManifest``.  Written atomically, so a crash never leaves half a
manifest next to the model files.
"""
from __future__ import annotations

import importlib
import json
import math
import platform
from importlib import metadata
from pathlib import Path

from compressor import __version__ as compressor_version
from compressor.atomic import atomic_write_text
from compressor.export.artifacts import FAILED_SUFFIX, file_record, make_readable

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = "compressor.export-manifest/1"
# Status values: "ok" (every gate passed), "unverified" (--no-verify), "failed" (a gate
# refused; the files carry a .failed suffix), "incomplete" (the ONNX is done and verified,
# the TensorRT engine could not be built on this machine).
STATUSES = ("ok", "unverified", "failed", "incomplete")


def _distribution_version(*names: str) -> str | None:
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def _module_version(name: str) -> str | None:
    """``module.__version__`` of the module that actually loads (onnxruntime: the GPU and the
    plain build install the same module, and the metadata cannot say which one wins)."""
    try:
        module = importlib.import_module(name)
    except Exception:  # noqa: BLE001 - not installed, or broken: either way no version to report
        return None
    version = getattr(module, "__version__", None)
    return None if version is None else str(version)


def tool_versions() -> dict[str, str | None]:
    """Versions of everything that shapes an exported file or a measured latency (None: not
    installed).  The one list: export's manifest.json and bench's environment (bench.md,
    round_to.json and --round-to auto's cache key) both record this."""
    import torch

    from compressor.export.tensorrt import tensorrt_version

    return {
        "compressor": compressor_version,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": _distribution_version("torchvision"),
        "onnx": _module_version("onnx"),
        "onnxruntime": _module_version("onnxruntime"),
        "onnxscript": _distribution_version("onnxscript"),
        "onnxsim": _distribution_version("onnxsim"),
        "onnxconverter_common": _distribution_version("onnxconverter-common", "onnxconverter_common"),
        "tensorrt": tensorrt_version(),
    }


def files_section(paths: list[Path]) -> dict:
    return {path.name: file_record(path) for path in sorted(paths, key=lambda p: p.name)}


def write_manifest(out: Path, manifest: dict) -> Path:
    if manifest.get("status") not in STATUSES:
        raise ValueError(f"manifest status must be one of {STATUSES}, got {manifest.get('status')!r}")
    text = json.dumps(finite_json({"manifest": FORMAT_VERSION, **manifest}), indent=1, allow_nan=False) + "\n"
    return make_readable(atomic_write_text(out / MANIFEST_NAME, text))


def finite_json(value):
    """Strict JSON has no inf/nan: a non-finite number (a model that produced NaN) becomes a string.
    The one rule for every JSON this tool writes about a model (manifest.json, eval's report)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v) for v in value]
    return value


def foreign_files(out: Path, names: tuple[str, ...]) -> list[str]:
    """Which of ``names`` (and their ``.failed`` forms, and manifest.json) in ``out`` an
    export would replace although no earlier export wrote them: a file is ours only if
    our manifest.json there lists it with the same sha256.  Links are never ours."""

    recorded = our_manifest_files(out / MANIFEST_NAME)
    present = [n for base in names for n in (base, base + FAILED_SUFFIX) if _present(out / n)]
    theirs = [n for n in present if not _vouched(out / n, recorded or {})]
    if _present(out / MANIFEST_NAME) and recorded is None:
        theirs.insert(0, MANIFEST_NAME)
    return theirs


def _vouched(path: Path, recorded: dict) -> bool:
    if path.is_symlink() or not path.is_file() or path.name not in recorded:
        return False
    return recorded[path.name].get("sha256") == file_record(path)["sha256"]


def _present(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def our_manifest_files(path: Path) -> dict | None:
    """The ``files`` of our manifest at ``path`` (file name -> its record); None when it is
    missing, a link or not a manifest `compress export` wrote.  Public: eval records its
    result only in a manifest this tool wrote."""
    if not path.is_file() or path.is_symlink():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):  # Recursion: "[[[[..." thousands deep
        return None
    if not isinstance(data, dict) or data.get("manifest") != FORMAT_VERSION or not isinstance(data.get("files"), dict):
        return None
    return {k: v for k, v in data["files"].items() if isinstance(v, dict)}


def read_manifest(out: Path) -> dict:
    return json.loads((out / MANIFEST_NAME).read_text())
