"""Dense fp32 -> pruned fp32 -> pruned INT8 on this CPU, through the CLI users run.

Two models:

1. ResNet-56 on the built-in synthetic data, trained a few epochs: ``compress prune
   --schedule dense`` and ``--schedule ocs --flops-reduction 0.5`` with otherwise identical
   settings; each run is exported with ``compress export RUN --int8 --int8-activations
   asymmetric`` (the form for ONNX Runtime's CPU provider; when the INT8 gate refuses, the
   refusal is recorded and the export is retried once with ``--calib-method entropy``),
   evaluated with ``compress eval RUN/export`` (top-1 of PyTorch, model.onnx and
   model_int8.onnx on the run's validation split), and the four exported, gated files are
   timed with ``compress bench FILE... --precision fp32,int8 --backend onnxruntime``.
2. ResNet-50 at 224x224, random init (latency only): a 50 %-MACs copy made here with the
   Python API (L2 ranking, like benchmarks/pruned_latency.py), saved as a pruned model
   file, then ``compress bench FILE.pt --precision fp32,int8 --backend onnxruntime``
   (bench builds the dense/pruned pair and their INT8 files itself, calibrated on random
   inputs: enough for latency, not for accuracy).

Every command runs in a subprocess (``sys.executable -m compressor ...``) and is listed
in the report with its exit status and wall time.  Runs already finished in --workdir
(a ``summary.json`` there) are reused when --reuse is given, and the report says so.

    python -m benchmarks.int8_deploy --out benchmarks/results/int8_cpu
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import torch

from compressor.atomic import atomic_write_text
from compressor.bench.environment import describe
from compressor.export.manifest import tool_versions

R56_SETTINGS = ["--model", "resnet56", "--seed", "0"]


class Recorder:
    """Runs CLI commands, keeps each one's line, exit status, wall time and output tail."""

    def __init__(self, report: dict, save):
        self.report, self.save = report, save

    def run(self, args: list[str], step: str, log: Path, timeout: float | None = None) -> dict:
        command = [sys.executable, "-m", "compressor", *args]
        shown = "compress " + " ".join(shlex.quote(a) for a in args)
        print(f"$ {shown}", flush=True)
        load_before = os.getloadavg()[0]
        started = time.perf_counter()
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                                    env={**os.environ, "PYTHONUNBUFFERED": "1"})
            rc, out, err = result.returncode, result.stdout, result.stderr
        except subprocess.TimeoutExpired as error:
            rc, out, err = "timeout", _text(error.stdout), _text(error.stderr) + f"\n(killed after {timeout} s)"
        wall = time.perf_counter() - started
        log.write_text(f"$ {shown}\n--- stdout\n{out}\n--- stderr\n{err}\n")
        entry = {"step": step, "command": shown, "rc": rc, "wall_s": round(wall, 1), "log": str(log),
                 # 1-minute load average: the machine is shared, a busy one shows here
                 "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2),
                 "stdout_tail": out[-1500:], "stderr_tail": err[-1500:]}
        self.report["commands"].append(entry)
        self.save()
        print(f"  rc {rc}, {wall:.0f} s", flush=True)
        return entry

    def reused(self, args: list[str], step: str, path: Path) -> None:
        shown = "compress " + " ".join(shlex.quote(a) for a in args)
        self.report["commands"].append({"step": step, "command": shown, "rc": 0, "reused": str(path),
                                        "wall_s": None})
        self.save()
        print(f"(reused {path}) {shown}", flush=True)


def _text(value) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else (value or "")


def read_manifest(export: Path) -> dict | None:
    for name in ("manifest.json", "manifest.json.failed"):
        if (export / name).is_file():
            return json.loads((export / name).read_text())
    return None


