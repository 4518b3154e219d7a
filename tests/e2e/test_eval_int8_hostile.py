"""``compress eval`` and ``compress export --int8`` given hostile files and mistaken options.

Each case is one that misbehaved (a clobbered file, a traceback, a made-up accuracy, a
check that judged the wrong thing) and now is one ``Error:`` line, exit code 1, and
nothing changed on disk -- or, where the right answer is a report, a report that says
what it could not vouch for.  One real run on a small image folder, exported with
``--int8``, is copied for every case so that a case can tamper with its copy.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import Result
from onnx import TensorProto, helper, numpy_helper
from PIL import Image
from torch import nn

from tests.cli_runs import colour_run, compress, make_image_folder
from tests.e2e.test_eval_cli import classifier_onnx, listing
from tests.hostile import assert_one_line_error, invoke

pytestmark = pytest.mark.usefixtures("one_torch_thread")
HERE = __name__  # the model factories below are named "<this module>:<factory>" on the command line


# -- models whose output the INT8 gate cannot judge (named on the command line) ------------------


def _body() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())


def spatial_scores(num_classes: int = 4) -> nn.Module:
    """A (batch, classes, H, W) map: its last axis is a pixel column, not classes."""
    return nn.Sequential(_body(), nn.Conv2d(8, num_classes, 1))


def nan_scores(num_classes: int = 4) -> nn.Module:
    model = nn.Sequential(_body(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))
    with torch.no_grad():
        model[-1].weight.fill_(float("nan"))
    return model


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """A trained run on a 4-colour image folder, with RUN/export holding model_int8.onnx (about 30 s)."""
    run = colour_run(tmp_path_factory.mktemp("hostile"))
    compress("export", str(run), "--int8", "--calib-samples", "64")
    assert (run / "export" / "model_int8.onnx").is_file()
    return run


@pytest.fixture
def run(pristine, tmp_path) -> Path:
    """This case's own copy of the run (its export's manifest still names the pristine run)."""
    copy = tmp_path / "run"
    shutil.copytree(pristine, copy, symlinks=True)
    return copy


def eval_(*args) -> Result:
    return invoke("eval", *args)


def export(*args) -> Result:
    return invoke("export", *args)


def nested(depth: int = 100_000) -> str:
    return "[" * depth + "]" * depth


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-5] ^= 1  # inside the last initializer: still a loadable model, a different file
    path.write_bytes(bytes(data))


def images_with_a_bomb(source: Path, copy: Path, split: str) -> Path:
    """``source`` copied, plus a 50 KB PNG that declares 400 megapixels (PIL's DecompressionBombError,
    which is not an OSError: it escaped the unreadable-image message as a traceback)."""
    shutil.copytree(source, copy)
    Image.new("1", (20_000, 20_000)).save(copy / split / "class0" / "bomb.png")
    return copy


def two_output_onnx(path: Path) -> Path:
    """Pooled features first, the logits second: eval scores the first output."""
    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["x"], ["pooled"]), helper.make_node("Flatten", ["pooled"], ["features"]),
         helper.make_node("Gemm", ["features", "w", "b"], ["logits"])],
        "two", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 16, 16])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 3]),
         helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 4])],
        [numpy_helper.from_array(rng.standard_normal((3, 4)).astype(np.float32), "w"),
         numpy_helper.from_array(np.zeros(4, np.float32), "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def nan_onnx(path: Path) -> Path:
    """Pooled pixels divided by zero: every score NaN or infinite (argmax still picks an index)."""
    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["x"], ["pooled"]), helper.make_node("Flatten", ["pooled"], ["flat"]),
         helper.make_node("Sub", ["flat", "flat"], ["zero"]), helper.make_node("Div", ["zero", "zero"], ["logits"])],
        "nan", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


# -- eval: one line, nothing changed -----------------------------------------------------------


def _edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def eval_cases(run: Path, tmp: Path) -> dict:
    """name -> (set-up, arguments, hints of the one error line)."""
    export_dir = run / "export"

    def precious() -> None:
        (tmp / "notes.txt").write_text("the user's own file\n")

    def link() -> None:
        (tmp / "earlier.json").write_text("{}\n")
        os.symlink(tmp / "earlier.json", tmp / "link.json")

    images = json.loads((run / "summary.json").read_text())["data"]["data_dir"]

    def garbage_int8() -> None:
        (export_dir / "model_int8.onnx").write_bytes(b"not a protobuf" * 10)

    return {
        # --json naming a file eval reads, or anyone's file: it was replaced by the report
        "json is the export's manifest": (None, [export_dir, "--json", export_dir / "manifest.json"],
                                          ["manifest.json", "not a `compress eval` report"]),
        "json is model.onnx": (None, [export_dir, "--json", export_dir / "model.onnx"], ["model.onnx", "refused"]),
        "json is the run's summary.json": (None, [run, "--json", run / "summary.json"], ["summary.json", "refused"]),
        "json is model.pt": (None, [run, "--json", run / "model.pt"], ["model.pt", "refused"]),
        "json is the user's file": (precious, [run, "--json", tmp / "notes.txt"], ["notes.txt", "refused"]),
        "json is a symlink": (link, [run, "--json", tmp / "link.json"], ["link.json", "refused"]),
        # JSON nested 100 000 deep: a RecursionError traceback
        "manifest nested deep": (lambda: (export_dir / "manifest.json").write_text(nested()), [export_dir],
                                 ["not a readable JSON manifest"]),
        "summary nested deep": (lambda: (run / "summary.json").write_text(nested()), [run, "--limit", "8"],
                                ["no data to evaluate on", "summary.json"]),
        # a changed file that no longer loads: the error says it is not the exported file
        "tampered int8 does not load": (garbage_int8, [export_dir], ["model_int8.onnx", "sha256 differs"]),
        # NaN scores were scored (argmax of NaN is an index) as a top-1 of 25 %
        "onnx gives NaN scores": (lambda: nan_onnx(tmp / "nan.onnx"), [tmp / "nan.onnx", "--data", "synthetic",
                                                                        "--limit", "8"], ["nan.onnx", "NaN"]),
        "decompression bomb in the data": (
            lambda: images_with_a_bomb(Path(images), tmp / "bomb", "val"),
            [run, "--data-dir", tmp / "bomb"], ["cannot read image", "bomb.png"]),
        # its input size set the crop: every image resized to 60000x60000, an allocator traceback or the OOM killer
        "onnx declares a huge input": (lambda: classifier_onnx(tmp / "huge.onnx", classes=4, size=60_000),
                                       [tmp / "huge.onnx", "--data", "imagefolder", "--data-dir", images],
                                       ["lower --batch-size", "60000x60000", "refused before allocating"]),
        # each chunk padded to the fixed batch: numpy asked for 114 GiB of zeros
        "onnx fixes a huge batch": (lambda: classifier_onnx(tmp / "fixed.onnx", batch=10**7),
                                    [tmp / "fixed.onnx", "--data", "synthetic", "--limit", "8"],
                                    ["fixed.onnx's fixed batch of 10000000", "refused before allocating"]),
    }


EVAL_CASES = ["json is the export's manifest", "json is model.onnx", "json is the run's summary.json",
              "json is model.pt", "json is the user's file", "json is a symlink", "manifest nested deep",
              "summary nested deep", "tampered int8 does not load", "onnx gives NaN scores",
              "decompression bomb in the data", "onnx declares a huge input", "onnx fixes a huge batch"]


@pytest.mark.parametrize("case", EVAL_CASES)
def test_hostile_eval_input_is_one_line_and_changes_nothing(case, run, tmp_path):
    set_up, args, hints = eval_cases(run, tmp_path)[case]
    if set_up is not None:
        set_up()
    before = listing(tmp_path)
    assert_one_line_error(eval_(*args), 1, *hints)
    assert listing(tmp_path) == before


# -- eval: a report, but one that says what it cannot vouch for -------------------------------


def test_a_tampered_artifact_is_measured_but_not_recorded_in_the_manifest(run):
    """The manifest vouches for its files by sha256: an accuracy of a different file beside
    that record would read as the exported file's."""
    export_dir = run / "export"
    flip_a_byte(export_dir / "model_int8.onnx")
    manifest = (export_dir / "manifest.json").read_bytes()
    result = eval_(export_dir, "--limit", "16")
    assert result.exit_code == 0, result.output
    assert "model_int8.onnx: its sha256 differs" in result.stdout
    assert "not recorded in" in result.stdout and "changed since the export" in result.stdout
    assert (export_dir / "manifest.json").read_bytes() == manifest
    assert "evaluation" not in json.loads(manifest)
    assert result.stderr.count("sha256 differs") == 0  # said once, in the report, not also as a log line


