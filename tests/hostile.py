"""What the hostile-input, trust-boundary, output-directory, eval and export tests share: a
tiny run's options, an in-process CLI call, the one-line-error checks and a tree snapshot
that proves nothing outside the output directory changed."""
from __future__ import annotations

import os
from pathlib import Path

from click.testing import CliRunner, Result

from compressor.cli import main

TINY = ["--model", "resnet20", "--dataset", "synthetic", "--synthetic-train", "64", "--synthetic-val", "32", "--batch-size", "32",
        "--epochs", "2", "--monitor-start", "1", "--max-prune-epoch", "1", "--no-progress"]


def invoke(*args) -> Result:
    """``compress ARGS`` in-process; paths and numbers are passed as their text."""
    return CliRunner().invoke(main, [str(arg) for arg in args])


def one_line_error(result: Result, *hints: str) -> str:
    """Exit 1 and exactly one line of output (stdout and stderr), an ``Error:`` line holding every hint."""
    line = assert_one_line_error(result, 1, *hints)
    assert result.output.strip() == line, result.output
    return line


def assert_one_line_error(result: Result, exit_code: int, *hints: str) -> str:
    """Exit ``exit_code`` through SystemExit, no traceback, exactly one 'Error:' line on stderr holding
    every hint; with exit 1 (not a usage error) that line is all of stderr."""
    assert result.exit_code == exit_code, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    for hint in hints:
        assert hint in errors[0], errors[0]
    if exit_code == 1:
        assert result.stderr.strip() == errors[0], result.stderr
    return errors[0]


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


def set_key(*keys_and_value):
    """An edit of a nested dict (a checkpoint's payload): ``set_key("a", "b", 1)`` sets ``d["a"]["b"] = 1``."""
    *keys, value = keys_and_value

    def edit(payload):
        target = payload
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value

    return edit