# -- part 1: ResNet-56 --------------------------------------------------------------------------
def resnet56(args, rec: Recorder, work: Path) -> dict:
    part = {"runs": {}, "bench": None}
    common = [*R56_SETTINGS, "--epochs", str(args.epochs), "--dataset", "synthetic", "--synthetic-train", str(args.train),
              "--synthetic-val", str(args.val), "--batch-size", str(args.batch_size), "--no-progress"]
    for schedule, extra in (("dense", []), ("ocs", ["--flops-reduction", "0.5"])):
        run = work / f"resnet56-{schedule}"
        prune = ["prune", "--schedule", schedule, *extra, *common, "--out", str(run)]
        if args.reuse and (run / "summary.json").is_file():
            rec.reused(prune, f"resnet56 {schedule}: train", run)
        else:
            rec.run(prune, f"resnet56 {schedule}: train", work / f"prune-{schedule}.log")
        summary = json.loads((run / "summary.json").read_text())
        info = {"run": str(run), "summary": {k: summary.get(k) for k in (
            "top1", "best_top1", "macs_reduction", "prune_epoch", "wall_time_s")}, "exports": []}
        part["runs"][schedule] = info

        export = run / "export"
        attempts = [[], ["--calib-method", "entropy"]]
        for extra_export in attempts:
            # a retry replaces the refused export's files (renamed *.failed): --overwrite
            cmd = ["export", str(run), "--int8", "--int8-activations", "asymmetric", *extra_export,
                   *(["--overwrite"] if extra_export else [])]
            entry = rec.run(cmd, f"resnet56 {schedule}: export", work / f"export-{schedule}-{len(info['exports'])}.log")
            manifest = read_manifest(export) or {}
            int8 = manifest.get("int8") or {}
            check = int8.get("check") or {}  # the gate's figures (manifest "int8" -> "check")
            info["exports"].append({
                "command": entry["command"], "rc": entry["rc"], "status": manifest.get("status"),
                "int8": {k: check.get(k) for k in ("agreement", "min_agreement", "check_images", "passed",
                                                   "float_layers", "auto_float_layers")},
                "calibration": int8.get("calibration"),
                "error": entry["stderr_tail"][-600:] if entry["rc"] != 0 else None,
            })
            if entry["rc"] == 0:
                break
        manifest = read_manifest(export) or {}
        info["manifest"] = {k: manifest.get(k) for k in ("status", "macs", "params", "input_size", "opset")}
        info["manifest"]["int8"] = manifest.get("int8")
        info["files"] = {name: (export / name).stat().st_size for name in ("model.onnx", "model_int8.onnx")
                         if (export / name).is_file()}
        if info["exports"][-1]["rc"] != 0 and "model.onnx" not in info["files"]:
            # INT8 refused twice: an fp32-only export, so the fp32 rows can still be timed
            rec.run(["export", str(run), "--overwrite"], f"resnet56 {schedule}: export fp32 only",
                    work / f"export-{schedule}-fp32.log")
            info["files"] = {name: (export / name).stat().st_size for name in ("model.onnx",)
                             if (export / name).is_file()}

        eval_json = work / f"eval-{schedule}.json"
        entry = rec.run(["eval", str(export), "--json", str(eval_json)], f"resnet56 {schedule}: eval",
                        work / f"eval-{schedule}.log")
        if entry["rc"] == 0 and eval_json.is_file():
            report = json.loads(eval_json.read_text())
            info["eval"] = {"images": report.get("images"), "split": report.get("split"),
                            "recorded_top1": report.get("recorded_top1"), "notes": report.get("notes"),
                            "rows": [{k: r.get(k) for k in ("name", "backend", "provider", "status", "reason", "images",
                                                             "top1", "top5", "loss", "top1_agreement")}
                                     for r in report["rows"]]}
        rec.save()

    part.update(bench56(args, rec, work, ""))
    return part