def test_a_batch_size_past_64_bits_is_refused_with_its_bound(run):
    """torch's split overflowed on it (a ValueError traceback); options now state their bounds."""
    result = eval_(run, "--limit", "8", "--batch-size", str(10**30))
    assert_one_line_error(result, 2, "--batch-size", "2147483647")


def test_json_may_replace_an_earlier_eval_report(run, tmp_path):
    report = tmp_path / "report.json"
    for _ in range(2):
        result = eval_(run, "--limit", "8", "--json", report)
        assert result.exit_code == 0, result.output
    assert json.loads(report.read_text())["format"] == "compressor.eval/1"


@pytest.mark.parametrize("top1", [float("inf"), float("nan"), -5, 1e9])
def test_a_recorded_top1_that_is_not_a_percentage_is_ignored(run, top1):
    _edit_json(run / "summary.json", lambda summary: summary.update(top1=top1))  # json writes inf as Infinity
    result = eval_(run, "--limit", "8")
    assert result.exit_code == 0, result.output
    assert "the run recorded top-1" not in result.stdout and "inf%" not in result.stdout


def test_an_onnx_file_with_two_outputs_says_which_one_was_scored(tmp_path):
    result = eval_(two_output_onnx(tmp_path / "two.onnx"), "--data", "imagefolder", "--data-dir",
                   make_image_folder(tmp_path / "images", train=2, val=2, size=16), "--limit", "8")
    assert result.exit_code == 0, result.output
    assert "2 outputs (features, logits)" in result.stdout and "'features'" in result.stdout


