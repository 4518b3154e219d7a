"""Bench reports: the terminal table, JSON, markdown and a PNG chart.

The chart has one panel per batch size (latencies differ by orders of magnitude
between batch 1 and 32); in each, dense and pruned bars per backend, the measured
speed-up written above the pruned bar, and a tick at the latency the MACs ratio
would predict (dense / macs_ratio), so the gap between MACs and speed is visible.
"""
from __future__ import annotations

import json
from pathlib import Path

from compressor.bench.bench import BenchResult
from compressor.bench.timing import TIMER_WORDS
from compressor.atomic import atomic_write, atomic_write_text

COLUMNS = (
    ("model", "model", "{}"),
    ("backend", "backend", "{}"),
    ("prec", "precision", "{}"),
    ("batch", "batch_size", "{}"),
    ("median ms", "median_ms", "{:.3f}"),
    ("p90 ms", "p90_ms", "{:.3f}"),
    ("p99 ms", "p99_ms", "{:.3f}"),
    ("mean ± std ms", None, None),
    ("img/s", "throughput", "{:.0f}"),
    ("runs", "runs", "{}"),
    ("speedup", "speedup", "{:.2f}x"),
    ("MACs ratio", "macs_ratio", "{:.2f}x"),
    ("efficiency", "efficiency", "{:.2f}"),
    ("vs dense fp32", "speedup_vs_dense_fp32", "{:.2f}x"),
)


def _cell(record: dict, key: str | None, fmt: str | None) -> str:
    if key is None:
        return f"{record['mean_ms']:.3f} ± {record['std_ms']:.3f}"
    value = record.get(key)
    return "" if value is None else fmt.format(value)


def rows(result: BenchResult) -> list[list[str]]:
    return [[_cell(r, key, fmt) for _, key, fmt in COLUMNS] for r in result.records]


def format_table(result: BenchResult) -> str:
    header = [title for title, _, _ in COLUMNS]
    body = rows(result)
    widths = [max(len(h), *(len(row[i]) for row in body)) if body else len(h) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(c.ljust(w) if i < 4 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    lines = [line(header), line(["-" * w for w in widths])] + [line(row) for row in body]
    lines += _macs_note(result)
    lines += [f"skipped: {s['backend']} {s['precision']} batch {s['batch_size']} ({s['model']}): {s['reason']}" for s in _unique_skips(result)]
    return "\n".join(lines)


def _macs_note(result: BenchResult) -> list[str]:
    """Say where a given file's MACs come from: its ONNX graph (a manifest's claim is only checked
    against that count), not the PyTorch counter the model-pair rows use."""
    if any(r.get("macs_source") == "onnx-graph" for r in result.records):
        return ["MACs of ONNX/engine files: counted from their ONNX graphs (Conv, ConvTranspose, Gemm, MatMul)."]
    return []


def _unique_skips(result: BenchResult) -> list[dict]:
    """One line per (backend, precision, reason): a skipped backend skips every batch size."""
    seen, unique = set(), []
    for skip in result.skipped:
        key = (skip["backend"], skip["precision"], skip["reason"])
        if key not in seen:
            seen.add(key)
            unique.append({**skip, "batch_size": ",".join(str(s["batch_size"]) for s in result.skipped
                                                          if (s["backend"], s["precision"], s["reason"]) == key)})
    return unique


def environment_line(environment: dict) -> str:
    gpu = environment.get("gpu")
    versions = ", ".join(f"{k} {v}" for k, v in environment["versions"].items() if v)
    where = f"{gpu['name']} (driver {gpu.get('driver')}, CUDA {gpu.get('cuda')})" if gpu else "no GPU"
    return (f"{environment['cpu']}, {environment['usable_cores']} usable cores, {environment['threads']} threads; "
            f"{where}; {versions}")


def write_json(result: BenchResult, path: Path) -> Path:
    atomic_write_text(path, json.dumps(result.to_dict(), indent=1))
    return path


def format_markdown(result: BenchResult, title: str = "compress bench") -> str:
    header = [title for title, _, _ in COLUMNS]
    lines = [f"# {title}", "", f"Machine: {environment_line(result.environment)}", ""]
    timing = result.config["timing"]
    lines.append(
        f"Timing: device {result.config['device']}, warm-up >= {timing['warmup_runs']} runs and {timing['warmup_s']} s, "
        f">= {timing['min_runs']} runs and {timing['min_time_s']} s per variant in {timing['rounds']} interleaved rounds; "
        "speed-up = dense median / pruned median, efficiency = speed-up / MACs ratio."
    )
    timers = sorted({r["timer"] for r in result.records})
    if timers:
        lines.append("Clock: " + "; ".join(TIMER_WORDS.get(t, t) for t in timers) + ".")
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows(result)]
    note = _macs_note(result)
    lines += ["", *note] if note else []
    skips = _unique_skips(result)
    if skips:
        lines += ["", "Skipped:", ""]
        lines += [f"- {s['backend']} {s['precision']} batch {s['batch_size']}: {s['reason']}" for s in skips]
    return "\n".join(lines) + "\n"


def write_markdown(result: BenchResult, path: Path, title: str = "compress bench") -> Path:
    atomic_write_text(path, format_markdown(result, title))
    return path


def write_plot(result: BenchResult, path: Path, title: str = "compress bench") -> Path | None:
    if not result.records:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batches = sorted({r["batch_size"] for r in result.records})
    figure, axes = plt.subplots(1, len(batches), figsize=(5.5 * len(batches), 4.2), squeeze=False)
    for axis, batch in zip(axes[0], batches):
        _panel(axis, [r for r in result.records if r["batch_size"] == batch], batch)
    figure.suptitle(title)
    figure.tight_layout()
    try:  # into a stream, not a file name: savefig would follow a link planted at that name
        atomic_write(path, lambda stream: figure.savefig(stream, format="png", dpi=110))
    finally:
        plt.close(figure)
    return path


def _panel(axis, records: list[dict], batch: int) -> None:
    labels = list(dict.fromkeys(f"{r['backend']}\n{r['precision']}" for r in records))
    models = list(dict.fromkeys(r["model"] for r in records))
    width = 0.8 / max(len(models), 1)
    for m, model in enumerate(models):
        xs, heights = [], []
        for r in records:
            if r["model"] == model:
                xs.append(labels.index(f"{r['backend']}\n{r['precision']}") + (m - (len(models) - 1) / 2) * width)
                heights.append(r["median_ms"])
        axis.bar(xs, heights, width, label=model)
    for r in records:
        if r.get("speedup") is None:
            continue
        x = labels.index(f"{r['backend']}\n{r['precision']}") + (models.index(r["model"]) - (len(models) - 1) / 2) * width
        axis.annotate(f"{r['speedup']:.2f}x", (x, r["median_ms"]), ha="center", va="bottom", fontsize=8)
        if r.get("macs_ratio"):
            ideal = r["median_ms"] * r["speedup"] / r["macs_ratio"]  # dense median / MACs ratio
            axis.hlines(ideal, x - width / 2, x + width / 2, colors="black", linestyles="dashed",
                        label="dense / MACs ratio" if not axis.get_legend_handles_labels()[1].count("dense / MACs ratio") else None)
    axis.set_xticks(range(len(labels)), labels)
    axis.set_ylabel("median latency (ms)")
    axis.set_title(f"batch {batch}")
    axis.legend(fontsize=7)