def bench56(args, rec: Recorder, work: Path, tag: str) -> dict:
    """``compress bench`` on the exported files; the dense run's model.onnx first (the baseline)."""
    order = [("dense", "fp32", "model.onnx"), ("ocs", "fp32", "model.onnx"), ("ocs", "int8", "model_int8.onnx"),
             ("dense", "int8", "model_int8.onnx")]
    files = [(s, p, work / f"resnet56-{s}" / "export" / n) for s, p, n in order]
    files = [f for f in files if f[2].is_file()]
    stem = work / f"bench-resnet56{tag}"
    cmd = ["bench", *[str(f[2]) for f in files], "--backend", "onnxruntime", "--device", "cpu",
           "--precision", "fp32,int8", "--batch-size", "1,32", "--min-runs", str(args.r56_min_runs),
           "--min-time-s", str(args.r56_min_time_s), "--rounds", str(args.r56_rounds),
           "--json", f"{stem}.json", "--markdown", f"{stem}.md", "--plot", f"{stem}.png"]
    entry = rec.run(cmd, f"resnet56: bench{tag}", Path(f"{stem}.log"))
    part = {"bench": None}
    if entry["rc"] == 0:
        bench = json.loads(Path(f"{stem}.json").read_text())
        part["bench"] = {"config": bench.get("config"), "skipped": bench.get("skipped"),
                         "records": bench["records"]}
        part["bench_files"] = [{"schedule": s, "precision": p, "file": str(f)} for s, p, f in files]
    return part


def r56_rows(part: dict) -> list[dict]:
    """dense fp32 / pruned fp32 / pruned int8 / dense int8 with eval, manifest and bench figures."""
    records = (part.get("bench") or {}).get("records") or []
    rows = []
    for label, schedule, precision, name in (("dense fp32", "dense", "fp32", "model.onnx"),
                                             ("pruned fp32", "ocs", "fp32", "model.onnx"),
                                             ("pruned int8", "ocs", "int8", "model_int8.onnx"),
                                             ("dense int8", "dense", "int8", "model_int8.onnx")):
        info = part["runs"].get(schedule) or {}
        manifest = info.get("manifest") or {}
        macs = manifest.get("macs")
        row = {"row": label, "file": f"resnet56-{schedule}/export/{name}", "macs": macs,
               "params": manifest.get("params"), "bytes": (info.get("files") or {}).get(name)}
        eval_rows = {r["name"]: r for r in (info.get("eval") or {}).get("rows", [])}
        row["top1_pytorch"] = (eval_rows.get("pytorch") or {}).get("top1")
        row["top1"] = (eval_rows.get(name) or {}).get("top1")
        row["eval_agreement"] = (eval_rows.get(name) or {}).get("top1_agreement")
        check = (manifest.get("int8") or {}).get("check") or {}
        if not check and info.get("exports"):  # INT8 refused: the last attempt's gate figures
            check = info["exports"][-1]["int8"]
        row["gate_agreement"] = check.get("agreement") if precision == "int8" else None
        row["gate_passed"] = check.get("passed") if precision == "int8" else None
        row["float_layers"] = check.get("float_layers") if precision == "int8" else None
        # bench names every given file by its name (both fp32 files are "model.onnx"): tell
        # them apart by their MACs (counted from the graph) and the precision cell
        for batch in (1, 32):
            match = [r for r in records if r["precision"] == precision and r["batch_size"] == batch
                     and r["model"] == name and r.get("macs") == macs]
            row[f"median_ms_b{batch}"] = match[0]["median_ms"] if len(match) == 1 else None
            row[f"p90_ms_b{batch}"] = match[0]["p90_ms"] if len(match) == 1 else None
        rows.append(row)
    # bench's own INT8 of each fp32 file (the int8 cell quantizes a given fp32 ONNX itself,
    # calibrated on random inputs, ungated): latency of a fully INT8 graph, no accuracy claim
    for label, schedule in (("pruned int8, bench-quantized (random calib, ungated)", "ocs"),
                            ("dense int8, bench-quantized (random calib, ungated)", "dense")):
        info = part["runs"].get(schedule) or {}
        manifest = info.get("manifest") or {}
        row = {"row": label, "file": f"resnet56-{schedule}/export/model.onnx, quantized by bench",
               "macs": manifest.get("macs"), "params": manifest.get("params"), "bytes": None,
               "top1": None, "gate_agreement": None, "gate_passed": None, "bench_quantized": True}
        for batch in (1, 32):
            match = [r for r in records if r["precision"] == "int8" and r["batch_size"] == batch
                     and r["model"] == "model.onnx" and r.get("macs") == manifest.get("macs")]
            row[f"median_ms_b{batch}"] = match[0]["median_ms"] if len(match) == 1 else None
            row[f"p90_ms_b{batch}"] = match[0]["p90_ms"] if len(match) == 1 else None
        if row["median_ms_b1"] is not None or row["median_ms_b32"] is not None:
            rows.append(row)
    for batch in (1, 32):
        base = rows[0][f"median_ms_b{batch}"]
        for row in rows:
            value = row[f"median_ms_b{batch}"]
            row[f"speedup_b{batch}"] = base / value if base and value else None
    return rows


