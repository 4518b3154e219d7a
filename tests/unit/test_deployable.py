"""A detector's deployable network: what export writes and bench times.

The network must compute exactly what the detector computes before its post-processing,
and the post-processing the manifest describes, run on the network's outputs, must give the
detector's own detections: then the exported graph plus the documented steps is the detector.
"""
from __future__ import annotations

import pytest
import torch

from compressor.errors import CompressorError
from compressor.models.deployable import deployable, is_detector, model_input
from compressor.models.registry import build_model


def detections_from_network(detector, outputs: dict, images: torch.Tensor) -> list[dict]:
    """torchvision's own post-processing (anchors, decoding, NMS) applied to the network's outputs."""
    batched, _ = detector.transform(list(images))
    features = list(detector.backbone(batched.tensors).values())
    anchors = detector.anchor_generator(batched, features)
    per_level = [f.shape[-2] * f.shape[-1] for f in features]
    per_level = [n * (outputs["cls_logits"].shape[1] // sum(per_level)) for n in per_level]
    split = {key: list(value.split(per_level, dim=1)) for key, value in outputs.items()}
    found = detector.postprocess_detections(split, [list(a.split(per_level)) for a in anchors], batched.image_sizes)
    return detector.transform.postprocess(found, batched.image_sizes, [tuple(images.shape[-2:])] * len(images))


@pytest.mark.parametrize("name", ["retinanet_resnet50_fpn", "fcos_resnet50_fpn"])
def test_the_network_plus_the_documented_postprocessing_is_the_detector(name):
    torch.manual_seed(0)
    detector = build_model(name, num_classes=5, input_size=(3, 96, 96)).eval()
    detector.score_thresh = 0.0  # random init scores sit under 0.05: keep boxes so there is something to compare
    images = torch.rand(2, 3, 96, 96)
    graph = deployable(detector, (3, 96, 96))
    assert graph.input_size == (3, 96, 96)
    with torch.no_grad():
        expected = detector(list(images))
        outputs = graph.model(images)
        rebuilt = detections_from_network(detector, outputs, images)
    assert all(len(e["boxes"]) > 0 for e in expected)
    for mine, theirs in zip(rebuilt, expected):
        for key in ("boxes", "scores", "labels"):
            assert torch.equal(mine[key], theirs[key]), key
    record = graph.postprocessing
    assert record["detector"] == type(detector).__name__ and list(record["outputs"]) == list(outputs)
    assert record["score_thresh"] == 0.0 and record["nms_thresh"] == detector.nms_thresh
    assert record["feature_maps"][0] == [12, 12]  # stride 8 at 96 px


def test_a_fixed_size_detector_takes_its_own_input_size():
    """SSDlite resizes every image to 320x320 inside its transform: the exported network takes that."""
    detector = build_model("ssdlite320_mobilenet_v3_large", num_classes=5).eval()
    graph = deployable(detector, (3, 128, 128))
    assert graph.input_size == (3, 320, 320)
    seen = {}
    hook = detector.head.register_forward_hook(lambda module, args, output: seen.update(output))
    with torch.no_grad():
        image = torch.rand(3, 320, 320)
        detector([image])
        hook.remove()  # the network shares the head: its own run must not overwrite what the detector's gave
        outputs = graph.model(image[None])
    assert outputs.keys() == seen.keys()
    assert all(torch.equal(outputs[key], seen[key]) for key in outputs)


def test_classifiers_and_segmenters_are_deployed_as_they_are():
    model = build_model("resnet20")
    graph = deployable(model, (3, 32, 32))
    assert graph.model is model and graph.postprocessing is None and not is_detector(model)
    assert model_input(model, (3, 32, 32)).shape == (1, 3, 32, 32)
    segmenter = build_model("lraspp_mobilenet_v3_large", num_classes=3)
    assert deployable(segmenter, (3, 64, 64)).model is segmenter


def test_a_two_stage_detector_is_refused_in_one_line():
    detector = build_model("fasterrcnn_mobilenet_v3_large_320_fpn", num_classes=3, input_size=(3, 64, 64))
    assert is_detector(detector) and isinstance(model_input(detector, (3, 64, 64))[0], list)
    with pytest.raises(CompressorError) as refused:
        deployable(detector, (3, 64, 64))
    assert "two-stage" in str(refused.value) and "\n" not in str(refused.value)


def test_the_network_input_is_what_the_transform_makes_of_the_image():
    """torchvision's transform zero-pads a batch to a multiple of the backbone's stride (32): a
    100-pixel image reaches the network as 128 pixels, and that is the size exported."""
    detector = build_model("retinanet_resnet50_fpn", num_classes=5, input_size=(3, 100, 100)).eval()
    graph = deployable(detector, (3, 100, 100))
    assert graph.input_size == (3, 128, 128) and graph.postprocessing["network_input"] == [3, 128, 128]
    assert "zero-pad" in graph.postprocessing["outside_the_graph"]
