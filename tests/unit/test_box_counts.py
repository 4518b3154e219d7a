"""``fix_box_counts``: a two-stage detector keeps the same number of boxes whatever its weights,
so MACs counted before and after a prune compare the same work (``compress info``)."""
from __future__ import annotations

import pytest
import torch

from compressor.engine.flops import count_macs
from compressor.models.deployable import fix_box_counts
from compressor.models.registry import build_model

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.slow]  # detectors: seconds each
NAME, SIZE = "fasterrcnn_mobilenet_v3_large_320_fpn", (3, 64, 64)


def _detector(seed: int, fixed: bool):
    torch.manual_seed(seed)
    model = build_model(NAME, input_size=SIZE).eval()
    if fixed:
        counted_at = fix_box_counts(model)
        assert counted_at["proposals_per_image"] == model.rpn._post_nms_top_n["testing"]
        assert counted_at["detections_per_image"] == model.roi_heads.detections_per_img == 100
    return model


def _boxes(model) -> int:
    with torch.no_grad():
        return len(model([torch.rand(*SIZE, generator=torch.Generator().manual_seed(0))])[0]["boxes"])


def test_every_detector_keeps_its_maximum_number_of_detections_whatever_its_weights():
    counts = {_boxes(_detector(seed, fixed=True)) for seed in (0, 1)}
    assert counts == {100}


def test_without_it_the_number_of_detections_follows_the_weights():
    """Control: a random-init detector keeps some other number (here, none pass the score threshold)."""
    assert {_boxes(_detector(seed, fixed=False)) for seed in (0, 1)} != {100}


def test_the_counted_macs_do_not_depend_on_the_weights():
    example = [[torch.rand(*SIZE, generator=torch.Generator().manual_seed(0))]]
    counted = {count_macs(_detector(seed, fixed=True), example) for seed in (0, 1)}
    assert len(counted) == 1


def test_other_models_are_left_as_they_are():
    model = build_model("ssdlite320_mobilenet_v3_large", input_size=(3, 64, 64))
    before = (model.score_thresh, model.nms_thresh)
    assert fix_box_counts(model) is None
    assert (model.score_thresh, model.nms_thresh) == before
    assert fix_box_counts(torch.nn.Linear(2, 2)) is None