def _agreement_from_error(text: str | None) -> float | None:
    """The gate's figure from a refused export's error line ("... for only 68.4% of 500 ...")."""
    match = re.search(r"for only ([0-9.]+)% of", text or "")
    return float(match.group(1)) / 100 if match else None


def percentile_retry(args, rec: Recorder, work: Path) -> dict:
    """One more calibration method for each run, into RUN/export-percentile (the main export
    untouched): ``--calib-method entropy`` gave byte-identical INT8 files to minmax here."""
    part = {}
    for schedule in ("dense", "ocs"):
        run, out = work / f"resnet56-{schedule}", work / f"resnet56-{schedule}" / "export-percentile"
        cmd = ["export", str(run), "--int8", "--int8-activations", "asymmetric", "--calib-method", "percentile",
               "--out", str(out), "--overwrite"]
        entry = rec.run(cmd, f"resnet56 {schedule}: export, percentile", work / f"export-{schedule}-percentile.log")
        manifest = read_manifest(out) or {}
        check = (manifest.get("int8") or {}).get("check") or {}
        part[schedule] = {"command": entry["command"], "rc": entry["rc"], "status": manifest.get("status"),
                          "agreement": check.get("agreement") or _agreement_from_error(entry["stderr_tail"]),
                          "passed": check.get("passed"), "float_layers": check.get("float_layers"),
                          "error": entry["stderr_tail"][-600:] if entry["rc"] != 0 else None}
        rec.save()
    return part


# -- part 2: ResNet-50 ----------------------------------------------------------------------------
def resnet50(args, rec: Recorder, work: Path) -> dict:
    from compressor import ModelSpec, SelectionConfig, prune_once, save_pruned
    from compressor.models import build_model, get_entry

    path = work / "resnet50-pruned.pt"
    if not (args.reuse and path.is_file()):
        entry = get_entry("resnet50")
        torch.manual_seed(0)
        model = build_model("resnet50", num_classes=entry.num_classes).eval()
        pruned = prune_once(model, torch.zeros(1, *entry.input_size), SelectionConfig(0.5))
        save_pruned(path, pruned.model, ModelSpec("resnet50", entry.num_classes, tuple(entry.input_size)), pruned.plan)
    part = {"model_file": str(path), "made_with": "Python API: build_model('resnet50') random init (seed 0), "
            "prune_once(SelectionConfig(0.5)) (group L2), save_pruned"}
    bench_json = work / "bench-resnet50.json"
    cmd = ["bench", str(path), "--backend", "onnxruntime", "--device", "cpu", "--precision", "fp32,int8",
           "--batch-size", "1,32", "--warmup-runs", str(args.r50_warmup_runs), "--warmup-s", str(args.r50_warmup_s),
           "--min-runs", str(args.r50_min_runs), "--min-time-s", str(args.r50_min_time_s),
           "--rounds", str(args.r50_rounds), "--json", str(bench_json),
           "--markdown", str(work / "bench-resnet50.md"), "--plot", str(work / "bench-resnet50.png")]
    entry = rec.run(cmd, "resnet50: bench", work / "bench-resnet50.log", timeout=args.r50_timeout_s)
    if entry["rc"] == 0:
        bench = json.loads(bench_json.read_text())
        part["bench"] = {"config": bench.get("config"), "skipped": bench.get("skipped"), "records": bench["records"]}
    cache = path.parent / f"{path.stem}-bench" / "cache"
    part["cache_files"] = {p.name: p.stat().st_size for p in cache.glob("*/*.onnx")}
    return part


