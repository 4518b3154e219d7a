"""Output directories: an unusable --out is one line before any work, a directory that is
not ours is never written into without --overwrite, writes never go through a symlink
out of the directory, and a killed process's temp files are removed on the next start.

Every case asserts the exit code, the one line, and that nothing outside the output
directory changed (a snapshot of the whole temp tree before and after).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from compressor.engine.plan import PruningPlan
from compressor.runfiles.modelfile import ModelSpec, save_pruned
from compressor.models.zoo import build
from compressor.export.manifest import foreign_files
from compressor.export.pipeline import ARTIFACT_NAMES
from tests.hostile import TINY, invoke, one_line_error, snapshot

pytestmark = pytest.mark.usefixtures("one_torch_thread")
BENCH_FAST = ["--batch-size", "1", "--warmup-s", "0", "--warmup-runs", "1", "--min-runs", "3", "--min-time-s", "0",
              "--rounds", "1", "--threads", "1"]



@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    spec = ModelSpec("resnet20", 10, (3, 32, 32))
    model = build("resnet20", 10)
    return save_pruned(tmp_path_factory.mktemp("model") / "r20.pt", model, spec,
                       PruningPlan.dense(spec.analyse(model)))


@pytest.fixture
def afile(tmp_path) -> Path:
    path = tmp_path / "afile"
    path.write_text("mine")
    return path


# -- unwritable: one line before any work --------------------------------------------------------------
@pytest.mark.parametrize("where", ["afile/sub", "/proc/x"])
def test_prune_refuses_an_unwritable_out_before_training(tmp_path, afile, where):
    out = str(tmp_path / where) if where.startswith("afile") else where
    before = snapshot(tmp_path)
    one_line_error(invoke("prune", *TINY, "--out", out), "cannot write to --out", out)
    assert snapshot(tmp_path) == before and not Path(where).exists()


@pytest.mark.parametrize("option, where, reason", [
    ("--out", "afile/sub", "Not a directory"),
    ("--out", "/proc/x", ""),
    ("--json", "afile/sub/bench.json", "Not a directory"),
    ("--markdown", "afile/sub/bench.md", "Not a directory"),
    ("--plot", "afile/sub/bench.png", "Not a directory"),
])
def test_bench_refuses_an_unwritable_output_before_timing(tmp_path, afile, model_file, option, where, reason):
    target = str(tmp_path / where) if where.startswith("afile") else where
    before = snapshot(tmp_path), snapshot(model_file.parent)
    result = invoke("bench", str(model_file), "--backend", "torch,onnxruntime", *BENCH_FAST, option, target)
    directory = target if option == "--out" else str(Path(target).parent)
    one_line_error(result, "cannot write to bench output directory", directory, reason)
    # Nothing exported or timed: either would have made the model's bench cache next to it.
    assert (snapshot(tmp_path), snapshot(model_file.parent)) == before and not Path(where).exists()


def _model_in(folder: Path, model_file: Path, name: str = "r20.pt") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(model_file, folder / name))


@pytest.mark.parametrize("blocked", ["file", pytest.param("read-only", marks=pytest.mark.skipif(
    os.geteuid() == 0, reason="root writes into a read-only directory"))])
def test_bench_refuses_an_unwritable_cache_before_exporting(tmp_path, model_file, blocked):
    """The ONNX cache (beside the model) is an output too: checked before any export, and
    only when a backend needs exported files (torch alone never writes there)."""
    model = _model_in(tmp_path / "src", model_file)
    if blocked == "file":
        (model.parent / "r20-bench").write_text("mine")
    else:
        model.parent.chmod(0o555)
    try:
        before = snapshot(tmp_path, skip=tmp_path / "out")
        result = invoke("bench", str(model), "--backend", "onnxruntime", *BENCH_FAST, "--out", str(tmp_path / "out"))
        one_line_error(result, "cannot write to bench cache directory", str(model.parent / "r20-bench"))
        assert snapshot(tmp_path) == before  # nothing exported, nothing timed, no report
        result = invoke("bench", str(model), "--backend", "torch", *BENCH_FAST, "--out", str(tmp_path / "out"))
        assert result.exit_code == 0, result.output
        assert snapshot(tmp_path, skip=tmp_path / "out") == before
    finally:
        model.parent.chmod(0o755)


def test_bench_never_writes_through_a_planted_link(tmp_path, model_file):
    """Links to a file outside at every report name, at the names the old code staged
    to (bench.png.partial.png, X.raw.onnx, X.onnx.partial) and at the cached exports:
    with --overwrite (without it, bench refuses: tests/e2e/test_hostile_outputs.py) each is
    replaced by bench's own file, the file outside is never written."""
    from compressor.bench.subjects import _digest

    model = _model_in(tmp_path / "src", model_file)
    victim = tmp_path / "victim"
    victim.write_text("someone else's file\n")
    out, cache = model.parent / "report", model.parent / "r20-bench" / "cache" / _digest(model)
    planted = [out / name for name in ("bench.json", "bench.md", "bench.png", "bench.png.partial.png")]
    planted += [cache / f"resnet20-{variant}{suffix}" for variant in ("dense", "pruned")
                for suffix in (".onnx", ".raw.onnx", ".onnx.partial")]
    planted += [cache / ".resnet20-dense.onnx.record.json"]
    for link in planted:
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(victim)
    outside = snapshot(tmp_path, skip=model.parent)
    result = invoke("bench", str(model), "--backend", "torch,onnxruntime", *BENCH_FAST, "--out", str(out),
                    "--overwrite")
    assert result.exit_code == 0, result.output
    assert victim.read_bytes() == b"someone else's file\n" and snapshot(tmp_path, skip=model.parent) == outside
    written = [out / "bench.json", out / "bench.md", out / "bench.png", cache / "resnet20-dense.onnx",
               cache / "resnet20-pruned.onnx", cache / ".resnet20-dense.onnx.record.json"]
    assert not any(path.is_symlink() for path in written) and all(path.is_file() for path in written)
    assert json.loads((out / "bench.json").read_text())["records"]
    assert (out / "bench.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("backend, where", [("torch", "bench"), ("onnxruntime", "bench/cache")])
def test_bench_refuses_a_link_at_a_directory_it_names_itself(tmp_path, model_file, backend, where):
    """RUN/bench (the default --out) and RUN/bench/cache are bench's own names: a link
    there would carry every write out of the run directory."""
    run = tmp_path / "run"
    _model_in(run, model_file, "model.pt")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (run / where).parent.mkdir(parents=True, exist_ok=True)
    (run / where).symlink_to(elsewhere)
    out = [] if where == "bench" else ["--out", str(tmp_path / "out")]
    before = snapshot(tmp_path)
    result = invoke("bench", str(run), "--backend", backend, *BENCH_FAST, *out)
    one_line_error(result, "is a symbolic link", str(run / where))
    assert snapshot(tmp_path) == before


def test_export_refuses_an_unwritable_out_before_exporting(tmp_path, afile):
    before = snapshot(tmp_path)
    one_line_error(invoke("export", "resnet20", "--out", str(afile / "sub")), "cannot write", "Not a directory")
    assert snapshot(tmp_path) == before


# -- not ours: refused without --overwrite ------------------------------------------------------------
def test_fresh_run_refuses_a_directory_that_is_not_a_run(tmp_path):
    out = tmp_path / "theirs"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"their": "line"}')  # no newline: the old code cut it off
    (out / "notes.txt").write_text("keep me")
    before = snapshot(tmp_path)
    one_line_error(invoke("prune", *TINY, "--out", str(out)), "is not empty", "metrics.jsonl", "--overwrite")
    assert snapshot(tmp_path) == before


