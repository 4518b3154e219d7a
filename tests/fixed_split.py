"""A dataset split made of fixed tensors, for runs whose every batch the test must know."""
from __future__ import annotations

import torch


class FixedSplit:
    """Fixed tensors, no augmentation: the batches a run sees are known exactly."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def batches(self, index_batches, seeds):
        for index in index_batches:
            yield self.images[index], self.labels[index]
