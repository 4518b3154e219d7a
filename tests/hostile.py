"""What the hostile-input, trust-boundary and output-directory tests share: a tiny run's
options, an in-process CLI call, the one-line-error check and a tree snapshot that
proves nothing outside the output directory changed."""
from __future__ import annotations

import os
from pathlib import Path

from click.testing import CliRunner, Result

from compressor.cli import main

TINY = ["--model", "resnet20", "--synthetic-train", "64", "--synthetic-val", "32", "--batch-size", "32",
        "--epochs", "2", "--monitor-start", "0", "--max-prune-epoch", "0", "--no-progress"]


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def one_line_error(result: Result, *hints: str) -> str:
    """Exit 1 and exactly one line, an ``Error:`` line holding every hint."""
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in result.output, result.output
    for hint in hints:
        assert hint in lines[0], lines[0]
    return lines[0]


def snapshot(root: Path, skip: Path | None = None) -> dict:
    """Every path under ``root`` (links not followed): size, mtime, link target."""
    entries = {}
    for path in sorted(root.rglob("*")):
        if skip is not None and (path == skip or skip in path.parents):
            continue
        info = path.lstat()
        entries[str(path.relative_to(root))] = (info.st_size, info.st_mtime_ns,
                                                os.readlink(path) if path.is_symlink() else None)
    return entries
