"""``compress info`` on torchvision's detectors and segmenters, by name: the example input
comes from the model (a list of images for a detector), the plan is checked on a copy
before it is counted, and every frozen group says why."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from compressor.cli import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def info(*args: str) -> dict:
    result = CliRunner().invoke(main, ["info", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_a_detector_by_name_is_analysed_and_pruned():
    report = info("retinanet_resnet50_fpn", "--input-size", "3,128,128", "--flops-reduction", "0.3")
    assert report["groups"] > 0 and report["num_classes"] == 91
    assert 0.29 <= report["macs_reduction"] <= 0.31
    assert report["predicted_macs"] == report["pruned_macs"]  # no data-dependent part in RetinaNet's count
    assert report["max_abs_diff"] is None  # detections after NMS: apply's check is the check
    assert report["fixed"] and all(report["fixed"].values())


def test_a_segmenter_by_name_slices_exactly():
    report = info("lraspp_mobilenet_v3_large", "--input-size", "3,96,96", "--flops-reduction", "0.3")
    assert report["predicted_macs"] == report["pruned_macs"]
    assert report["max_abs_diff"] < 1e-4


def test_models_lists_detectors_and_segmenters():
    result = CliRunner().invoke(main, ["models", "--family", "torchvision-detection", "--json"])
    assert result.exit_code == 0, result.output
    names = {row["name"] for row in json.loads(result.stdout)}
    assert {"retinanet_resnet50_fpn", "fasterrcnn_mobilenet_v3_large_fpn", "ssdlite320_mobilenet_v3_large"} <= names


def test_prune_refuses_a_detector_in_one_line_before_writing(tmp_path):
    result = CliRunner().invoke(main, ["prune", "--model", "ssdlite320_mobilenet_v3_large", "--epochs", "1",
                                       "--out", str(tmp_path / "run")])
    assert result.exit_code == 1, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "own training loop" in errors[0] and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_two_stage_detector_is_counted_at_a_fixed_number_of_boxes():
    """Mask R-CNN's box head runs on the proposals that survive NMS, its mask head on the
    detections that survive the score threshold: counted as they fell, a 30 % plan read as -73 %.
    Counted at the stages' maxima (thresholds and NMS off), the reduction is the plan's."""
    report = info("maskrcnn_resnet50_fpn", "--input-size", "3,128,128", "--flops-reduction", "0.3")
    assert report["macs_counted_at"]["proposals_per_image"] == 1000
    assert report["macs_counted_at"]["detections_per_image"] == 100
    assert 0.29 <= report["macs_reduction"] <= 0.32, report["macs_reduction"]
    assert abs(report["pruned_macs"] - report["predicted_macs"]) <= 0.01 * report["macs"]


def test_a_single_stage_detector_is_counted_as_it_is():
    report = info("ssdlite320_mobilenet_v3_large", "--input-size", "3,64,64")
    assert "macs_counted_at" not in report
