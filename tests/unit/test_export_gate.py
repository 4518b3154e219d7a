"""A sound gate: what a trace froze, what only scaled inputs reveal, every output, sane tolerances.

The models in ``tests.export_models`` carry the faults (a branch on the batch size, a
branch on the input's values, a dict of outputs); the exporters and ONNX Runtime run
unmodified and every verdict is checked against what the written file computes.
"""
from __future__ import annotations

import json
import math

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from compressor.errors import CompressorError
from compressor.export.config import MAX_ATOL, MAX_RTOL, ExportConfig
from compressor.export.onnx_export import TraceRefused
from compressor.export.outputs import flatten_outputs, output_names
from compressor.export.parity import NOISE_FACTOR, compare_batch, compare_scaled, gate_cases
from compressor.export.pipeline import ExportRefused, export_source
from compressor.export.sources import from_module
from tests.export_models import (
    BIG_BATCH, INPUT_SIZE, SmallCnn, _informative, doubles_past_four, fails_past_three, flips_on_bright_inputs, normalises_raw_pixels,
    pads_odd_widths, scales_its_input_in_place, two_heads,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")
FAST_OPSET = 17  # TorchScript exporter: these tests are about what a trace does


def export(tmp_path, model, name="model", **options):
    options = {"input_size": INPUT_SIZE, "max_batch": BIG_BATCH, **options}
    return export_source(from_module(model, name, INPUT_SIZE, False), ExportConfig(out=tmp_path / "export", **options))


def onnx_outputs(path, x: torch.Tensor) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})


# -- a trace that saw data-dependent control flow -------------------------------------------------


@pytest.mark.parametrize("opset", [None, FAST_OPSET], ids=["dynamo-first", "torchscript-only"])
def test_a_trace_that_saw_a_branch_is_refused_and_nothing_is_left(tmp_path, opset):
    """torch.export refuses the batch-size branch (default opset), so only the tracer can
    write the file, and the tracer warned: refused even though the gate would pass (it never
    checks a batch above 4 here)."""
    with pytest.raises(TraceRefused, match="--allow-trace") as refused:
        export(tmp_path, doubles_past_four(), opset=opset)
    message = str(refused.value)
    assert "\n" not in message and "export_models.py" in message and "Python boolean" in message
    assert "tracing it on batch 5 wrote a different graph" in message
    assert not list((tmp_path / "export").iterdir()), "a refused trace left files behind"


def test_a_value_branch_changes_the_retraced_graph_and_is_refused(tmp_path):
    with pytest.raises(TraceRefused, match=r"tracing it on inputs x100 wrote a different graph"):
        export(tmp_path, flips_on_bright_inputs(), opset=FAST_OPSET)


def test_a_branch_only_raw_pixels_take_is_caught_by_trace_and_gate(tmp_path):
    """randn never is all non-negative; raw images always are."""
    model = normalises_raw_pixels()
    with pytest.raises(TraceRefused, match="tracing it on inputs uniform in 0-255 wrote a different graph"):
        export(tmp_path / "a", model, opset=FAST_OPSET)
    with pytest.raises(ExportRefused, match="uniform 0-1|uniform 0-255"):
        export(tmp_path / "b", model, opset=FAST_OPSET, allow_trace=True)


def test_a_model_that_writes_into_its_input_passes_with_both_sides_fed_a_copy(tmp_path):
    result = export(tmp_path, scales_its_input_in_place(), opset=FAST_OPSET)
    assert result.status == "ok" and result.manifest["parity"]["passed"]


def test_a_trace_that_cannot_be_repeated_is_refused(tmp_path):
    with pytest.raises(TraceRefused, match=r"tracing it again failed \(ValueError: batches above 3"):
        export(tmp_path, fails_past_three(), opset=FAST_OPSET)


def test_a_model_that_raises_on_a_gate_batch_is_one_line(tmp_path):
    with pytest.raises(CompressorError, match=r"the model failed on a batch of 4 .*ValueError: batches above 3") as e:
        export(tmp_path, fails_past_three(), max_batch=4, opset=FAST_OPSET, allow_trace=True)
    assert "\n" not in str(e.value)
    assert not [p for p in (tmp_path / "export").iterdir() if not p.name.startswith(".")]


