"""The form the coverage benchmarks write their results in: one markdown page (a title, a few
paragraphs, one table) and its JSON twin, ``<out>.md`` and ``<out>.json``.

Shared by ``benchmarks.coverage`` (torchvision classifiers), ``benchmarks.timm_coverage`` and
``benchmarks.detection_coverage``; each says what its columns and paragraphs are.
"""
from __future__ import annotations

import json
import platform

import torch


def machine() -> str:
    """Where the table was made, as its paragraph says it: ``x86_64, 2 threads``."""
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def markdown(title: str, paragraphs: list[str], columns: list[str], rows: list[list[str]]) -> str:
    """``# title``, each paragraph followed by a blank line, then the table: one row of cells a record."""
    lines = [f"# {title}", ""]
    for paragraph in paragraphs:
        lines += [paragraph, ""]
    lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write(out: str, page: str, records: list[dict]) -> None:
    """``<out>.md`` holds the page, ``<out>.json`` the records (indent 1)."""
    with open(f"{out}.md", "w") as handle:
        handle.write(page)
    with open(f"{out}.json", "w") as handle:
        json.dump(records, handle, indent=1)