# -- export --int8: what the gate cannot judge is refused before anything is written ----------


def int8_cases(run: Path, tmp: Path) -> dict:
    images = str(run.parent / "images")
    calib = ["--int8", "--calib-samples", "32", "--calib-data", "imagefolder", "--calib-data-dir"]
    size = ["--input-size", "3,16,16"]
    return {
        # gated on the first head only: the second was quantized with nothing checking it
        "two outputs": (["tests.export_models:two_heads", *size, *calib, images], ["2 outputs", "without --int8"]),
        # "top-1" of a (batch, C, H, W) map taken along its width, and passed
        "spatial output": ([f"{HERE}:spatial_scores", *size, *calib, images],
                           ["(batch, classes)", "without --int8"]),
        # NaN weights: numpy warnings on stderr and ONNX Runtime's "AssertionError: scale issue"
        "NaN outputs": ([f"{HERE}:nan_scores", *size, *calib, images], ["not finite"]),
        # read ./data of the working directory and advised prune's --download
        "cifar without a folder": ([str(run), "--int8", "--calib-data", "cifar10"], ["--calib-data-dir"]),
        "synthetic with a folder": ([str(run), "--int8", "--calib-data", "synthetic", "--calib-data-dir", str(tmp)],
                                    ["--calib-data-dir", "synthetic"]),
        # advised "point --data-dir" (prune's option; export's is --calib-data-dir)
        "calibration folder missing": ([str(run), *calib, str(tmp / "nope")], ["nope", "--calib-data-dir"]),
        "decompression bomb in the calibration folder": (
            [str(run), *calib, str(images_with_a_bomb(Path(images), tmp / "bomb", "train"))],
            ["cannot read image", "bomb.png"]),
    }


@pytest.mark.parametrize("case", ["two outputs", "spatial output", "NaN outputs", "cifar without a folder",
                                  "synthetic with a folder", "calibration folder missing",
                                  "decompression bomb in the calibration folder"])
