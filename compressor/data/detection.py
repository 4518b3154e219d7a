"""A small synthetic detection set: coloured rectangles on noise, with their boxes.

Each class is a colour; an image holds one to three rectangles of random size and place
on a noisy background, and its target is what torchvision's detectors train on:
``{"boxes": float (N, 4) x1y1x2y2 in pixels, "labels": int64 (N,)}`` with labels from 1
(0 is their background class).  Generated from a seed, in memory: the detector example
and its test train on it offline.
"""
from __future__ import annotations

import torch

# Class k (1-based) is COLOURS[k - 1]; distinct enough that a small detector learns them quickly.
COLOURS = ((0.9, 0.1, 0.1), (0.1, 0.8, 0.1), (0.1, 0.2, 0.9), (0.9, 0.9, 0.1))
NOISE = 0.15
MIN_SIDE = 0.2  # of the image size


def synthetic_detection(count: int, size: int = 96, classes: int = 2, seed: int = 0):
    """``count`` (image (3, size, size) in 0-1, target) pairs; ``classes`` <= len(COLOURS)."""
    if not 1 <= classes <= len(COLOURS):
        raise ValueError(f"classes must be between 1 and {len(COLOURS)}, got {classes}")
    generator = torch.Generator().manual_seed(seed)
    return [_sample(size, classes, generator) for _ in range(count)]


def _sample(size: int, classes: int, generator: torch.Generator):
    image = 0.5 + NOISE * torch.randn(3, size, size, generator=generator)
    boxes, labels = [], []
    for _ in range(int(torch.randint(1, 4, (1,), generator=generator))):
        width, height = (MIN_SIDE + 0.3 * torch.rand(2, generator=generator)) * size
        left = float(torch.rand(1, generator=generator)) * (size - float(width))
        top = float(torch.rand(1, generator=generator)) * (size - float(height))
        box = [int(left), int(top), int(left + width), int(top + height)]
        label = int(torch.randint(1, classes + 1, (1,), generator=generator))
        colour = torch.tensor(COLOURS[label - 1]).view(3, 1, 1)
        image[:, box[1]:box[3], box[0]:box[2]] = colour + NOISE * torch.randn(3, box[3] - box[1], box[2] - box[0],
                                                                               generator=generator)
        boxes.append(box)
        labels.append(label)
    target = {"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor(labels, dtype=torch.int64)}
    return image.clamp_(0, 1), target
