"""Top-1, top-5, mean cross-entropy and agreement, summed batch by batch.

Counted the way the training loop's validation counts (``Trainer.evaluate``): correct
predictions summed as integers, ``100 * correct / images`` (percent), cross-entropy
of the float32 logits summed per batch; so the PyTorch row of a run reproduces the
top-1 its summary.json records, not just approximately.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

TOP5 = 5


@dataclass
class Tally:
    images: int = 0
    correct_top1: int = 0
    correct_top5: int = 0
    loss_sum: float = 0.0
    loss_defined: bool = True  # False once a label is outside the model's classes (or logits are empty)
    agreed: int = 0  # images where the top-1 equals the reference row's
    compared: int = 0
    num_classes: int | None = None

    def add(self, logits: np.ndarray, labels: torch.Tensor, reference: np.ndarray | None = None) -> np.ndarray:
        """Count one batch; returns its top-1 predictions (the reference of later rows)."""
        scores = torch.from_numpy(np.ascontiguousarray(logits, dtype=np.float32))
        classes = scores.shape[1]
        self.num_classes = classes
        labels = labels.long()
        predicted = scores.argmax(1)
        self.correct_top1 += int((predicted == labels).sum().item())
        if classes >= TOP5:
            top5 = scores.topk(TOP5, dim=1).indices
            self.correct_top5 += int((top5 == labels[:, None]).any(1).sum().item())
        if self.loss_defined and classes > 0 and int(labels.min()) >= 0 and int(labels.max()) < classes:
            self.loss_sum += F.cross_entropy(scores, labels, reduction="sum").item()
        else:
            self.loss_defined = False
        self.images += len(labels)
        predictions = predicted.numpy()
        if reference is not None:
            self.agreed += int((predictions == reference).sum())
            self.compared += len(predictions)
        return predictions

    @property
    def top1(self) -> float:
        return 100.0 * self.correct_top1 / max(self.images, 1)

    @property
    def top5(self) -> float | None:
        if self.num_classes is None or self.num_classes < TOP5:
            return None
        return 100.0 * self.correct_top5 / max(self.images, 1)

    @property
    def loss(self) -> float | None:
        return self.loss_sum / max(self.images, 1) if self.loss_defined and self.images else None

    @property
    def agreement(self) -> float | None:
        """Fraction (0-1) of images whose top-1 equals the reference's."""
        return self.agreed / self.compared if self.compared else None
