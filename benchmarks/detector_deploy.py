"""Pruned single-stage detectors through `compress export` and `compress bench` on this CPU.

For each detector (random init, torchvision's default input size): a copy pruned by
--reduction of its MACs with the Python API (L2 ranking, the checked apply), saved as a
pruned model file the way a user's own detector loop saves it; then, in subprocesses, the
commands a user runs:

* ``compress export FILE --max-batch 2``: the network (backbone, neck, head) behind the
  parity gate on every output; the manifest's figures are reported;
* ``compress bench FILE --backend onnxruntime``: dense against pruned network, the ONNX
  Runtime CPU provider, at the batch sizes given.

    python -m benchmarks.detector_deploy --out benchmarks/results/detector_deploy_cpu
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.int8_deploy import Recorder
from compressor import ModelSpec, SelectionConfig, prune_once, save_pruned
from compressor.atomic import atomic_write_text
from compressor.bench.environment import describe
from compressor.engine.flops import count_macs
from compressor.models.registry import TASK_DEFAULTS, DETECTION, build_model

MODELS = ["retinanet_resnet50_fpn", "fcos_resnet50_fpn", "ssdlite320_mobilenet_v3_large"]


def prune_and_save(name: str, reduction: float, path: Path) -> dict:
    torch.manual_seed(0)
    size = TASK_DEFAULTS[DETECTION][0]
    model = build_model(name, input_size=size).eval()
    example = [[torch.zeros(*size)]]
    started = time.perf_counter()
    dense_macs = count_macs(model, example)  # before prune_once slices it in place
    result = prune_once(model, example, SelectionConfig(reduction))
    pruned, plan = result.model, result.plan
    seconds = time.perf_counter() - started
    save_pruned(path, pruned, ModelSpec(name, TASK_DEFAULTS[DETECTION][1], size), plan)
    return {"input_size": list(size), "prune_s": round(seconds, 1), "dense_macs": dense_macs,
            "pruned_macs": count_macs(pruned, example)}


def one_model(name: str, args, rec: Recorder, work: Path) -> dict:
    path = work / f"{name}.pt"
    row = {"model": name, **prune_and_save(name, args.reduction, path)}
    rec.save()
    export = work / f"{name}-export"
    entry = rec.run(["export", str(path), "--max-batch", "2", "--out", str(export)], f"{name}: export",
                    work / f"{name}-export.log")
    manifest = json.loads((export / "manifest.json").read_text()) if entry["rc"] == 0 else None
    if manifest is not None:
        parity = manifest["parity"]
        row["export"] = {
            "status": manifest["status"], "network_input": manifest["bundle"]["postprocessing"]["network_input"],
            "outputs": [o["name"] for o in manifest["outputs"]], "gate_passed": parity["passed"],
            "max_abs_err": parity["max_abs_err"], "max_rel_err": parity["max_rel_err"],
            "onnx_mb": round(manifest["files"]["model.onnx"]["size"] / 1e6, 2), "export_s": entry["wall_s"]}
    report = work / f"{name}-bench.json"
    entry = rec.run(["bench", str(path), "--backend", "onnxruntime", "--batch-size", args.batch_sizes,
                     "--threads", str(args.threads), "--rounds", str(args.rounds), "--json", str(report),
                     "--markdown", str(work / f"{name}-bench.md"), "--plot", str(work / f"{name}-bench.png")],
                    f"{name}: bench", work / f"{name}-bench.log")
    if entry["rc"] == 0:
        row["bench"] = [{k: r.get(k) for k in ("variant", "batch_size", "median_ms", "p90_ms", "macs", "speedup",
                                               "macs_ratio", "efficiency")}
                        for r in json.loads(report.read_text())["records"]]
    return row


def table(rows: list[dict]) -> str:
    lines = ["| detector | network input | MACs dense → pruned | gate (every output) | batch | dense ms | "
             "pruned ms | speed-up | MACs ratio | efficiency |", "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        export = row.get("export") or {}
        gate = (f"passed, {len(export['outputs'])} outputs, max rel err {export['max_rel_err']:.1e}"
                if export.get("gate_passed") else "not exported")
        size = "x".join(map(str, export.get("network_input", row["input_size"])))
        macs = f"{row['dense_macs'] / 1e9:.2f} G → {row['pruned_macs'] / 1e9:.2f} G"
        for pruned in [r for r in row.get("bench", []) if r["variant"] == "pruned"]:
            dense = next(r for r in row["bench"] if r["variant"] == "dense" and r["batch_size"] == pruned["batch_size"])
            lines.append(f"| {row['model']} | {size} | {macs} | {gate} | {pruned['batch_size']} | "
                         f"{dense['median_ms']:.1f} | {pruned['median_ms']:.1f} | {pruned['speedup']:.2f}× | "
                         f"{pruned['macs_ratio']:.2f}× | {pruned['efficiency']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--reduction", type=float, default=0.5)
    parser.add_argument("--batch-sizes", default="1,4")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/detector_deploy_cpu")
    args = parser.parse_args()
    report = {"environment": describe(args.threads), "reduction": args.reduction, "rows": [], "commands": []}

    def save() -> None:
        atomic_write_text(Path(f"{args.out}.json"), json.dumps(report, indent=1))
        atomic_write_text(Path(f"{args.out}.md"), markdown(report, args))

    rec = Recorder(report, save)
    with tempfile.TemporaryDirectory(prefix="detector-deploy-") as folder:
        for name in args.models:
            report["rows"].append(one_model(name, args, rec, Path(folder)))
            save()


def markdown(report: dict, args) -> str:
    env = report["environment"]
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
    commands = "\n".join(f"- `{c['command']}` → rc {c['rc']}, {c['wall_s']} s (load {c['load_before']} → "
                         f"{c['load_after']})" for c in report["commands"])
    return (
        "# Pruned detectors: export behind the gate and ONNX Runtime CPU latency\n\n"
        f"Random init, pruned by {report['reduction']:.0%} of the MACs (L2 ranking, checked apply), "
        f"saved as pruned model files. The timed graph is the detector's network (backbone, neck, head): resizing, "
        f"anchor decoding and NMS run outside it. {env['cpu']}, {env['usable_cores']} usable cores, "
        f"{args.threads} threads, {args.rounds} alternating rounds; {versions}.\n\n"
        f"`python -m benchmarks.detector_deploy --reduction {args.reduction} --batch-sizes {args.batch_sizes} "
        f"--threads {args.threads} --rounds {args.rounds} --out {args.out}`\n\n"
        + table(report["rows"]) + "\n\nCommands (load: the 1-minute load average; the machine is shared):\n\n"
        + commands + "\n"
    )


if __name__ == "__main__":
    main()