def test_overwrite_never_writes_through_a_symlink_and_clears_stale_temps(tmp_path):
    out = tmp_path / "reused"
    out.mkdir()
    victim = tmp_path / "victim.jsonl"
    victim.write_text("someone else's file\n")
    (out / "metrics.jsonl").symlink_to(victim)
    (out / "run.png").symlink_to(victim)
    (out / "notes.txt").write_text("keep me")
    stale = [out / ".checkpoint.pt.k1ll3d.tmp", out / ".model.pt.k1ll3d.tmp", out / ".model.onnx.staging"]
    for path in stale:
        path.write_bytes(b"half")
    outside = snapshot(tmp_path, skip=out)
    result = invoke("prune", *TINY, "--out", str(out), "--overwrite")
    assert result.exit_code == 0, result.output
    assert snapshot(tmp_path, skip=out) == outside and victim.read_text() == "someone else's file\n"
    assert not (out / "metrics.jsonl").is_symlink() and not (out / "run.png").is_symlink()
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2  # its own two epochs, nothing else
    assert not any(path.exists() for path in stale) and (out / "notes.txt").read_text() == "keep me"


def test_export_never_replaces_files_it_did_not_write(tmp_path):
    out = tmp_path / "deploy"
    out.mkdir()
    (out / "model.onnx").write_text("my own model")
    (out / "manifest.json").write_text('{"mine": true}')
    before = snapshot(tmp_path)
    line = one_line_error(invoke("export", "resnet20", "--out", str(out), "--no-simplify"), "--overwrite")
    assert "manifest.json" in line and "model.onnx" in line
    assert snapshot(tmp_path) == before


def test_export_overwrite_and_stale_staging_links(tmp_path):
    out = tmp_path / "deploy"
    out.mkdir()
    victim = tmp_path / "victim.onnx"
    victim.write_text("not yours")
    (out / "model.onnx").write_text("my own model")
    (out / ".model.onnx.staging").symlink_to(victim)  # a killed export's leftover, pointing out
    outside = snapshot(tmp_path, skip=out)
    result = invoke("export", "resnet20", "--out", str(out), "--no-simplify", "--overwrite")
    assert result.exit_code == 0, result.output
    assert snapshot(tmp_path, skip=out) == outside and victim.read_text() == "not yours"
    assert not (out / ".model.onnx.staging").is_symlink()
    # Its own export is ours: its manifest vouches for every file, so a re-export needs no --overwrite.
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.onnx"]
    assert foreign_files(out, ARTIFACT_NAMES) == []


def test_help_explains_overwrite():
    for command in ("prune", "export", "bench", "eval"):
        result = invoke(command, "--help")
        assert result.exit_code == 0 and "--overwrite" in result.output, command