def test_a_branch_on_a_fixed_image_size_warns_but_is_the_same_graph_everywhere(tmp_path):
    """Swin pads windows by the image size; the export fixes the size, so the trace holds."""
    size = (3, 8, 7)
    model = pads_odd_widths()
    config = ExportConfig(out=tmp_path / "export", input_size=size, max_batch=BIG_BATCH, opset=FAST_OPSET)
    result = export_source(from_module(model, "pads", size, False), config)
    manifest = result.manifest
    assert manifest["status"] == "ok" and manifest["allow_trace"] is False
    assert any("export_models.py" in w for w in manifest["trace_warnings"])
    assert manifest["trace_check"].endswith("the same graph")
    x = torch.randn(6, *size)
    with torch.no_grad():
        np.testing.assert_allclose(onnx_outputs(result.path("model.onnx"), x)[0], model(x).numpy(),
                                   rtol=1e-4, atol=1e-5)


def test_allow_trace_keeps_the_trace_and_the_manifest_records_why(tmp_path):
    result = export(tmp_path, doubles_past_four(), opset=FAST_OPSET, allow_trace=True)
    manifest = json.loads((result.out / "manifest.json").read_text())
    assert manifest["status"] == "ok" and manifest["exporter"] == "torchscript"
    assert manifest["allow_trace"] is True and manifest["options"]["allow_trace"] is True
    assert any("export_models.py" in w and "Python boolean" in w for w in manifest["trace_warnings"])
    assert manifest["trace_check"] == "not checked: --allow-trace"


def test_the_gate_still_catches_a_trace_it_was_allowed_to_keep(tmp_path):
    """--allow-trace keeps the file only if the gate passes: past batch 4 the trace is wrong."""
    with pytest.raises(ExportRefused, match="at batch 8"):
        export(tmp_path, doubles_past_four(), opset=FAST_OPSET, allow_trace=True, max_batch=8)


# -- a branch on one exact batch size --------------------------------------------------------------


class ZeroAtSix(SmallCnn):
    """Zeroes its logits at batch 6 only: torch.export keeps the batch symbolic and takes the
    example's branch without narrowing its range, and the tracer's re-trace at batch 5 writes the
    same graph, so both exporters write a file that is wrong at 6 and nowhere else."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.net(x)
        if x.shape[0] == 6:
            return logits * 0
        return logits


class NegatesOddAboveFive(SmallCnn):
    """Negates its logits at batches 7, 9, ...: the re-trace's batch 5 is not among them."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.net(x)
        if x.shape[0] > 5 and x.shape[0] % 2 == 1:
            return -logits
        return logits


@pytest.mark.parametrize("opset", [None, FAST_OPSET], ids=["dynamo", "torchscript"])
@pytest.mark.parametrize("model_class, wrong_at", [(ZeroAtSix, 6), (NegatesOddAboveFive, 7)])
def test_a_branch_on_an_exact_batch_size_is_caught_by_the_batch_sweep(tmp_path, opset, model_class, wrong_at):
    model = _informative(model_class, 4)
    with pytest.raises(ExportRefused, match=rf"on randn inputs at batch {wrong_at} \(a size of the batch sweep\)") as e:
        export(tmp_path, model, opset=opset, max_batch=8)
    assert "\n" not in str(e.value)
    manifest = e.value.result.manifest
    assert manifest["parity"]["batch_sizes"] == [1, 2, 3, 8] and manifest["parity"]["batch_sweep"] == [4, 5, 6, 7]
    assert [b["batch_size"] for b in manifest["parity"]["per_batch"] if not b["passed"]] == [wrong_at]
    # the refusal is right: the file the exporter wrote is wrong at that size
    x = torch.randn(wrong_at, *INPUT_SIZE)
    with torch.no_grad():
        expected = model(x).numpy()
    assert not np.allclose(onnx_outputs(tmp_path / "export" / "model.onnx.failed", x)[0], expected, atol=1e-3)