def r50_rows(part: dict) -> list[dict]:
    records = (part.get("bench") or {}).get("records") or []
    rows = []
    for label, model, precision, stem in (("dense fp32", "resnet50 dense", "fp32", "resnet50-dense.onnx"),
                                          ("pruned fp32", "resnet50 pruned", "fp32", "resnet50-pruned.onnx"),
                                          ("pruned int8", "resnet50 pruned", "int8", "resnet50-pruned_int8-asymmetric.onnx"),
                                          ("dense int8", "resnet50 dense", "int8", "resnet50-dense_int8-asymmetric.onnx")):
        match = [r for r in records if r["model"] == model and r["precision"] == precision]
        row = {"row": label, "macs": match[0]["macs"] if match else None,
               "params": match[0]["params"] if match else None,
               "bytes": (part.get("cache_files") or {}).get(stem), "file": stem}
        for batch in (1, 32):
            cell = [r for r in match if r["batch_size"] == batch]
            row[f"median_ms_b{batch}"] = cell[0]["median_ms"] if cell else None
            row[f"p90_ms_b{batch}"] = cell[0]["p90_ms"] if cell else None
        rows.append(row)
    for batch in (1, 32):
        base = rows[0][f"median_ms_b{batch}"]
        for row in rows:
            value = row[f"median_ms_b{batch}"]
            row[f"speedup_b{batch}"] = base / value if base and value else None
        # bench's own combined figure, for cross-checking ours
        for row, (model, precision) in zip(rows, (("resnet50 dense", "fp32"), ("resnet50 pruned", "fp32"),
                                                  ("resnet50 pruned", "int8"), ("resnet50 dense", "int8"))):
            cell = [r for r in records if r["model"] == model and r["precision"] == precision and r["batch_size"] == batch]
            if cell:
                row[f"bench_speedup_b{batch}"] = cell[0].get("speedup_vs_dense_fp32", cell[0].get("speedup"))
    return rows


# -- report ---------------------------------------------------------------------------------------
def _f(value, spec: str, unit: str = "") -> str:
    return "n/a" if value is None else format(value, spec) + unit


