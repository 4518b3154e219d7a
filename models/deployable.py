"""The deployable graph of a model: what an export holds and what a bench times.

A classifier or a segmenter is deployed as it is: a batch tensor in, tensors out.  A
torchvision detector's ``forward`` does more than a network: it resizes a list of images,
decodes boxes against anchors, thresholds scores and runs NMS.  Those steps follow the
values (how many boxes survive), so they are not a fixed graph an ONNX file or a TensorRT
engine can hold, and slicing never touches them.  A single-stage detector (RetinaNet,
FCOS, SSD, SSDlite) is therefore deployed as its backbone, neck and head: a batch of
images at the network's input size in (normalised inside, as the model's transform does),
the head's raw per-anchor outputs out.  What runs after them is described, with its
numbers, by ``postprocessing`` and goes into the export manifest.

A two-stage detector (the R-CNN family) is refused: its second stage runs on proposals
that NMS chooses inside the network, so no fixed graph holds backbone, neck and heads.
Counting its MACs (``compress info``) fixes how many boxes each stage keeps instead
(``fix_box_counts``), as cutting the post-processing fixes a single-stage detector's.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from compressor.errors import CompressorError


@dataclass(frozen=True)
class Deployable:
    model: nn.Module  # takes one float32 batch tensor (N, C, H, W)
    input_size: tuple[int, int, int]
    postprocessing: dict | None = None  # what runs after the exported outputs (detectors)


def is_detector(model: nn.Module) -> bool:
    """A torchvision detector: it takes a list of images (its ``transform`` batches them)."""
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    return isinstance(getattr(model, "transform", None), GeneralizedRCNNTransform)


def model_input(model: nn.Module, input_size, batch: int = 1) -> list | torch.Tensor:
    """A zero input of the kind ``model`` takes, for analysis and counting: a batch tensor, or
    a detector's list of images (wrapped as its one positional argument)."""
    if is_detector(model):
        return [[torch.zeros(*input_size) for _ in range(batch)]]
    return torch.zeros(batch, *input_size)


def check_runs(model: nn.Module, input_size, batch: int, what: str) -> None:
    """Refuse in one line an ``input_size`` whose forward pass would not fit in memory, before
    anything of that size is allocated.  A detector's transform allocates the image and its
    network then runs at the size the transform gives, so both are checked."""
    from compressor.memory import check_fits

    if not is_detector(model):
        check_fits(model, input_size, batch, what)  # the estimate counts the input too
        return
    check_fits(nn.Identity(), input_size, batch, what)  # the transform allocates the images first
    if hasattr(model, "backbone") and hasattr(model, "head"):
        check_fits(DetectorNetwork(model), network_input_size(model, input_size), batch, what)


def deployable(model: nn.Module, input_size) -> Deployable:
    """``model`` as it is deployed: itself, or a detector's network without its post-processing."""
    if not is_detector(model):
        return Deployable(model, tuple(input_size))
    from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN

    if isinstance(model, GeneralizedRCNN):
        raise CompressorError(
            f"{type(model).__name__} is a two-stage detector: its box/mask heads run on proposals that NMS picks "
            "inside the network, so no fixed ONNX graph holds it; export and bench take single-stage detectors "
            "(RetinaNet, FCOS, SSD, SSDlite), classifiers and segmenters"
        )
    missing = [name for name in ("backbone", "head", "anchor_generator") if not hasattr(model, name)]
    if missing:
        raise CompressorError(
            f"{type(model).__name__} has a detector's transform but no {', '.join(missing)}: export and bench take "
            "torchvision's single-stage detectors (RetinaNet, FCOS, SSD, SSDlite), classifiers and segmenters"
        )
    check_runs(model, input_size, 1, f"input size {list(input_size)}")  # postprocessing runs it once
    network = DetectorNetwork(model).eval()
    size = network_input_size(model, input_size)
    return Deployable(network, size, postprocessing(model, network, size))


