"""report.md and report.html from the report dictionary (``collect``): the same tables in
both.  report.html stands alone: its PNGs are embedded as base64 data URIs, it has no
script and fetches nothing; every string from a file (model names, paths, reasons) is
HTML-escaped."""
from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_FIGURE_BYTES = 20 << 20  # a run's plots are ~100 KB; a larger file is not one of them
STYLE = ("body{font-family:sans-serif;max-width:72em;margin:2em auto;padding:0 1em}"
         "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:.25em .6em;text-align:right}"
         "td:first-child,th:first-child{text-align:left}img{max-width:100%}code{background:#f3f3f3}")


@dataclass(frozen=True)
class Table:
    title: str
    headers: tuple[str, ...]
    rows: list[tuple[str, ...]]
    note: str = ""


def tables(report: dict) -> list[Table]:
    return [_artifacts(report), _latency(report), _stages(report)]


def _percent(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def _millions(value) -> str:
    return "-" if value is None else f"{value / 1e6:.3f} M"


def _bytes(value) -> str:
    return "-" if value is None else f"{value / 1e6:.3f} MB" if value >= 1e5 else f"{value / 1e3:.1f} kB"


def _artifacts(report: dict) -> Table:
    rows = [(a["name"], a["file"] or "-", _bytes(a["bytes"]), _percent(a["top1"]), _percent(a["top5"]),
             _millions(a["macs"]), _millions(a["params"])) for a in report["artifacts"]]
    data, prune = report["eval"], report["prune"]
    note = (f"Top-1/top-5 (%): `compress eval` on {data['images']} {data['split']} images of {data['dataset']} "
            f"({report['files']['eval']}); MACs and params: {report['files']['summary']} and "
            f"{report['files']['manifest']}.")
    if prune["top1_before_prune"] is not None:
        note += (f" The dense baseline is not trained or evaluated on its own; the run's model scored "
                 f"{_percent(prune['top1_before_prune'])} % top-1 on the validation split just before the prune "
                 f"(epoch {prune['prune_epoch']}).")
    return Table("Artifacts", ("artifact", "file", "size", "top-1 %", "top-5 %", "MACs", "params"), rows, note)


def _latency(report: dict) -> Table:
    rows = []
    for artifact in report["artifacts"]:
        for cell in artifact["latency"]:
            dense = artifact["variant"] == "dense"
            rows.append((artifact["name"], cell["backend"], cell["precision"], str(cell["batch_size"]),
                         f"{cell['median_ms']:.3f}", f"{cell['p90_ms']:.3f}", f"{cell['throughput']:.1f}",
                         "baseline" if dense else _times(cell["speedup"]), _times(_vs_dense_fp32(cell, dense))))
    bench = report["bench"]
    note = (f"`compress bench` on {bench['device']} ({report['files']['bench']}); speed-up = dense median / this "
            "median at the same backend and batch, in the same precision, and against dense fp32.")
    skipped = {f"{s.get('backend')} {s.get('precision')}: {s.get('reason')}" for s in bench["skipped"]}
    if skipped:
        note += " Skipped: " + "; ".join(sorted(skipped)) + "."
    return Table("Latency", ("artifact", "backend", "precision", "batch", "median ms", "p90 ms", "images/s",
                             "speed-up vs dense", "vs dense fp32"), rows, note)


def _vs_dense_fp32(cell: dict, dense: bool):
    """bench.json names this figure for the other precisions only: in fp32 it is the speed-up itself."""
    if cell["precision"] != "fp32":
        return cell["speedup_vs_dense_fp32"]
    return None if dense else cell["speedup"]


def _times(value) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _stages(report: dict) -> Table:
    rows = [(name, record["finished_at"], record["command"]) for name, record in report["stages"].items()]
    return Table("Stages", ("stage", "finished (UTC)", "the same as"), rows)


def _title(report: dict) -> str:
    prune = report["prune"]
    return (f"compress run: {report['model']} on {report['dataset']}, {prune['schedule']} for {prune['epochs']} "
            f"epochs, -{prune['macs_reduction']:.1%} MACs")


def markdown(report: dict) -> str:
    lines = [f"# {_md(_title(report))}", "", f"Output directory: `{_md(report['out'])}`. Every figure is copied from "
             "the file its stage wrote (named under each table); nothing here is measured again.", ""]
    for table in tables(report):
        lines += [f"## {table.title}", "", "| " + " | ".join(table.headers) + " |", "|" + "---|" * len(table.headers)]
        lines += ["| " + " | ".join(_md(cell) for cell in row) + " |" for row in table.rows]
        lines += ["", _md(table.note), ""] if table.note else [""]
    if report["figures"]:
        lines += ["## Figures", ""] + [f"![{_md(name)}]({_md(name)})" for name in report["figures"]] + [""]
    return "\n".join(lines)


def _md(text: str) -> str:
    """A cell: a '|' from a file (a path, a model name) would split the row."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def page(report: dict, out: Path) -> str:
    title = html.escape(_title(report))
    parts = [f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title>"
             f"<style>{STYLE}</style></head><body>", f"<h1>{title}</h1>",
             f"<p>Output directory: <code>{html.escape(report['out'])}</code>. Every figure is copied from the file "
             "its stage wrote (named under each table); nothing here is measured again.</p>"]
    for table in tables(report):
        parts.append(f"<h2>{html.escape(table.title)}</h2><table><tr>"
                     + "".join(f"<th>{html.escape(h)}</th>" for h in table.headers) + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in table.rows]
        parts.append("</table>" + (f"<p>{html.escape(table.note)}</p>" if table.note else ""))
    figures = [(name, _data_uri(out / name)) for name in report["figures"]]
    if figures:
        parts.append("<h2>Figures</h2>")
        parts += [f"<figure><img alt=\"{html.escape(name)}\" src=\"{uri}\"><figcaption>{html.escape(name)}"
                  "</figcaption></figure>" for name, uri in figures if uri]
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _data_uri(path: Path) -> str | None:
    """The PNG inlined; anything else at that name (not a PNG, too large, a link) is left out."""
    if path.is_symlink() or not path.is_file() or path.stat().st_size > MAX_FIGURE_BYTES:
        return None
    data = path.read_bytes()
    if not data.startswith(PNG_SIGNATURE):
        return None
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def write_report(files, stages: dict, targets: list) -> list[Path]:
    """report.json, report.md and report.html (``targets``, in that order), each written atomically."""
    import json

    from compressor.atomic import atomic_write_text
    from compressor.report.collect import collect

    report = collect(files, stages)
    texts = [json.dumps(report, indent=1, allow_nan=False) + "\n", markdown(report), page(report, files.out)]
    return [atomic_write_text(path, text) for path, text in zip(targets, texts)]
