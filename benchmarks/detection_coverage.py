"""Coverage of the engine over torchvision's detection and segmentation models.

For each model (random init, made informative so that no channel is trivially zero;
images of ``--size`` pixels, detectors' own transform told to keep that size): analyse,
plan a MACs reduction with the default selection, apply with the example input (so the
plan is checked on a copy first and refused rather than applied when it breaks the
model), then compare the sliced model with the masked original in float64 on what the
network itself computes: a segmentation model's outputs; a detector's head outputs
(RetinaNet, FCOS, SSD: every pyramid level through the shared head) or, for the R-CNN
family, the RPN head's outputs and the RoI heads' outputs on one fixed set of boxes.
The final detections are not compared: score thresholds, top-k and NMS turn rounding
into different boxes, whatever the slicing.

    python -m benchmarks.detection_coverage --out benchmarks/results/coverage_detection
"""
from __future__ import annotations

import argparse
import copy
import time
import traceback
from dataclasses import asdict, dataclass

import torch
import torchvision
from torchvision.models import detection, segmentation

from benchmarks import coverage_table
from compressor.engine.analysis.graph import analyse
from compressor.engine.apply import apply_plan
from compressor.engine.cost import CostModel
from compressor.engine.importance import group_l2
from compressor.engine.masking import masked_copy
from compressor.engine.plan import kept_class_mask
from compressor.engine.selection import SelectionConfig, select_plan
from compressor.engine.verify import make_informative

DETECTORS = [
    "fasterrcnn_mobilenet_v3_large_320_fpn", "fasterrcnn_mobilenet_v3_large_fpn", "fasterrcnn_resnet50_fpn",
    "fasterrcnn_resnet50_fpn_v2", "fcos_resnet50_fpn", "keypointrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn",
    "maskrcnn_resnet50_fpn_v2", "retinanet_resnet50_fpn", "retinanet_resnet50_fpn_v2", "ssd300_vgg16",
    "ssdlite320_mobilenet_v3_large",
]
SEGMENTERS = [
    "deeplabv3_mobilenet_v3_large", "deeplabv3_resnet50", "deeplabv3_resnet101", "fcn_resnet50", "fcn_resnet101",
    "lraspp_mobilenet_v3_large",
]
# Ultralytics YOLO (benchmarks.yolo_factories), where ultralytics is importable: --yolo.
YOLO = ["yolov8n", "yolo11n", "yolov8n_seg"]
# float64 rounding: a mis-sliced model is off by the outputs' own magnitude.
EXACT_RTOL = 1e-9


@dataclass
class Record:
    model: str
    kind: str
    ok: bool
    groups: int = 0
    prunable_channels: int = 0
    frozen: int = 0  # channel groups kept whole, each with a reason
    dense_macs: int = 0
    predicted_macs: int = 0
    reduction: float = 0.0
    max_abs_diff: float = float("nan")
    output_scale: float = float("nan")
    analyse_s: float = 0.0
    plan_s: float = 0.0
    apply_s: float = 0.0
    compared: str = ""
    changed: bool = False  # the plan changed these outputs (else the comparison would prove nothing)
    frozen_reasons: dict | None = None
    error: str = ""


def build(name: str, size: int) -> torch.nn.Module:
    if name in YOLO:
        from benchmarks import yolo_factories

        return getattr(yolo_factories, name)(5)
    kwargs = {"weights": None, "weights_backbone": None, "num_classes": 5}
    if hasattr(detection, name):
        if not name.startswith("ssd"):
            kwargs.update(min_size=size, max_size=size)  # else the transform resizes to 800 px
        return getattr(detection, name)(**kwargs)
    return getattr(segmentation, name)(**kwargs)


def network_outputs(model: torch.nn.Module, image: torch.Tensor, boxes: list[torch.Tensor]) -> list[torch.Tensor]:
    """What the network computes before any data-dependent post-processing, in float64."""
    model = copy.deepcopy(model).double().eval()
    image = image.double()
    with torch.no_grad():
        if hasattr(model, "yaml"):  # ultralytics: in train mode its head returns the raw per-level maps
            return _tensors(model.train()(image[None]))
        if not hasattr(model, "transform"):  # segmentation: the outputs are the network's
            return list(model(image[None]).values())
        images, _ = model.transform([image])
        features = model.backbone(images.tensors)
        levels = list(features.values()) if isinstance(features, dict) else [features]
        if hasattr(model, "head"):  # RetinaNet, FCOS, SSD: one head over every level
            out = model.head(levels)
            return list(out.values()) if isinstance(out, dict) else list(out)
        return _rcnn_outputs(model, features, images.image_sizes, boxes)


def _tensors(value) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    return [t for item in value for t in _tensors(item)] if isinstance(value, (list, tuple)) else []


def _rcnn_outputs(model, features: dict, sizes, boxes) -> list[torch.Tensor]:
    objectness, deltas = model.rpn.head(list(features.values()))
    heads = model.roi_heads
    pooled = heads.box_roi_pool(features, boxes, sizes)
    out = [*objectness, *deltas, *heads.box_predictor(heads.box_head(pooled))]
    if getattr(heads, "mask_head", None) is not None:
        out.append(heads.mask_predictor(heads.mask_head(heads.mask_roi_pool(features, boxes, sizes))))
    if getattr(heads, "keypoint_head", None) is not None:
        out.append(heads.keypoint_predictor(heads.keypoint_head(heads.keypoint_roi_pool(features, boxes, sizes))))
    return out


