"""Channel atoms: the unit of coupling.

Every channel a producer layer creates gets an integer *atom* id.  Tracing records
which atoms must be removed together (a residual add couples the two operands'
channels index by index, a grouped conv couples its groups column by column, ...)
and which atoms can never be removed (model outputs, channels normalised by a
LayerNorm, channels an unknown op consumed).  Equivalence classes of atoms are the
pruning decisions: a class is kept or removed as a whole.

Unions are only recorded during tracing and resolved once at the end with a
vectorised label propagation, which keeps tracing of a ViT-B under a second.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Space:
    """A contiguous range of atoms created by one producer (a layer's output channels)."""

    name: str
    start: int
    size: int

    @property
    def atoms(self) -> np.ndarray:
        return np.arange(self.start, self.start + self.size, dtype=np.int64)


@dataclass
class AtomTable:
    """Allocates atoms, records couplings and freezes, and resolves them into classes."""

    spaces: list[Space] = field(default_factory=list)
    _edges_a: list[np.ndarray] = field(default_factory=list)
    _edges_b: list[np.ndarray] = field(default_factory=list)
    _frozen: list[tuple[np.ndarray, str]] = field(default_factory=list)
    size: int = 0

    def new_space(self, name: str, size: int) -> np.ndarray:
        space = Space(name, self.size, size)
        self.spaces.append(space)
        self.size += size
        return space.atoms

    def union(self, a: np.ndarray, b: np.ndarray) -> None:
        """Couple atoms a[i] and b[i] for every i (shapes must match)."""
        a = np.asarray(a, dtype=np.int64).ravel()
        b = np.asarray(b, dtype=np.int64).ravel()
        if a.shape != b.shape:
            raise ValueError(f"cannot couple {a.size} channels with {b.size} channels")
        differ = a != b
        if differ.any():
            self._edges_a.append(a[differ])
            self._edges_b.append(b[differ])

    def freeze(self, atoms: np.ndarray, reason: str) -> None:
        atoms = np.unique(np.asarray(atoms, dtype=np.int64).ravel())
        if atoms.size:
            self._frozen.append((atoms, reason))

    def resolve(self) -> tuple[np.ndarray, np.ndarray]:
        """Return (class id per atom, frozen flag per class id).

        Class ids are the smallest atom id of each class, so they are stable for a
        given model and example input.
        """
        labels = np.arange(self.size, dtype=np.int64)
        if self._edges_a:
            a = np.concatenate(self._edges_a)
            b = np.concatenate(self._edges_b)
            while True:
                low = np.minimum(labels[a], labels[b])
                before = labels.copy()
                np.minimum.at(labels, a, low)
                np.minimum.at(labels, b, low)
                # Pointer jumping until every label points at a root.
                while True:
                    jumped = labels[labels]
                    if np.array_equal(jumped, labels):
                        break
                    labels = jumped
                if np.array_equal(before, labels):
                    break
        frozen = np.zeros(self.size, dtype=bool)
        if self._frozen:
            frozen_atoms = np.concatenate([atoms for atoms, _ in self._frozen])
            frozen[labels[frozen_atoms]] = True
        return labels, frozen

    def reason_for(self, labels: np.ndarray, class_id: int) -> str | None:
        """The first recorded reason that froze any atom of the given class."""
        for atoms, reason in self._frozen:
            if (labels[atoms] == class_id).any():
                return reason
        return None
