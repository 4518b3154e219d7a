"""Outputs never clobber, and careless or hostile options are one line (issue 26, items 1 and 7).

Every row is refused before any work: exit code, one ``Error:`` line holding the hints, and
nothing changed anywhere (a snapshot of the whole temp tree and of the model's folder before
and after).  Then a second bench of one run keeps the first's results, and ``--overwrite``
replaces them.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from compressor.engine.plan import PruningPlan
from compressor.models.zoo import build
from compressor.runfiles.modelfile import ModelSpec, save_pruned
from tests.hostile import TINY, assert_one_line_error, invoke, snapshot

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SYNTHETIC = ["--dataset", "synthetic", *TINY]  # the default dataset may change; these rows are about the options
BENCH = ["--backend", "torch", "--batch-size", "1", "--warmup-s", "0", "--warmup-runs", "1", "--min-runs", "3",
         "--min-time-s", "0", "--rounds", "1", "--threads", "1"]
LONG = "x" * 300  # one path component past every file system's 255


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    spec = ModelSpec("resnet20", 10, (3, 32, 32))
    model = build("resnet20", 10)
    return save_pruned(tmp_path_factory.mktemp("model") / "r20.pt", model, spec, PruningPlan.dense(spec.analyse(model)))


def _tiny_onnx(path: Path) -> Path:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["input"], ["output"])], "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 3, 8, 8])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


def _bench_into(*names: str, link: bool = False):
    """bench into an --out that already holds the user's files of bench's own names."""
    def make(tmp: Path, model: Path) -> list[str]:
        out = tmp / "reports"
        out.mkdir()
        for name in names:
            if link:
                (tmp / "victim").write_text("someone else's file")
                (out / name).symlink_to(tmp / "victim")
            else:
                (out / name).write_text("my own notes")
        return ["bench", str(model), *BENCH, "--out", str(out)]
    return make


def _bench_to(option: str, name: str = "mine.txt"):
    """bench --json/--markdown/--plot naming a file that exists."""
    def make(tmp: Path, model: Path) -> list[str]:
        (tmp / name).write_text("my own file")
        return ["bench", str(model), *BENCH, option, str(tmp / name), "--out", str(tmp / "reports")]
    return make


def _bench_deep_manifest(tmp: Path, model: Path) -> list[str]:
    folder = tmp / "export"
    folder.mkdir()
    _tiny_onnx(folder / "model.onnx")
    (folder / "manifest.json").write_text("[" * 200_000 + "]" * 200_000)
    return ["bench", str(folder / "model.onnx"), *BENCH, "--backend", "onnxruntime", "--out", str(tmp / "reports")]


def _config(data: bytes, *extra: str):
    def make(tmp: Path, model: Path) -> list[str]:
        (tmp / "config.yaml").write_bytes(data)
        return ["prune", "--config", str(tmp / "config.yaml"), *SYNTHETIC, *extra, "--out", str(tmp / "out")]
    return make


def _args(*args: str):
    """``TMP`` and ``MODEL`` in the arguments are the row's temp folder and the model file."""
    return lambda tmp, model: [a.replace("TMP", str(tmp)).replace("MODEL", str(model)) for a in args]


def _prune(*options: str):
    return _args("prune", *SYNTHETIC, *options, "--out", "TMP/out")


