"""Output directories: an unusable --out is one line before any work, a directory that is
not ours is never written into without --overwrite, writes never go through a symlink
out of the directory, and a killed process's temp files are removed on the next start.

Every case asserts the exit code, the one line, and that nothing outside the output
directory changed (a snapshot of the whole temp tree before and after).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from compressor.plan import PruningPlan
from compressor.serialization import ModelSpec, save_pruned
from compressor.zoo import build
from exporters.manifest import foreign_files
from exporters.pipeline import ARTIFACT_NAMES
from tests.hostile import TINY, invoke, one_line_error, snapshot

pytestmark = pytest.mark.usefixtures("one_torch_thread")



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


@pytest.mark.parametrize("option", ["--out", "--json"])
def test_bench_refuses_an_unwritable_output_before_timing(tmp_path, afile, model_file, option):
    target = afile / "sub" if option == "--out" else afile / "sub" / "bench.json"
    before = snapshot(tmp_path), snapshot(model_file.parent)
    result = invoke("bench", str(model_file), "--backend", "torch", "--batch-size", "1", option, str(target))
    one_line_error(result, "cannot write to bench output directory", "Not a directory")
    # Nothing timed: timing would have made the model's bench cache next to it.
    assert (snapshot(tmp_path), snapshot(model_file.parent)) == before


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
    for command in ("prune", "export"):
        result = invoke(command, "--help")
        assert result.exit_code == 0 and "--overwrite" in result.output, command
