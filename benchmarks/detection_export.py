"""`compress export NAME` for every torchvision detection and segmentation model.

Dense, random init (nothing is downloaded), at a small input (128x128; SSD300 at its own
300x300), batch 1 through the parity gate at its default tolerance.  Each row is the
command's verdict: exported (the gate passed on every output), refused by the gate (with
its figure), or refused before export (the R-CNN family, in one line).

    python -m benchmarks.detection_export --out benchmarks/results/detection_export
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torchvision

from benchmarks.int8_deploy import Recorder
from compressor.atomic import atomic_write_text
from compressor.bench.environment import describe

SIZES = {"ssd300_vgg16": "3,300,300"}


def names() -> list[str]:
    models = torchvision.models
    return models.list_models(module=models.detection) + models.list_models(module=models.segmentation)


def one_model(name: str, rec: Recorder, work: Path) -> dict:
    size = SIZES.get(name, "3,128,128")
    out = work / name
    entry = rec.run(["export", name, "--input-size", size, "--max-batch", "1", "--out", str(out)], name,
                    work / f"{name}.log")
    row = {"model": name, "input_size": size, "rc": entry["rc"], "wall_s": entry["wall_s"]}
    manifest = next((out / f for f in ("manifest.json", "manifest.json.failed") if (out / f).is_file()), None)
    if manifest is None:
        errors = [line for line in entry["stderr_tail"].splitlines() if line.startswith("Error: ")]
        return {**row, "verdict": "refused", "reason": errors[-1][len("Error: "):] if errors else "no manifest"}
    data = json.loads(manifest.read_text())
    parity = data["parity"]
    post = (data.get("bundle") or {}).get("postprocessing")
    return {**row, "verdict": "exported" if data["status"] == "ok" else "refused by the gate",
            "outputs": [o["name"] for o in data["outputs"] or []], "max_rel_err": parity.get("max_rel_err"),
            "network_input": post["network_input"] if post else None, "reason": data.get("error")}


def table(rows: list[dict]) -> str:
    lines = ["| model | input | verdict | outputs | gate max rel err | s | reason |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        err = f"{row['max_rel_err']:.1e}" if row.get("max_rel_err") is not None else ""
        reason = (row.get("reason") or "").replace("|", "/")
        lines.append(f"| {row['model']} | {row['input_size']} | {row['verdict']} | {', '.join(row.get('outputs') or [])} "
                     f"| {err} | {row['wall_s']:.0f} | {reason} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=None)
    parser.add_argument("--out", default="benchmarks/results/detection_export")
    args = parser.parse_args()
    report = {"environment": describe(None), "rows": [], "commands": []}

    def save() -> None:
        env = report["environment"]
        versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
        counts = {v: sum(r["verdict"] == v for r in report["rows"]) for v in
                  ("exported", "refused by the gate", "refused")}
        atomic_write_text(Path(f"{args.out}.json"), json.dumps(report, indent=1))
        atomic_write_text(Path(f"{args.out}.md"), (
            "# `compress export` of torchvision's detection and segmentation models\n\n"
            "Dense, random init, batch 1, the parity gate at its default tolerance (atol 1e-4, rtol 1e-3 per "
            "element, every output). A detector is exported as its network (backbone, neck, head; post-processing "
            f"outside, described in the manifest). {env['cpu']}, {env['usable_cores']} usable cores; {versions}.\n\n"
            f"`python -m benchmarks.detection_export --out {args.out}`\n\n"
            f"{counts['exported']} exported, {counts['refused by the gate']} refused by the gate, "
            f"{counts['refused']} refused before export.\n\n" + table(report["rows"]) + "\n"))

    rec = Recorder(report, save)
    with tempfile.TemporaryDirectory(prefix="detection-export-") as folder:
        for name in args.models or names():
            report["rows"].append(one_model(name, rec, Path(folder)))
            save()


if __name__ == "__main__":
    main()
