"""How long ``compress --help`` and ``compress COMMAND --help`` take, and what they import.

Each help command runs as a fresh subprocess (``python -m compressor ... --help``)
``--runs`` times; the median and minimum wall time are reported, together with the
heavy modules (torch, ONNX, the engine, ...) that the help text pulled in, read from
``sys.modules`` of one more run, and the slowest top-level imports from
``python -X importtime``.  ``--baseline REV`` measures a ``git worktree`` of REV the
same way (its own source tree, this interpreter and site-packages), so a before/after
comparison is one command::

    python -m benchmarks.cli_startup --runs 5 --baseline HEAD~3 --out benchmarks/results/cli_startup

Wall time depends on the machine and its load (the load average is recorded); the
test suite asserts only the import behaviour (``tests/unit/test_cli_lazy_imports.py``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

from compressor.bench.environment import _cpu_model, usable_cores

REPO = Path(__file__).resolve().parents[1]
COMMANDS = ("", "models", "info", "prune", "export", "bench")
HEAVY = ("torch", "torchvision", "numpy", "onnx", "onnxruntime", "onnxscript", "onnxsim", "tensorrt", "timm",
         "matplotlib", "lightning", "compressor.engine.analysis", "compressor.export.pipeline", "compressor.bench.backends")
# Runs the CLI in-process the way `python -m compressor` does, then reports what got imported.
PROBE = """
import json, runpy, sys
sys.argv = ["compress", *{args!r}]
try:
    runpy.run_module("compressor", run_name="__main__", alter_sys=True)
except SystemExit:
    pass
heavy = [name for name in {heavy!r} if name in sys.modules]
sys.stderr.write("PROBE " + json.dumps({{"heavy": heavy, "file": sys.modules["compressor"].__file__}}) + "\\n")
"""


def _argv(command: str) -> list[str]:
    return [command, "--help"] if command else ["--help"]


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}


def time_help(tree: Path, command: str, runs: int) -> list[float]:
    """Wall seconds of ``python -m compressor [COMMAND] --help`` run from ``tree``."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "compressor", *_argv(command)], cwd=tree, env=_env(),
                              capture_output=True, text=True, timeout=300)
        times.append(time.perf_counter() - started)
        if done.returncode != 0:
            raise RuntimeError(f"compress {command} --help failed in {tree}: {done.stderr[-500:]}")
    return times


def heavy_imports(tree: Path, command: str) -> tuple[list[str], str]:
    """The heavy modules in ``sys.modules`` after the help text, and which compressor ran."""
    code = PROBE.format(args=_argv(command), heavy=HEAVY)
    done = subprocess.run([sys.executable, "-c", code], cwd=tree, env=_env(), capture_output=True, text=True,
                          timeout=300)
    line = next(line for line in done.stderr.splitlines() if line.startswith("PROBE "))
    found = json.loads(line[len("PROBE "):])
    return found["heavy"], found["file"]


def slowest_imports(tree: Path, command: str, top: int = 5) -> list[dict]:
    """The top-level imports with the largest cumulative time (``-X importtime``)."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "compressor", *_argv(command)], cwd=tree,
                          env=_env(), capture_output=True, text=True, timeout=300)
    rows = []
    for line in done.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            name = parts[2].rstrip()
            if len(name) - len(name.lstrip()) <= 3:  # depth 0 and 1 only: what the CLI itself asked for
                rows.append({"module": name.strip(), "cumulative_ms": round(int(parts[1]) / 1000, 1)})
    return sorted(rows, key=lambda r: -r["cumulative_ms"])[:top]


def measure(tree: Path, runs: int) -> list[dict]:
    results = []
    for command in COMMANDS:
        times = time_help(tree, command, runs)
        heavy, source = heavy_imports(tree, command)
        results.append({
            "command": f"compress {command} --help".replace("  ", " "),
            "median_s": round(statistics.median(times), 3),
            "min_s": round(min(times), 3),
            "runs": runs,
            "heavy_modules": heavy,
            "slowest_imports": slowest_imports(tree, command),
            "compressor_from": source,
        })
    return results


@contextmanager
def worktree(rev: str):
    """A throw-away checkout of ``rev`` (run from it, its compressor shadows the editable install)."""
    with tempfile.TemporaryDirectory() as parent:
        path = Path(parent) / "tree"
        subprocess.run(["git", "worktree", "add", "--detach", str(path), rev], cwd=REPO, check=True,
                       capture_output=True)
        try:
            yield path
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=REPO, capture_output=True)


def machine() -> dict:
    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    return {
        "cpu": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable_cores(),
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": version("torch"),
        "click": version("click"),
    }


def _git_rev(tree: Path) -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=tree, capture_output=True,
                          text=True).stdout.strip()


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        "# `compress --help` start-up time",
        "",
        f"`{report['command']}`",
        "",
        f"Machine: {m['cpu']}, {m['usable_cores']} usable of {m['logical_cores']} logical cores, "
        f"load average {m['load_average']} at the start (other jobs shared the CPU), Python {m['python']}, "
        f"torch {m['torch']}, click {m['click']}, {m['platform']}.",
        "",
        f"Each command: {report['runs']} fresh subprocesses, wall time.  Heavy modules: those of "
        f"`{', '.join(HEAVY)}` in `sys.modules` after the help text was printed.",
        "",
    ]
    for tree in report["trees"]:
        lines += [f"## {tree['label']} ({tree['rev']})", "",
                  "| command | median s | min s | heavy modules imported | slowest top-level imports (cumulative ms) |",
                  "|---|---:|---:|---|---|"]
        for row in tree["results"]:
            heavy = ", ".join(row["heavy_modules"]) or "none"
            slow = ", ".join(f"{r['module']} {r['cumulative_ms']:.0f}" for r in row["slowest_imports"][:3])
            lines.append(f"| `{row['command']}` | {row['median_s']:.2f} | {row['min_s']:.2f} | {heavy} | {slow} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--baseline", help="also measure this git revision (e.g. the commit before the change)")
    parser.add_argument("--out", default="benchmarks/results/cli_startup", help="writes OUT.json and OUT.md")
    args = parser.parse_args()
    report = {"command": "python -m benchmarks.cli_startup " + " ".join(sys.argv[1:]), "runs": args.runs,
              "machine": machine(), "trees": []}
    if args.baseline:
        with worktree(args.baseline) as tree:
            report["trees"].append({"label": "before", "rev": _git_rev(tree),
                                    "results": measure(tree, args.runs)})
    report["trees"].append({"label": "this tree", "rev": _git_rev(REPO), "results": measure(REPO, args.runs)})
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