def test_the_batch_sweep_stops_at_sixteen_and_skips_the_sizes_already_fed(tmp_path):
    assert ExportConfig(out=tmp_path, max_batch=8).parity_sweep_sizes == (4, 5, 6, 7)
    assert ExportConfig(out=tmp_path, max_batch=3).parity_sweep_sizes == ()
    assert ExportConfig(out=tmp_path, max_batch=64).parity_sweep_sizes == tuple(range(4, 17))
    cases = gate_cases(INPUT_SIZE, (1, 2, 8), seed=0, sweep=(3, 4))
    assert [(len(c.x), c.sweep) for c in cases] == [(1, False), (2, False), (8, False), (3, True), (4, True)]


# -- inputs at several scales ---------------------------------------------------------------------


def test_scaled_inputs_catch_a_branch_randn_never_takes(tmp_path):
    """The frozen branch (negate when any |x| > 10) is invisible to randn batches and
    caught by the inputs out of that range; without the scaled cases the same export is marked
    ok, yet wrong.  Which of them catches it depends on the CPU: at 100x the gate allows ten
    times what a 1e-4 nudge moves PyTorch's output, and on an AVX-512 CPU that allowance
    covered this random-init model's flip at x100, so 0-255 pixels caught it."""
    model = flips_on_bright_inputs()
    blind = export(tmp_path / "blind", model, opset=FAST_OPSET, allow_trace=True, parity_scales=())
    assert blind.status == "ok"
    bright = 100 * torch.randn(BIG_BATCH, *INPUT_SIZE, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = model(bright).numpy()
    wrong = onnx_outputs(blind.path("model.onnx"), bright)[0]
    assert np.mean(wrong.argmax(1) == expected.argmax(1)) == 0.0, "the trace was not wrong: nothing to catch"

    with pytest.raises(ExportRefused, match="(randn x100|uniform 0-255) inputs") as refused:
        export(tmp_path / "gated", model, opset=FAST_OPSET, allow_trace=True)
    manifest = refused.value.result.manifest
    failing = [b for b in manifest["parity"]["per_batch"] if not b["passed"]]
    assert failing and {b["inputs"] for b in failing} <= {"randn x100", "uniform 0-255"}
    assert "uniform 0-255" in {b["inputs"] for b in failing}  # every pixel > 10: flipped on any CPU
    assert all(b["top1_agreement"] == 0.0 for b in failing if b["inputs"] == "uniform 0-255")


def test_a_scaled_case_allows_what_a_tiny_input_change_moves_and_no_more():
    """Far outside its range a network can be chaotic (a 1e-4 input change moves its output
    by 10 %): a file as far off passes; a frozen branch (the output negated) fails."""
    reference = [np.linspace(-100.0, 100.0, 20).reshape(2, 10)]
    chaotic = [reference[0] * 1.1]  # PyTorch on the nudged input: 10 % of the largest magnitude away
    assert compare_scaled(reference, chaotic, [reference[0] * 1.3], 1e-3, "randn x100", 100.0).passed
    assert not compare_scaled(reference, chaotic, [-reference[0]], 1e-3, "randn x100", 100.0).passed
    stable = [reference[0] * (1 + 1e-7)]  # a well-behaved network barely moves
    batch = compare_scaled(reference, stable, [reference[0] * (1 + 5e-4)], 1e-3, "randn x100", 100.0)
    assert batch.passed and batch.sensitivity == pytest.approx(1e-7) and batch.scale == 100.0
    assert not compare_scaled(reference, stable, [reference[0] * 1.002], 1e-3, "randn x100", 100.0).passed
    # the allowance is rtol or NOISE_FACTOR x the sensitivity, whichever is larger
    edge = 0.1 * NOISE_FACTOR
    assert compare_scaled(reference, chaotic, [reference[0] * (1 + 0.99 * edge)], 1e-3, "x", 100.0).passed
    assert not compare_scaled(reference, chaotic, [reference[0] * (1 + 1.01 * edge)], 1e-3, "x", 100.0).passed


def test_gate_cases_scale_the_largest_batch_and_add_images():
    images = torch.rand(5, *INPUT_SIZE)
    cases = gate_cases(INPUT_SIZE, (1, 2, 4), seed=0, scales=(0.01, 100.0), images=images)
    assert [(c.inputs, len(c.x), c.scale) for c in cases] == [
        ("randn", 1, 1.0), ("randn", 2, 1.0), ("randn", 4, 1.0), ("randn x0.01", 4, 0.01),
        ("randn x100", 4, 100.0), ("uniform 0-1", 4, 1.0), ("uniform 0-255", 4, 255.0), ("dataset images", 5, 1.0),
    ]
    torch.testing.assert_close(cases[4].x, 100 * cases[2].x)
    assert 0 <= cases[5].x.min() and cases[5].x.max() <= 1
    torch.testing.assert_close(cases[6].x, 255 * cases[5].x)
    assert cases[-1].x is images


# -- every output of a tuple/dict model -----------------------------------------------------------


def test_a_dict_model_exports_every_output_under_its_key(tmp_path):
    model = two_heads()
    result = export(tmp_path, model)
    assert result.status == "ok" and result.manifest["parity"]["outputs"] == 2
    assert [o["name"] for o in result.manifest["outputs"]] == ["logits", "features"]
    x = torch.randn(3, *INPUT_SIZE)
    with torch.no_grad():
        expected = model(x)
    got = onnx_outputs(result.path("model.onnx"), x)
    np.testing.assert_allclose(got[0], expected["logits"].numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got[1], expected["features"].numpy(), rtol=1e-4, atol=1e-5)


def test_a_wrong_second_output_fails_the_batch_and_is_named():
    reference = [np.ones((2, 3)), np.ones((2, 5))]
    result = [np.ones((2, 3)), np.full((2, 5), 1.5)]
    batch = compare_batch(reference, result, atol=1e-4, rtol=1e-3)
    assert not batch.passed and batch.worst_output == 1 and batch.max_abs_err == pytest.approx(0.5)
    assert compare_batch(reference, [np.ones((2, 3)), np.ones((2, 5))], 1e-4, 1e-3).passed
    with pytest.raises(CompressorError, match="returned 1 outputs, PyTorch 2"):
        compare_batch(reference, result[:1], 1e-4, 1e-3)


def test_matching_infinities_agree_and_any_other_non_finite_value_fails():
    reference = [np.array([[1.0, np.inf, np.nan]])]
    assert compare_batch(reference, [np.array([[1.0, np.inf, np.nan]])], 1e-4, 1e-3).passed
    assert not compare_batch(reference, [np.array([[1.0, -np.inf, np.nan]])], 1e-4, 1e-3).passed
    assert not compare_batch([np.ones((1, 3))], [np.array([[1.0, 1.0, np.nan]])], 1e-4, 1e-3).passed


def test_output_names_follow_the_structure_and_stay_unique():
    t = torch.zeros(1)
    assert output_names(t) == ["logits"]
    assert output_names((t, t)) == ["output_0", "output_1"]
    assert output_names({"boxes": t, "aux": (t, t)}) == ["boxes", "aux.0", "aux.1"]
    assert output_names({"a b": t, "a_b": t}) == ["a_b", "a_b_1"]
    assert output_names({"input": t}) == ["input_1"]  # the graph's input keeps its name
    assert len(flatten_outputs({"boxes": t, "aux": (t, t)})) == 3


class ReturnsNone(nn.Module):
    def forward(self, x):
        return x.flatten(1), None


def test_an_output_that_is_not_a_tensor_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(CompressorError, match=r"output\[1\] is a NoneType"):
        export(tmp_path, ReturnsNone())
    assert not (tmp_path / "export").exists() or not list((tmp_path / "export").iterdir())


# -- tolerances a gate can still refuse with -------------------------------------------------------


@pytest.mark.parametrize("option, value", [
    ("atol", math.inf), ("atol", math.nan), ("atol", 2 * MAX_ATOL), ("rtol", math.inf), ("rtol", 2 * MAX_RTOL),
    ("atol", -1e-3),
])
def test_a_tolerance_that_would_pass_anything_is_refused(tmp_path, option, value):
    with pytest.raises(CompressorError, match=f"--{option} must be between 0 and"):
        ExportConfig(out=tmp_path, **{option: value})


def test_the_largest_allowed_tolerances_are_accepted(tmp_path):
    config = ExportConfig(out=tmp_path, atol=MAX_ATOL, rtol=MAX_RTOL)
    assert (config.atol, config.rtol) == (MAX_ATOL, MAX_RTOL)