def test_int8_of_what_its_gate_cannot_judge_is_refused(case, pristine, tmp_path):
    args, hints = int8_cases(pristine, tmp_path)[case]
    out = tmp_path / "out"
    before = listing(pristine.parent)
    error = assert_one_line_error(export(*args, "--out", out), 1, *hints)
    assert " --data-dir" not in error and "--download" not in error  # prune's options, not export's
    assert listing(pristine.parent) == before
    assert not out.exists() or not any(out.iterdir()), listing(out)


@pytest.mark.parametrize("change", [{"image_size": "16"}, {"data_dir": "/"}, {"batch_size": float("nan")}])
def test_int8_from_a_run_whose_summary_is_tampered_is_one_line(change, run, tmp_path):
    """The gate's images and the calibration read the same summary: its complaint came twice,
    once as the gate's fallback warning and once as the error."""
    _edit_json(run / "summary.json", lambda summary: summary["data"].update(change))
    before = listing(run)
    assert_one_line_error(export(run, "--int8", "--calib-samples", "16", "--out", tmp_path / "out"), 1)
    assert listing(run) == before
    assert not any((tmp_path / "out").glob("model*.onnx"))


# -- a manifest's relative source path names whatever run sits in the working directory ---------


def test_a_relative_source_path_is_not_resolved_against_the_working_directory(run, tmp_path, monkeypatch):
    """'run' relative to wherever export ran: from another directory it named another run,
    whose model became the agreement reference and whose data the default."""
    export_dir = tmp_path / "elsewhere" / "exp"
    shutil.copytree(run / "export", export_dir)
    _edit_json(export_dir / "manifest.json", lambda manifest: manifest["source"].update(path="run"))
    monkeypatch.chdir(tmp_path)  # holds ./run: the run a relative path would pick up
    before = listing(tmp_path)
    assert_one_line_error(eval_(export_dir, "--limit", "8"), 1, "no data to evaluate on", "relative path 'run'")
    assert listing(tmp_path) == before


def test_a_relative_source_path_still_finds_the_run_of_the_default_layout(run, tmp_path, monkeypatch):
    """RUN/export: the export directory's parent is the run its relative path names."""
    _edit_json(run / "export" / "manifest.json", lambda manifest: manifest["source"].update(path="run"))
    monkeypatch.chdir(tmp_path.parent)
    result = eval_(run / "export", "--limit", "8")
    assert result.exit_code == 0, result.output
    assert "pytorch" in result.stdout and "relative path" not in result.stdout


def test_export_records_the_source_path_absolute(pristine, tmp_path, monkeypatch):
    monkeypatch.chdir(pristine.parent)
    result = export("run", "--out", tmp_path / "exp", "--no-simplify", "--max-batch", "1")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "exp" / "manifest.json").read_text())["source"]["path"] == str(pristine)


# -- a FIFO where a file should be: the read blocked forever ------------------------------------


class _Hung(Exception):
    pass


def _within(seconds: int, call):
    """``call()``, or a test failure (not a hung suite) when it blocks past ``seconds``."""
    import signal

    def hung(*_):
        raise _Hung(f"blocked for {seconds} s")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        return call()
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_a_fifo_as_the_onnx_source_is_refused_not_read(tmp_path):
    os.mkfifo(tmp_path / "model.onnx")
    result = _within(60, lambda: eval_(tmp_path / "model.onnx", "--data", "synthetic"))
    assert_one_line_error(result, 1, "model.onnx", "not a regular file")


def test_int8_from_a_run_whose_summary_is_a_fifo_is_refused_not_read(run, tmp_path):
    (run / "summary.json").unlink()
    os.mkfifo(run / "summary.json")
    result = _within(120, lambda: export(run, "--int8", "--out", tmp_path / "out"))
    assert_one_line_error(result, 1, "summary.json", "not a regular file")
    assert not any((tmp_path / "out").glob("model*.onnx"))


def test_export_refuses_a_model_whose_own_output_is_nan(tmp_path):
    """Without --int8 too: NaN compares equal to nothing, so the parity gate saw no difference."""
    from click.testing import CliRunner

    from compressor.cli import main

    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["export", f"{HERE}:nan_scores", "--input-size", "3,8,8", "--out", str(out)])
    assert result.exit_code == 1, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "not finite" in errors[0] and "Traceback" not in result.output
    assert not any(out.glob("*.onnx")) if out.exists() else True
