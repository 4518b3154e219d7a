"""torchvision's detection and segmentation models through analyse -> plan -> apply: the
sliced model equals the masked original on what the network computes (float64), after
``apply_plan`` checked the plan on a copy.  RetinaNet's head is shared by its five pyramid
levels: before those calls were coupled the plan was applied and the model could not run.
The full table is benchmarks/results/coverage_detection.md."""
from __future__ import annotations

import pytest

from benchmarks.detection_coverage import check_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

QUICK = ["retinanet_resnet50_fpn", "fasterrcnn_mobilenet_v3_large_320_fpn", "fcos_resnet50_fpn",
         "ssdlite320_mobilenet_v3_large", "lraspp_mobilenet_v3_large", "deeplabv3_mobilenet_v3_large"]
SLOW = ["maskrcnn_resnet50_fpn", "keypointrcnn_resnet50_fpn", "ssd300_vgg16", "fcn_resnet50"]


def _assert_exact(name: str) -> None:
    record = check_model(name, 0.3, 128)
    assert record.ok, record.error
    assert record.changed and record.reduction >= 0.29
    assert all(reason for reason in record.frozen_reasons.values())  # every frozen group says why


@pytest.mark.parametrize("name", QUICK)
def test_detection_and_segmentation_models_slice_exactly(name):
    _assert_exact(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW)
def test_larger_detection_models_slice_exactly(name):
    _assert_exact(name)