# (id, the command, exit code, hints the one line must hold)
CASES = [
    # item 1: a file that is already there is never replaced without --overwrite
    ("bench-out-holds-their-bench.json", _bench_into("bench.json"), 1, ["bench.json already exists", "--overwrite"]),
    ("bench-out-holds-their-bench.md", _bench_into("bench.md"), 1, ["bench.md already exists", "--overwrite"]),
    ("bench-out-holds-both", _bench_into("bench.json", "bench.md"), 1, ["bench.json", "bench.md", "already exist;"]),
    ("bench-out-link-at-bench.json", _bench_into("bench.json", link=True), 1, ["bench.json already exists"]),
    ("bench-json-exists", _bench_to("--json"), 1, ["--json", "mine.txt already exists", "--overwrite"]),
    ("bench-markdown-exists", _bench_to("--markdown"), 1, ["--markdown", "already exists"]),
    ("bench-plot-exists", _bench_to("--plot"), 1, ["--plot", "already exists"]),
    ("bench-json-is-the-model", _args("bench", "MODEL", *BENCH, "--json", "MODEL", "--out", "TMP/r"), 1,
     ["--json", "r20.pt already exists"]),
    ("bench-json-and-markdown-one-file", _args("bench", "MODEL", *BENCH, "--json", "TMP/r.txt", "--markdown",
                                               "TMP/r.txt"), 1, ["--json", "--markdown", "are one file"]),
    # item 7: tracebacks before, one line now
    ("bench-out-300-chars", _args("bench", "MODEL", *BENCH, "--out", f"TMP/{LONG}"), 1, ["File name too long"]),
    ("bench-deep-manifest", _bench_deep_manifest, 1, ["manifest.json", "not a readable JSON manifest"]),
    ("bench-min-time-inf", _args("bench", "MODEL", *BENCH, "--min-time-s", "inf"), 2,
     ["--min-time-s", "must be finite", "3600"]),
    ("bench-warmup-nan", _args("bench", "MODEL", *BENCH, "--warmup-s", "nan"), 2, ["--warmup-s", "must be finite"]),
    ("bench-batch-huge", _args("bench", "MODEL", *BENCH, "--batch-size", "99999999999999999999"), 2, ["2147483647"]),
    ("prune-synthetic-train-huge", _prune("--synthetic-train", "99999999999999999999"), 2,
     ["--synthetic-train", "1<=x<=1000000"]),
    ("prune-synthetic-val-huge", _prune("--synthetic-val", "99999999999999999999"), 2,
     ["--synthetic-val", "1<=x<=1000000"]),
    ("prune-config-not-utf8", _config(b"\xff\xfeepochs: 2\n"), 2, ["config.yaml is not UTF-8 text"]),
    ("prune-config-lr-nan", _config(b"lr: .nan\n"), 2, ["--lr", "must be finite"]),
    ("prune-out-300-chars", _args("prune", *SYNTHETIC, "--out", f"TMP/{LONG}"), 1, ["File name too long"]),
    ("prune-lr-nan", _prune("--lr", "nan"), 2, ["--lr", "must be finite", "x>0"]),
    ("prune-lr-inf", _prune("--lr", "inf"), 2, ["--lr", "must be finite"]),
    ("prune-momentum-nan", _prune("--momentum", "nan"), 2, ["--momentum", "must be finite", "0<=x<=1"]),
    ("prune-flops-reduction-nan", _prune("--flops-reduction", "nan"), 2, ["--flops-reduction", "must be finite"]),
    ("prune-weight-decay-inf", _prune("--weight-decay", "inf"), 2, ["--weight-decay", "must be finite"]),
    ("prune-round-to-huge", _prune("--round-to", "99999999999999999999"), 2, ["--round-to", "1<=x<=4096"]),
    ("prune-reg-start-huge", _prune("--reg-start", "99999999999999999999"), 2, ["--reg-start", "2147483647"]),
    ("prune-milestones-unsorted", _prune("--milestones", "0.5,0.3"), 2, ["--milestones", "must increase", "0.5,0.3"]),
    ("prune-milestones-repeated", _prune("--milestones", "0.3,0.3"), 2, ["must increase"]),
    ("prune-epochs-huge", _prune("--epochs", "99999999999999999999"), 2, ["--epochs", "2147483647"]),
    ("export-out-300-chars", _args("export", "MODEL", "--out", f"TMP/{LONG}"), 1, ["File name too long"]),
    ("export-atol-nan", _args("export", "MODEL", "--atol", "nan", "--out", "TMP/out"), 2, ["--atol", "must be finite"]),
    ("eval-json-300-chars", _args("eval", "MODEL", "--data", "synthetic", "--json", f"TMP/{LONG}/r.json"), 1,
     ["--json", "File name too long"]),
    ("info-flops-reduction-inf", _args("info", "resnet20", "--flops-reduction", "inf"), 2, ["must be finite"]),
]


@pytest.mark.parametrize("make, exit_code, hints", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_refused_in_one_line_and_nothing_changed(tmp_path, model_file, make, exit_code, hints):
    args = make(tmp_path, model_file)
    before = snapshot(tmp_path), snapshot(model_file.parent)
    result = invoke(*args)
    assert_one_line_error(result, exit_code, *hints)
    assert (snapshot(tmp_path), snapshot(model_file.parent)) == before


def test_a_second_bench_of_a_run_keeps_the_first(tmp_path, model_file):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(model_file, run / "model.pt")
    first = invoke("bench", str(run), *BENCH)
    assert first.exit_code == 0, first.output
    report = run / "bench" / "bench.json"
    kept = report.read_bytes()
    before = snapshot(tmp_path)
    second = invoke("bench", str(run), *BENCH)
    assert_one_line_error(second, 1, str(report), "already exist", "another --out", "--overwrite")
    assert snapshot(tmp_path) == before and report.read_bytes() == kept
    third = invoke("bench", str(run), *BENCH, "--overwrite")
    assert third.exit_code == 0, third.output
    assert report.read_bytes() != kept and json.loads(report.read_text())["records"]


def test_overwrite_replaces_a_link_not_its_target(tmp_path, model_file):
    """--overwrite replaces the user's bench.json link itself; the file it points to is not written."""
    out = tmp_path / "reports"
    out.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("someone else's file")
    (out / "bench.json").symlink_to(victim)
    result = invoke("bench", str(model_file), *BENCH, "--out", str(out), "--overwrite")
    assert result.exit_code == 0, result.output
    assert victim.read_text() == "someone else's file" and not (out / "bench.json").is_symlink()


def test_help_says_what_a_second_bench_does():
    text = " ".join(invoke("bench", "--help").output.split())
    assert "--overwrite" in text and "never replaced" in text and "another --out" in text