def fix_box_counts(model: nn.Module) -> dict | None:
    """Set a two-stage detector (the R-CNN family) to keep a fixed number of boxes at every
    stage, and say how many; None (nothing changed) for any other model.

    Its box head runs on the proposals that survive the RPN's NMS, and its mask or keypoint
    head on the detections that survive the score threshold and NMS: how many follows the
    weights, and a random-init or freshly pruned model keeps a different number each time
    (Mask R-CNN counted -73 % for a plan that removes 30 %).  With NMS and the score
    threshold off, the RPN keeps its ``post_nms_top_n`` proposals and the heads their
    ``detections_per_img`` detections (IoU never exceeds 1, a softmax score is never below
    0), so MACs counted before and after a prune compare the same work.  Only for
    counting: the model no longer suppresses duplicate detections."""
    from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN

    if not isinstance(model, GeneralizedRCNN):
        return None
    rpn, heads = model.rpn, model.roi_heads
    rpn.nms_thresh, rpn.score_thresh = 1.0, 0.0
    heads.nms_thresh, heads.score_thresh = 1.0, -1.0
    return {"proposals_per_image": int(rpn._post_nms_top_n["testing"]),
            "detections_per_image": int(heads.detections_per_img),
            "rule": "score thresholds and NMS off, so every stage keeps its maximum number of boxes"}


class DetectorNetwork(nn.Module):
    """A single-stage detector's backbone, neck and head: images in 0-1 at the network's input
    size, normalised as the detector's transform does, to the head's raw outputs.  It shares
    the detector's modules (no copy), so it computes exactly what the detector computes before
    its post-processing."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.backbone, self.head = detector.backbone, detector.head
        transform = detector.transform
        self.register_buffer("mean", torch.tensor(transform.image_mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(transform.image_std).view(1, -1, 1, 1))

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.backbone((images - self.mean) / self.std)
        features = list(features.values()) if isinstance(features, dict) else [features]
        return dict(self.head(features))


def network_input_size(detector: nn.Module, input_size) -> tuple[int, int, int]:
    """The size the detector's transform brings an image of ``input_size`` to (its resize and its
    padding to a multiple of the stride): what the network itself sees."""
    was_training = detector.transform.training
    detector.transform.eval()
    with torch.no_grad():
        batched, _ = detector.transform([torch.zeros(*input_size)])
    detector.transform.train(was_training)
    return tuple(int(v) for v in batched.tensors.shape[1:])


def postprocessing(detector: nn.Module, network: DetectorNetwork, input_size) -> dict:
    """What a server runs after the exported outputs to get boxes, with the detector's numbers."""
    with torch.no_grad():
        features = network.backbone(torch.zeros(1, *input_size))
    maps = [list(f.shape[-2:]) for f in (features.values() if isinstance(features, dict) else [features])]
    anchors = detector.anchor_generator
    record = {
        "outside_the_graph": "resize (and zero-pad to the stride) to network_input, anchor decoding, score "
                             "threshold, top-k and NMS (they follow the values, so they are not a fixed graph); "
                             "the exported outputs are the head's raw per-anchor values",
        "detector": type(detector).__name__,
        "network_input": list(input_size),
        "input_scale": "images in 0-1, RGB; the graph normalises with the detector's mean/std",
        "mean": list(detector.transform.image_mean),
        "std": list(detector.transform.image_std),
        "feature_maps": maps,
        "anchor_generator": type(anchors).__name__,
        "anchor_sizes": _plain(getattr(anchors, "sizes", None)),
        "aspect_ratios": _plain(getattr(anchors, "aspect_ratios", None)),
        "outputs": _output_meanings(type(detector).__name__),
    }
    for name in ("score_thresh", "nms_thresh", "detections_per_img", "topk_candidates", "center_sampling_radius"):
        if hasattr(detector, name):
            record[name] = _plain(getattr(detector, name))
    coder = getattr(detector, "box_coder", None)
    if coder is not None:
        record["box_coder"] = {"type": type(coder).__name__, **{k: _plain(v) for k, v in vars(coder).items()}}
    return record


def _output_meanings(kind: str) -> dict[str, str]:
    if kind == "SSD":
        return {"cls_logits": "per default box, class scores (softmax; class 0 is background)",
                "bbox_regression": "per default box, box deltas decoded with box_coder against the default boxes"}
    meanings = {"cls_logits": "per anchor, class logits (sigmoid, one score per class)",
                "bbox_regression": "per anchor, box deltas decoded with box_coder against the anchors"}
    if kind == "FCOS":
        meanings["bbox_ctrness"] = "per anchor location, centerness logit (sigmoid; score = sqrt(class * centerness))"
        meanings["bbox_regression"] = "per anchor location, distances to the box's sides, decoded with box_coder"
    return meanings


def _plain(value):
    """Tuples and tensors as lists, numbers as numbers: JSON for the manifest."""
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value if isinstance(value, (int, float, str, bool)) or value is None else str(value)
