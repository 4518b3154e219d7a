"""Every example in README.md (and docs/*.md) runs as written, so none can rot.

Each fenced shell (bash, sh, shell, console, zsh, fish) or Python block is, by the HTML comment
right before it:
  * nothing: run here, every such block of a file in order, in one fresh directory, as a reader
    following the README would (a prune, then an export of its run); a block that fails fails
    the test;
  * ``<!-- readme-test: run by tests/PATH.py (note) -->``: another test already runs it (the
    expensive ones: the detector loop, the bundle script on an exported image-folder run), so
    it is not run twice; the named test file must exist and find this block, by a marker
    before it (``<!-- detector-example -->``) or by its section heading;
  * ``<!-- readme-test: skip (REASON) -->``: it cannot run here (the package registry, a
    dataset download, TensorRT, another shell); the reason is required;
  * ``<!-- readme-test: run from "TEXT" (REASON) -->``: run from the first ``TEXT`` on, what
    comes before it cannot run here (the quickstart's one command installs, then runs the main
    job: the install needs the registry, the job runs).
Any other ``readme-test:`` comment, one that no block follows, or a skip without a reason fails.

The blocks run at test size through the environment, not edited: every ``compress`` option
can be set as ``COMPRESS_<COMMAND>_<OPTION>`` (the CLI group's auto_envvar_prefix), so
``COMPRESS_PRUNE_EPOCHS=2`` shortens the quickstart's ``compress prune`` the way a user may.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# The program that runs each kind of block; other fences (text, toml, json) are not examples.
RUNNERS = {"bash": ["bash", "-e", "-o", "pipefail"], "sh": ["bash", "-e", "-o", "pipefail"],
           "shell": ["bash", "-e", "-o", "pipefail"], "console": ["bash", "-e", "-o", "pipefail"],
           "zsh": ["zsh", "-e"], "fish": ["fish"], "python": [sys.executable], "py": [sys.executable]}

# The README's commands at test size (each variable is the option it names). The quickstart's
# prune still trains ResNet-20 on the shipped digits and prunes it (by the cap, after epoch 1 of 2);
# bench times every cell, a few runs each.
SMALL = {
    "COMPRESS_PRUNE_EPOCHS": "2",
    "COMPRESS_BENCH_WARMUP_S": "0", "COMPRESS_BENCH_WARMUP_RUNS": "1", "COMPRESS_BENCH_MIN_RUNS": "3",
    "COMPRESS_BENCH_MIN_TIME_S": "0", "COMPRESS_BENCH_ROUNDS": "1", "COMPRESS_BENCH_THREADS": "1",
    "COMPRESS_RUN_EPOCHS": "2", "COMPRESS_RUN_WARMUP_S": "0", "COMPRESS_RUN_WARMUP_RUNS": "1",
    "COMPRESS_RUN_MIN_RUNS": "3", "COMPRESS_RUN_MIN_TIME_S": "0", "COMPRESS_RUN_ROUNDS": "1", "COMPRESS_RUN_THREADS": "1",
    "OMP_NUM_THREADS": "1",
}

HEADING = re.compile(r"^#{1,6} ")
FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[\w+-]*)\s*$")
COMMENT = re.compile(r"^\s*<!--\s*(?P<text>.*?)\s*-->\s*$")
MARKER = re.compile(r"readme-test:\s*(?:(?P<skip>skip)\s*\((?P<reason>[^()]*(?:\([^()]*\)[^()]*)*)\)"
                    r"|run by (?P<path>tests/[\w/.-]+\.py)(?:\s*\((?P<note>.+)\))?"
                    r"|run from \"(?P<start>[^\"]+)\"\s*\((?P<why>[^()]+)\))\s*$")


@dataclass(frozen=True)
class Block:
    document: Path
    line: int  # of the opening fence, from 1
    lang: str
    code: str
    comments: tuple[str, ...]  # the HTML comments right before the fence, in order
    section: str  # the heading line of the section it is in

    @property
    def where(self) -> str:
        return f"{self.document.relative_to(ROOT)}:{self.line}"

    @property
    def marker(self) -> str | None:
        found = [c for c in self.comments if c.startswith("readme-test:")]
        assert len(found) <= 1, f"{self.where}: more than one readme-test marker"
        return found[0] if found else None


def blocks(document: Path) -> list[Block]:
    """Every fenced block of ``document``, dedented (blocks inside list items are indented)."""
    lines, found, section, i = document.read_text().splitlines(), [], "", 0
    while i < len(lines):
        if HEADING.match(lines[i]):
            section = lines[i]
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, start = opening["indent"], i
        comments, j = [], i - 1
        while j >= 0 and COMMENT.match(lines[j]):
            comments.insert(0, COMMENT.match(lines[j])["text"])
            j -= 1
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            i += 1
        assert i < len(lines), f"{document.name}:{start + 1}: a fence that is never closed"
        body = [line[len(indent):] if line.startswith(indent) else line.lstrip() for line in lines[start + 1:i]]
        found.append(Block(document, start + 1, opening["lang"], "\n".join(body) + "\n", tuple(comments), section))
        i += 1
    return found


def examples() -> list[Block]:
    return [b for document in DOCUMENTS for b in blocks(document) if b.lang in RUNNERS]


def run_from(block: Block) -> str | None:
    """Where a ``run from`` marker starts the block (None: another marker, or none)."""
    match = MARKER.fullmatch(block.marker) if block.marker else None
    return match["start"] if match else None


def to_run() -> list[Block]:
    return [b for b in examples() if b.marker is None or run_from(b)]


def code_to_run(block: Block) -> str:
    start = run_from(block)
    if start is None:
        return block.code
    assert start in block.code, f"{block.where}: its marker runs it from {start!r}, which it does not contain"
    return block.code[block.code.index(start):]


def script(block: Block) -> str:
    """A console block's commands are its ``$ `` lines (the rest is their output)."""
    if block.lang != "console":
        return code_to_run(block)
    return "".join(line[2:] + "\n" for line in code_to_run(block).splitlines() if line.startswith("$ "))