def fixed_boxes(size: int, count: int = 20) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    corner = torch.rand(count, 2, generator=generator) * size * 0.7
    extent = size * 0.08 + torch.rand(count, 2, generator=generator) * size * 0.2
    return [torch.cat([corner, corner + extent], 1).double()]


def check_model(name: str, reduction: float, size: int) -> Record:
    kind = "detection" if hasattr(detection, name) or name in YOLO else "segmentation"
    record = Record(name, kind, ok=False)
    try:
        torch.manual_seed(0)
        model = make_informative(build(name, size).eval())
        image = torch.rand(3, size, size)
        example = [[image]] if hasattr(detection, name) else image[None]
        started = time.perf_counter()
        graph = analyse(model, example)
        record.analyse_s = time.perf_counter() - started
        started = time.perf_counter()
        cost = CostModel(graph, model)
        plan = select_plan(graph, cost, group_l2(graph, model), SelectionConfig(reduction))
        record.plan_s = time.perf_counter() - started
        record.groups, record.prunable_channels = len(graph.groups), graph.prunable_channels
        record.frozen_reasons = dict(graph.frozen_reasons)
        record.frozen = len(graph.frozen_reasons)
        record.dense_macs = graph.dense_macs
        record.predicted_macs = cost.macs(kept_class_mask(graph, plan))
        record.reduction = 1 - record.predicted_macs / record.dense_macs
        masked = masked_copy(model, graph, plan)
        started = time.perf_counter()
        pruned = apply_plan(copy.deepcopy(model), graph, plan, example_input=example)  # checked on a copy first
        record.apply_s = time.perf_counter() - started
        boxes = fixed_boxes(size)
        reference, result = network_outputs(masked, image, boxes), network_outputs(pruned, image, boxes)
        dense = network_outputs(model, image, boxes)
        record.changed = any(not torch.equal(a, b) for a, b in zip(dense, reference))
        record.compared = f"{len(reference)} network outputs"
        record.max_abs_diff = max(float((a - b).abs().max()) for a, b in zip(reference, result))
        record.output_scale = max(float(a.abs().max()) for a in reference)
        problems = [] if record.changed else ["the plan did not change the outputs (vacuous comparison)"]
        if record.max_abs_diff > EXACT_RTOL * record.output_scale:
            problems.append(f"sliced != masked (max abs diff {record.max_abs_diff:.2e})")
        if record.reduction < reduction - 0.01:
            problems.append(f"reduction {record.reduction:.3f} short of {reduction}")
        record.error = "; ".join(problems)
        record.ok = not problems
    except Exception as error:  # noqa: BLE001 - the table reports every failure
        record.error = f"{type(error).__name__}: {error}".splitlines()[0][:300]
        traceback.print_exc()
    return record


def _yolo_note(records: list[Record]) -> str:
    if not any(r.model in YOLO for r in records):
        return ""
    from importlib.metadata import version

    return (f" YOLO rows: ultralytics {version('ultralytics')}, built from its YAML offline through "
            "`benchmarks/yolo_factories.py` (ultralytics is not a dependency); compared in train mode, where its "
            "head returns the raw per-level maps.")


def _markdown(records: list[Record], reduction: float, size: int) -> str:
    passed = sum(r.ok for r in records)
    return coverage_table.markdown(
        f"Engine coverage: torchvision detection and segmentation models at {reduction:.0%} MACs reduction",
        [f"{passed} / {len(records)} exact. torch {torch.__version__}, torchvision {torchvision.__version__}, "
         f"{coverage_table.machine()}, {size}x{size} images, "
         "random init. Exact: the sliced model equals the masked original in float64 on the network's own "
         "outputs (see the script's docstring), after `apply_plan` checked the plan on a copy. `frozen`: channel "
         "groups kept whole, each for a stated reason (in the JSON)." + _yolo_note(records)],
        ["model", "kind", "exact", "groups", "frozen", "dense GMACs", "reduction", "max abs diff", "output scale",
         "analyse s", "plan s", "apply+check s", "note"],
        [
            [r.model, r.kind, "yes" if r.ok else "NO", f"{r.groups}", f"{r.frozen}", f"{r.dense_macs / 1e9:.3f}",
             f"{r.reduction:.1%}", f"{r.max_abs_diff:.1e}", f"{r.output_scale:.2g}", f"{r.analyse_s:.2f}",
             f"{r.plan_s:.2f}", f"{r.apply_s:.2f}", r.error]
            for r in records
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", help="default: every torchvision detection and segmentation model")
    parser.add_argument("--reduction", type=float, default=0.3)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--yolo", action="store_true", help="add Ultralytics YOLO (needs ultralytics importable)")
    parser.add_argument("--out", default="benchmarks/results/coverage_detection")
    args = parser.parse_args()
    records = []
    for name in args.models or DETECTORS + SEGMENTERS + (YOLO if args.yolo else []):
        record = check_model(name, args.reduction, args.size)
        print(f"{name}: {'exact' if record.ok else 'NOT exact'} {record.error}", flush=True)
        records.append(record)
    coverage_table.write(args.out, _markdown(records, args.reduction, args.size), [asdict(r) for r in records])


if __name__ == "__main__":
    main()