def table(rows: list[dict], with_top1: bool) -> list[str]:
    lines = ["| variant | MACs | params | file size | top-1 % (val) | INT8 top-1 agreement (manifest) | "
             "median ms b1 | speed-up b1 | median ms b32 | speed-up b32 |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        is_int8 = "int8" in r["row"]
        if not with_top1:
            top1 = "n/a (random init)"
        elif r.get("top1") is None and is_int8:
            top1 = "n/a (no gated file)"
        else:
            top1 = _f(r.get("top1"), ".2f")
        if r.get("bench_quantized") or (is_int8 and not with_top1):
            agreement = "n/a (not gated)"
        elif is_int8:
            agreement = _f(r.get("gate_agreement"), ".1%")
            if r.get("gate_passed") is False:
                agreement += " (refused by the gate)"
        else:
            agreement = "–"
        lines.append(
            f"| {r['row']} | {_f(r['macs'] and r['macs'] / 1e6, '.1f', 'M')} | {_f(r['params'] and r['params'] / 1e6, '.3f', 'M')} | "
            f"{_f(r['bytes'] and r['bytes'] / 2**20, '.2f', ' MiB')} | {top1} | {agreement} | "
            f"{_f(r['median_ms_b1'], '.2f')} | {_f(r['speedup_b1'], '.2f', 'x')} | "
            f"{_f(r['median_ms_b32'], '.1f')} | {_f(r['speedup_b32'], '.2f', 'x')} |")
    return lines


def markdown(report: dict) -> str:
    env = report["environment"]
    versions = report["versions"]
    lines = ["# Dense fp32 → pruned fp32 → pruned INT8 on this CPU (ONNX Runtime)", "",
             f"Script: `{report['script']}` — started {report['started']}, finished {report.get('finished', '(running)')}."]
    for extra in report.get("appended", []):
        lines.append(f"Then, added to this report: `{extra['script']}` — started {extra['started']}"
                     f"{', finished ' + report['appended_finished'] if report.get('appended_finished') else ''}.")
    lines += ["",
             f"Machine: {env['cpu']} ({', '.join(env['cpu_flags'])}; no VNNI), {env['logical_cores']} logical / "
             f"{env['usable_cores']} usable cores, ONNX Runtime and PyTorch on every usable core "
             f"(bench's default thread count); {env['platform']}, Python {env['python']}. "
             "The machine is shared: another engineer's jobs may have run during any of these measurements.", "",
             "Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items() if v) + ".", ""]
    r56 = report.get("resnet56")
    if r56:
        runs = r56["runs"]
        lines += ["## ResNet-56, synthetic data (10 classes, 32x32), trained "
                  f"{report['args']['epochs']} epochs on {report['args']['train']} images", ""]
        lines += table(report.get("resnet56_rows") or [], True)
        lines += ["", "MACs and params from each export's manifest.json (an INT8 file has the fp32 graph's MACs; "
                  "its weights are int8, hence the smaller file). Top-1 from `compress eval RUN/export` on the "
                  f"{(runs.get('dense', {}).get('eval') or {}).get('images', '?')} validation images, each file run in ONNX Runtime "
                  "(CPU). INT8 agreement: the export gate's figure (top-1 agreement of model_int8.onnx with "
                  "PyTorch fp32 on held-out training-split images; the refused file is not kept, so it has no size, "
                  "top-1 or latency here). Latency: `compress bench` on the exported files (see the command list), "
                  "ONNX Runtime CPU provider; a given fp32 file in the int8 cell is quantized by bench itself "
                  "(the 'bench-quantized' rows: asymmetric QDQ, calibrated on random inputs, every layer INT8, "
                  "no gate); fp32 files timed together in the fp32 cell, INT8 files in the "
                  "int8 cell (interleaved rounds within a cell), speed-up = dense fp32 median / row median, "
                  "computed here from bench.json (bench compares given files only within a cell).", ""]
        lines += ["| run | PyTorch top-1 % (eval) | run's recorded top-1 % | MACs reduction | prune epoch | train wall s | "
                  "INT8 exports tried (rc, gate agreement) | eval agreement of model_int8.onnx with PyTorch (val) |",
                  "|---|---|---|---|---|---|---|---|"]
        for schedule, info in runs.items():
            rows = {r["name"]: r for r in (info.get("eval") or {}).get("rows", [])}
            tried = "; ".join(f"`{' '.join(e['command'].split()[3:])}` → rc {e['rc']}, "
                              f"{_f(e['int8'].get('agreement'), '.1%')}" for e in info["exports"])
            s = info["summary"]
            lines.append(
                f"| {schedule} | {_f((rows.get('pytorch') or {}).get('top1'), '.2f')} | {_f(s.get('top1'), '.2f')} | "
                f"{_f(s.get('macs_reduction'), '.1%')} | {s.get('prune_epoch') if s.get('prune_epoch') is not None else '–'} | {_f(s.get('wall_time_s'), '.0f')} | "
                f"{tried} | {_f((rows.get('model_int8.onnx') or {}).get('top1_agreement'), '.1%')} |")
        lines.append("")
        if report.get("resnet56_repeat_rows"):
            lines += ["The same `compress bench` command again, after the ResNet-50 part (a second sample of the "
                      "shared machine; compare with the table above to see how much the latency figures move):", ""]
            lines += table(report["resnet56_repeat_rows"], True)
            lines.append("")
        retry = report.get("resnet56_percentile")
        if retry:
            lines += ["Percentile calibration, tried after the main invocation (separate `--out`, see the command "
                      "list): " + "; ".join(
                          f"{schedule}: rc {r['rc']}, top-1 agreement {_f(r.get('agreement'), '.1%')}"
                          f"{' (refused)' if r['rc'] != 0 else ''}" for schedule, r in retry.items()) + ".", ""]
    r50 = report.get("resnet50")
    if r50:
        cfg = ((r50.get("bench") or {}).get("config") or {}).get("timing") or {}
        lines += ["## ResNet-50, 3x224x224, random init (latency only)", ""]
        lines += table(report.get("resnet50_rows") or [], False)
        lines += ["", f"Pruned copy: {r50['made_with']}. `compress bench` rebuilt the dense model, exported both "
                  "to ONNX and quantized both to asymmetric QDQ INT8 itself (calibrated on random inputs: fine for "
                  "latency, says nothing about accuracy). File sizes: bench's cached ONNX files. Timing kept short "
                  f"for 2 cores: warm-up {cfg.get('warmup_runs')} runs / {cfg.get('warmup_s')} s, at least "
                  f"{cfg.get('min_runs')} runs and {cfg.get('min_time_s')} s per variant in {cfg.get('rounds')} "
                  "interleaved rounds; dense and pruned are interleaved within each precision cell. Speed-up = dense "
                  "fp32 median / row median (the same as bench's speedup_vs_dense_fp32).", ""]
    earlier = report.get("resnet50_earlier")
    if earlier:
        cfg = ((earlier.get("bench") or {}).get("config") or {}).get("timing") or {}
        lines += ["The first, shorter ResNet-50 bench (same command with warm-up "
                  f"{cfg.get('warmup_runs')} runs / {cfg.get('warmup_s')} s, at least {cfg.get('min_runs')} runs and "
                  f"{cfg.get('min_time_s')} s per variant in {cfg.get('rounds')} rounds), kept to show the spread:", ""]
        lines += table(report.get("resnet50_earlier_rows") or [], False)
        lines.append("")
    lines += ["## Reading", "", report.get("reading") or "(to be written after the run)", ""]
    lines += ["## Every command", "", "| step | command | rc | wall s |", "|---|---|---|---|"]
    for c in report["commands"]:
        wall = "reused from an earlier invocation" if c.get("reused") else _f(c["wall_s"], ".0f")
        lines.append(f"| {c['step']} | `{c['command']}` | {c['rc']} | {wall} |")
    lines += ["", "Load: the 1-minute load average before → after each command (2 cores; above ~2 means "
              "something else was running too): " + "; ".join(
                  f"{c['step']} {c['load_before']:.1f} → {c['load_after']:.1f}" for c in report["commands"]
                  if "load_before" in c) + ".", ""]
    lines += ["Paths are in the scratch folder given by --workdir (not committed); `compress` = "
              "`python -m compressor`."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="/tmp/int8-deploy", help="runs, exports and bench files go here")
    parser.add_argument("--reuse", action="store_true", help="reuse finished runs / model files in --workdir")
    parser.add_argument("--parts", default="resnet56,resnet50")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--train", type=int, default=2500, help="synthetic training images")
    parser.add_argument("--val", type=int, default=1000, help="synthetic validation images")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--r56-min-runs", type=int, default=50)
    parser.add_argument("--r56-min-time-s", type=float, default=2.0)
    parser.add_argument("--r56-rounds", type=int, default=5)
    parser.add_argument("--r50-warmup-runs", type=int, default=2)
    parser.add_argument("--r50-warmup-s", type=float, default=0.5)
    parser.add_argument("--r50-min-runs", type=int, default=6)
    parser.add_argument("--r50-min-time-s", type=float, default=1.0)
    parser.add_argument("--r50-rounds", type=int, default=3)
    parser.add_argument("--r50-timeout-s", type=float, default=900)
    parser.add_argument("--reading", help="a text file with the reading paragraph to put in the markdown")
    parser.add_argument("--append", action="store_true",
                        help="add this invocation's parts and commands to --out's existing json")
    parser.add_argument("--render-only", action="store_true",
                        help="rewrite the markdown from --out's json (with --reading), measuring nothing")
    parser.add_argument("--out", default="benchmarks/results/int8_cpu")
    args = parser.parse_args()
    if args.render_only:
        out = Path(args.out)
        report = json.loads(out.with_suffix(".json").read_text())
        if args.reading:
            report["reading"] = Path(args.reading).read_text().strip()
        for info in (report.get("resnet56") or {}).get("runs", {}).values():
            for attempt in info.get("exports", []):
                if attempt["int8"].get("agreement") is None and attempt["rc"] != 0:
                    attempt["int8"]["agreement"] = _agreement_from_error(attempt.get("error"))
                    attempt["int8"]["passed"] = False if attempt["int8"]["agreement"] is not None else None
        if report.get("resnet56"):
            report["resnet56_rows"] = r56_rows(report["resnet56"])
        if report.get("resnet50"):
            report["resnet50_rows"] = r50_rows(report["resnet50"])
        if report.get("resnet50_earlier"):
            report["resnet50_earlier_rows"] = r50_rows(report["resnet50_earlier"])
        if report.get("resnet56_repeat"):
            report["resnet56_repeat_rows"] = r56_rows({**report["resnet56"], **report["resnet56_repeat"]})
        atomic_write_text(out.with_suffix(".json"), json.dumps(report, indent=1, default=str))
        atomic_write_text(out.with_suffix(".md"), markdown(report))
        return
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {"script": "python -m benchmarks.int8_deploy " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
              "args": vars(args), "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
              "environment": describe(None), "versions": tool_versions(), "commands": []}
    if args.reading:
        report["reading"] = Path(args.reading).read_text().strip()

    def save() -> None:
        atomic_write_text(out.with_suffix(".json"), json.dumps(report, indent=1, default=str))
        atomic_write_text(out.with_suffix(".md"), markdown(report))

    rec = Recorder(report, save)
    parts = args.parts.split(",")
    if args.append and out.with_suffix(".json").is_file():  # add parts to an earlier invocation's report
        earlier = json.loads(out.with_suffix(".json").read_text())
        earlier.setdefault("appended", []).append({"script": report["script"], "started": report["started"]})
        report.clear()
        report.update(earlier)
    if "resnet56" in parts:
        report["resnet56"] = resnet56(args, rec, work)
        report["resnet56_rows"] = r56_rows(report["resnet56"])
        save()
    if "resnet56-bench-repeat" in parts:  # the same bench again, later: how far the shared machine moves it
        report["resnet56_repeat"] = bench56(args, rec, work, "-repeat")
        report["resnet56_repeat_rows"] = r56_rows({**report["resnet56"], **report["resnet56_repeat"]})
        save()
    if "percentile" in parts:
        report["resnet56_percentile"] = percentile_retry(args, rec, work)
        save()
    if "resnet50" in parts:
        if report.get("resnet50"):  # an appended re-run keeps the earlier one beside it
            report["resnet50_earlier"] = report.pop("resnet50")
            report["resnet50_earlier_rows"] = report.pop("resnet50_rows", None)
        report["resnet50"] = resnet50(args, rec, work)
        report["resnet50_rows"] = r50_rows(report["resnet50"])
    report["finished" if not args.append else "appended_finished"] = time.strftime("%Y-%m-%d %H:%M:%S UTC",
                                                                                     time.gmtime())
    save()
    print(markdown(report))


if __name__ == "__main__":
    main()
