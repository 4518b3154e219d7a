"""Ultralytics YOLO models built from their YAML (random init, nothing downloaded), as
``module.path:factory`` names for ``compress info`` and the detection coverage table:

    PYTHONPATH=<ultralytics> compress info benchmarks.yolo_factories:yolov8n --input-size 3,128,128 ...

Ultralytics is not a dependency of this project (AGPL-3.0, and heavy); these factories
import it only when called.
"""
from __future__ import annotations

INPUT_SIZE = (3, 640, 640)


def _build(config: str, num_classes: int):
    from ultralytics.nn.tasks import DetectionModel, SegmentationModel

    kind = SegmentationModel if "-seg" in config else DetectionModel
    return kind(config, nc=num_classes, verbose=False)


def yolov8n(num_classes: int = 80):
    return _build("yolov8n.yaml", num_classes)


def yolo11n(num_classes: int = 80):
    return _build("yolo11n.yaml", num_classes)


def yolov8n_seg(num_classes: int = 80):
    return _build("yolov8n-seg.yaml", num_classes)
