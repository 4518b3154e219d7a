"""What a ``compress run`` report says, read from the files its stages wrote.

``collect`` joins summary.json (prune), the export's manifest.json, the eval report and
bench.json into one dictionary, report.json: one entry per artifact (the dense baseline,
the pruned PyTorch model, each exported file) with its accuracy, MACs, params, file size
and every latency cell bench timed for it.  Every number is copied from those files, never
recomputed: the report says exactly what the separate commands said.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from compressor.errors import CompressorError
from compressor.export.pipeline import FP16_FILE, FP16_PLAN_FILE, INT8_FILE, INT8_PLAN_FILE, ONNX_FILE, PLAN_FILE

REPORT_FORMAT = "compressor.run-report/1"
# the precision each file an export writes runs in (its name says it)
EXPORT_PRECISION = {ONNX_FILE: "fp32", FP16_FILE: "fp16", INT8_FILE: "int8", PLAN_FILE: "fp32",
                    FP16_PLAN_FILE: "fp16", INT8_PLAN_FILE: "int8"}
# eval's backend names -> bench's (the backends that time the same kind of file)
BENCH_BACKENDS = {"pytorch": ("torch", "torch-compile"), "onnxruntime": ("onnxruntime", "onnxruntime-cuda", "onnxruntime-trt"),
                  "tensorrt": ("tensorrt",)}
SUMMARY_KEYS = ("schedule", "epochs", "flops_reduction_target", "dense_macs", "pruned_macs", "macs_reduction",
                "dense_params", "pruned_params", "top1", "best_top1", "prune_epoch")
LATENCY_KEYS = ("backend", "precision", "batch_size", "median_ms", "p90_ms", "throughput", "speedup",
                "speedup_vs_dense_fp32")


@dataclass(frozen=True)
class RunFiles:
    """Where the stages wrote what the report reads (the separate commands' default places)."""

    out: Path
    summary: Path
    curves: Path  # the prune's run.png
    manifest: Path
    eval: Path
    bench: Path
    bench_plot: Path

    def relative(self, path: Path) -> str:
        return str(path.relative_to(self.out))


def collect(files: RunFiles, stages: dict) -> dict:
    summary, manifest = read_json(files.summary), read_json(files.manifest)
    evaluation, bench = read_json(files.eval), read_json(files.bench)
    artifacts = _dense(summary) + _pruned(files, summary, manifest, evaluation)
    for record in bench["records"]:
        _place(artifacts, record)
    shocks = summary.get("prune_shocks") or []
    return {
        "format": REPORT_FORMAT,
        "model": summary["model"],
        "dataset": summary["dataset"],
        "out": str(files.out),
        "files": {name: files.relative(path) for name, path in
                  (("summary", files.summary), ("manifest", files.manifest), ("eval", files.eval), ("bench", files.bench))},
        "prune": {**{key: summary.get(key) for key in SUMMARY_KEYS},
                  "top1_before_prune": shocks[0]["top1_before"] if shocks else None},
        "eval": {key: evaluation["data"].get(key) for key in ("dataset", "split", "images", "batch_size")},
        "bench": {"device": bench["config"].get("device"), "threads": bench["config"].get("threads"),
                  "skipped": bench.get("skipped", [])},
        "export": {"status": manifest.get("status"), "format": (manifest.get("options") or {}).get("format")},
        "artifacts": artifacts,
        "figures": [files.relative(path) for path in (files.curves, files.bench_plot) if path.is_file()],
        "stages": {name: {"command": record["command"], "finished_at": record["finished_at"]}
                   for name, record in stages.items()},
    }


def read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise CompressorError(f"cannot read {path} for the report ({type(error).__name__})") from None
    if not isinstance(data, dict):
        raise CompressorError(f"{path} is not the file its stage writes (not a JSON object)")
    return data


def _artifact(name: str, variant: str, backend: str | None, precision: str, **facts) -> dict:
    return {"name": name, "variant": variant, "backend": backend, "precision": precision, "file": None,
            "bytes": None, "top1": None, "top5": None, "eval": None, "macs": None, "params": None,
            **facts, "latency": []}


def _dense(summary: dict) -> list[dict]:
    """The unpruned architecture: bench times it, nothing ships it or evaluates it."""
    return [_artifact("dense fp32", "dense", None, "fp32", macs=summary["dense_macs"], params=summary["dense_params"])]


def _pruned(files: RunFiles, summary: dict, manifest: dict, evaluation: dict) -> list[dict]:
    found = []
    for row in evaluation["rows"]:
        name = Path(row["file"]).name
        if row["backend"] == "pytorch":
            kind, precision = "PyTorch", "fp32"
            macs, params, size = summary["pruned_macs"], summary["pruned_params"], _size(Path(row["file"]))
        else:
            kind, precision = ("ONNX" if row["backend"] == "onnxruntime" else "TensorRT"), EXPORT_PRECISION.get(name, "fp32")
            record = (manifest.get("files") or {}).get(name) or {}
            macs, params, size = manifest.get("macs"), manifest.get("params"), record.get("size")
        path = Path(row["file"])
        shown = files.relative(path) if path.is_relative_to(files.out) else str(path)
        found.append(_artifact(
            f"pruned {precision} {kind}", "pruned", row["backend"], precision, file=shown, bytes=size,
            top1=row.get("top1"), top5=row.get("top5"), macs=macs, params=params,
            eval={key: row.get(key) for key in ("status", "reason", "provider", "images", "top1_agreement")},
        ))
    return found


def _size(path: Path) -> int | None:
    return path.stat().st_size if path.is_file() else None


def _place(artifacts: list[dict], record: dict) -> None:
    """Attach one bench cell to the artifact it timed: the dense baseline of its precision, or
    the pruned file of its kind and precision (a new entry when no file of the run matches,
    e.g. the dense model in INT8, which bench quantizes for timing only)."""
    cell = {key: record.get(key) for key in LATENCY_KEYS}
    variant, precision, backend = record["variant"], record["precision"], record["backend"]
    for artifact in artifacts:
        timed_by = () if artifact["backend"] is None else BENCH_BACKENDS.get(artifact["backend"], ())
        if artifact["variant"] == variant and artifact["precision"] == precision and \
                (variant == "dense" or backend in timed_by):
            artifact["latency"].append(cell)
            return
    artifacts.append(_artifact(f"{variant} {precision} (timed only)", variant, None, precision,
                               macs=record.get("macs"), params=record.get("params")))
    artifacts[-1]["latency"].append(cell)
