"""Every ONNX Runtime run under a time limit (``compressor.export.runlimit``): a graph that
loops for ever is stopped and reported in one line, by eval's runner, the export gate and
the INT8 gate alike; ONNX Runtime's calibrator, which no limit reaches, refuses such a graph.

The limits here are a fraction of a second against a graph that would run for ever, so
nothing depends on how fast this machine is; no test measures time."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from compressor.errors import CompressorError
from compressor.export.runlimit import LIMIT_ENV, RunLimit, RunLimitError, check_bounded, limit_seconds

FOREVER = 10**15  # Loop iterations: longer than any test run, by far
SMALL = 0.2  # seconds


def looping_onnx(path: Path, trips: int = FOREVER, classes: int = 10, size: int = 32) -> Path:
    """A valid classifier (average pool, linear layer) whose logits then pass through a ``Loop``
    of ``trips`` iterations that changes nothing: with 10^15 trips a run never ends."""
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((3, classes)).astype(np.float32), "w")
    bias = numpy_helper.from_array(rng.standard_normal(classes).astype(np.float32), "b")
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Identity", ["v_in"], ["v_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_in", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", TensorProto.FLOAT, None)],
    )
    nodes = [
        helper.make_node("GlobalAveragePool", ["x"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("Gemm", ["flat", "w", "b"], ["logits"], name="fc"),
        helper.make_node("Constant", [], ["trips"], value=helper.make_tensor("trips", TensorProto.INT64, [], [trips])),
        helper.make_node("Constant", [], ["go"], value=helper.make_tensor("go", TensorProto.BOOL, [], [True])),
        helper.make_node("Loop", ["trips", "go", "logits"], ["scores"], body=body),
    ]
    graph = helper.make_graph(
        nodes, "looping", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", classes])], [weight, bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _session(path: Path):
    from compressor.export.ort import open_session

    return open_session(path)


def _feed(batch: int = 2) -> dict:
    return {"x": np.zeros((batch, 3, 32, 32), np.float32)}


def _assert_one_line(error: BaseException, *hints: str) -> str:
    message = str(error)
    assert "\n" not in message
    for hint in hints:
        assert hint in message, message
    return message


def test_a_run_within_the_limit_returns_its_outputs(tmp_path):
    session = _session(looping_onnx(tmp_path / "short.onnx", trips=3))
    limit = RunLimit("short.onnx", 60)
    outputs = limit(lambda options: session.run(None, _feed(), options))
    assert outputs[0].shape == (2, 10) and np.isfinite(outputs[0]).all()
    assert limit(lambda options: session.run(None, _feed(), options))[0].shape == (2, 10)  # and again
    limit.close()


def test_a_run_past_the_limit_is_stopped_in_one_line_naming_the_file_and_the_setting(tmp_path):
    session = _session(looping_onnx(tmp_path / "forever.onnx"))
    limit = RunLimit("forever.onnx", SMALL)
    with pytest.raises(RunLimitError) as caught:
        limit(lambda options: session.run(None, _feed(), options))
    _assert_one_line(caught.value, "ONNX Runtime stopped forever.onnx", f"limit of {SMALL:g} s per run", LIMIT_ENV)
    # ONNX Runtime keeps the session's terminate flag: every later run is refused at once, in the same words
    with pytest.raises(RunLimitError, match="forever.onnx"):
        limit(lambda options: pytest.fail("a run after the limit was hit must not start"))


def test_close_ends_the_watchdog_thread(tmp_path):
    session = _session(looping_onnx(tmp_path / "short.onnx", trips=3))
    limit = RunLimit("short.onnx", 600)
    limit(lambda options: session.run(None, _feed(), options))
    thread = limit._watch.thread
    assert limit.watching
    limit.close()
    thread.join(timeout=30)  # it wakes on close, not at the end of its 600 s wait
    assert not thread.is_alive()
    with pytest.raises(CompressorError, match="closed"):
        limit(lambda options: None)


def test_dropping_a_limit_ends_its_thread_too(tmp_path):
    import gc

    session = _session(looping_onnx(tmp_path / "short.onnx", trips=3))
    limit = RunLimit("short.onnx", 600)
    limit(lambda options: session.run(None, _feed(), options))
    thread = limit._watch.thread
    del limit
    gc.collect()
    thread.join(timeout=30)
    assert not thread.is_alive()


@pytest.mark.parametrize("text, expected", [(None, 300.0), ("", 300.0), ("2.5", 2.5), (" 10 ", 10.0)])
def test_the_limit_comes_from_the_environment(monkeypatch, text, expected):
    if text is None:
        monkeypatch.delenv(LIMIT_ENV, raising=False)
    else:
        monkeypatch.setenv(LIMIT_ENV, text)
    assert limit_seconds() == expected


@pytest.mark.parametrize("text", ["0", "-1", "nan", "inf", "ten", "1e400"])
def test_a_limit_that_is_not_a_positive_finite_number_is_refused(monkeypatch, text):
    monkeypatch.setenv(LIMIT_ENV, text)
    with pytest.raises(CompressorError) as caught:
        limit_seconds()
    _assert_one_line(caught.value, LIMIT_ENV, "positive, finite")


def test_eval_runner_stops_a_looping_file(tmp_path, monkeypatch):
    from compressor.evaluation.runners import onnx_runner

    monkeypatch.setenv(LIMIT_ENV, str(SMALL))
    runner = onnx_runner(looping_onnx(tmp_path / "forever.onnx"), "forever.onnx")
    with pytest.raises(RunLimitError) as caught:
        runner(torch.zeros(2, 3, 32, 32))
    _assert_one_line(caught.value, "forever.onnx", LIMIT_ENV)


def test_export_gate_stops_a_looping_file(tmp_path, monkeypatch):
    """The gate compares a file with its model; here the file would never answer."""
    from compressor.export.parity import check_onnx

    monkeypatch.setenv(LIMIT_ENV, str(SMALL))
    model = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 10))
    with pytest.raises(RunLimitError) as caught:
        check_onnx(model, looping_onnx(tmp_path / "model.onnx"), (3, 32, 32), [1, 2], 1e-4, 1e-3, seed=0)
    _assert_one_line(caught.value, "model.onnx", LIMIT_ENV)


def test_int8_gate_runs_are_limited(tmp_path, monkeypatch):
    from compressor.export.int8 import run_onnx

    monkeypatch.setenv(LIMIT_ENV, str(SMALL))
    with pytest.raises(RunLimitError, match="forever.onnx"):
        run_onnx(looping_onnx(tmp_path / "forever.onnx"), torch.zeros(4, 3, 32, 32))


def test_int8_calibration_refuses_a_graph_that_repeats(tmp_path):
    """ONNX Runtime's calibrator runs its own session, which no RunOptions reach: a Loop (even
    a short one) is refused before calibration starts."""
    from compressor.export.int8 import quantize_for_timing

    source = looping_onnx(tmp_path / "looping.onnx", trips=3)
    with pytest.raises(CompressorError) as caught:
        quantize_for_timing(source, tmp_path / "int8.onnx", (3, 32, 32))
    _assert_one_line(caught.value, "looping.onnx", "Loop", "without a time limit")
    assert not (tmp_path / "int8.onnx").exists()


def test_check_bounded_looks_inside_subgraphs(tmp_path):
    looping = onnx.load(str(looping_onnx(tmp_path / "looping.onnx", trips=3)))
    then_branch = helper.make_graph(list(looping.graph.node), "then", [], [helper.make_tensor_value_info(
        "scores", TensorProto.FLOAT, ["batch", 10])])
    else_branch = helper.make_graph([helper.make_node("Identity", ["x"], ["scores"])], "else", [],
                                    [helper.make_tensor_value_info("scores", TensorProto.FLOAT, None)])
    wrapped = helper.make_graph(
        [helper.make_node("Constant", [], ["flag"], value=helper.make_tensor("flag", TensorProto.BOOL, [], [True])),
         helper.make_node("If", ["flag"], ["out"], then_branch=then_branch, else_branch=else_branch)],
        "wrapped", list(looping.graph.input), [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
        list(looping.graph.initializer),
    )
    with pytest.raises(CompressorError, match="has Loop nodes"):
        check_bounded(helper.make_model(wrapped), "wrapped.onnx", "the calibrator")
    plain = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "plain",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    check_bounded(helper.make_model(plain), "plain.onnx", "the calibrator")  # If alone, Relu: no repeats


def test_onnxruntime_really_stops_a_loop_through_run_options(tmp_path):
    """Control for the tests above: the mechanism is ONNX Runtime's own terminate flag,
    honoured between the iterations of a Loop (not a Python timeout around the call)."""
    import threading

    session = _session(looping_onnx(tmp_path / "forever.onnx"))
    options = ort.RunOptions()
    threading.Timer(SMALL, lambda: setattr(options, "terminate", True)).start()
    with pytest.raises(Exception, match="terminate"):
        session.run(None, _feed(), options)