# -- the markers say what they mean --------------------------------------------------------------
def test_every_marker_is_well_formed_and_sits_on_an_example():
    for document in DOCUMENTS:
        attached = [(b, c) for b in blocks(document) for c in b.comments if c.startswith("readme-test:")]
        for block, comment in attached:
            match = MARKER.fullmatch(comment)
            assert match, f"{block.where}: malformed marker {comment!r}; use 'readme-test: skip (REASON)' or " \
                          "'readme-test: run by tests/PATH.py'"
            assert match["path"] or match["start"] or match["reason"].strip(), \
                f"{block.where}: a skip marker needs its reason"
            assert block.lang in RUNNERS, f"{block.where}: a marker on a ```{block.lang} block, which is never run"
        every = len(re.findall(r"<!--\s*readme-test:", document.read_text()))
        assert every == len(attached), f"{document.name}: a readme-test marker with no example right after it"


def test_a_block_run_elsewhere_names_a_test_that_reads_it():
    shared = [b for b in examples() if b.marker and MARKER.fullmatch(b.marker)["path"]]
    assert shared, "the README's expensive examples are run by their own tests"
    for block in shared:
        test_file = ROOT / MARKER.fullmatch(block.marker)["path"]
        assert test_file.is_file(), f"{block.where}: {test_file.relative_to(ROOT)} does not exist"
        source = test_file.read_text()
        anchors = [f"<!-- {c} -->" for c in block.comments if not c.startswith("readme-test:")]
        assert any(anchor in source for anchor in [*anchors, block.section]), \
            f"{block.where}: {test_file.name} names neither this block's marker nor its section {block.section!r}"


def test_the_parser_sees_the_readme_examples():
    """Guards the guard: the blocks found are the README's, indented ones included."""
    readme = [b for b in examples() if b.document.name == "README.md"]
    assert any(code_to_run(b).startswith("compress prune && compress export") for b in to_run())
    assert any("PruningCallback" in b.code and b.code.startswith("import lightning") for b in readme)
    assert all(not b.code.startswith(" ") for b in readme)


# -- and every unmarked example runs, in order, in one directory ---------------------------------
def test_the_examples_run_as_written(tmp_path):
    work, scripts = tmp_path / "work", tmp_path / "scripts"
    work.mkdir(), scripts.mkdir()
    printed = {}
    env = {**os.environ, **SMALL, "XDG_CACHE_HOME": str(tmp_path / "cache"),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    for number, block in enumerate(to_run()):
        file = scripts / f"block{number}.{'py' if RUNNERS[block.lang][0] == sys.executable else 'sh'}"
        file.write_text(script(block))
        done = subprocess.run([*RUNNERS[block.lang], str(file)], cwd=work, env=env, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, f"{block.where} ({block.lang}) failed:\n{block.code}\n{done.stdout[-3000:]}" \
                                     f"\n{done.stderr[-3000:]}"
        printed[code_to_run(block)] = done.stdout
    [quickstart] = [out for code, out in printed.items() if code.startswith("compress prune && compress export")]
    _check_the_quickstart(work, quickstart)


def _check_the_quickstart(work: Path, printed: str) -> None:
    """What the quickstart's prune -> export -> bench printed and left: each command's start line
    once, and bench's figures are the run's own."""
    for command in ("prune", "export", "bench"):
        assert printed.count(f"compress {command}: ") == 1, printed
    assert "efficiency" in printed and "resnet20 pruned" in printed
    run = work / "runs" / "resnet20-ocs"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["pruned_macs"] < summary["dense_macs"]
    assert json.loads((run / "export" / "manifest.json").read_text())["status"] == "ok"
    report = json.loads((run / "bench" / "bench.json").read_text())
    assert {r["backend"] for r in report["records"]} == {"torch", "onnxruntime"}
    for pruned in (r for r in report["records"] if r["variant"] == "pruned"):
        dense = next(r for r in report["records"] if r["variant"] == "dense" and r["backend"] == pruned["backend"]
                     and r["batch_size"] == pruned["batch_size"])
        assert (dense["macs"], pruned["macs"]) == (summary["dense_macs"], summary["pruned_macs"])
        assert pruned["speedup"] == pytest.approx(dense["median_ms"] / pruned["median_ms"])
        assert pruned["efficiency"] == pytest.approx(pruned["speedup"] / (dense["macs"] / pruned["macs"]))
