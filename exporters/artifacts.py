"""The output directory, and the rule that no file looks valid before it has passed.

Every artifact is written under a staging name (``.model.onnx.staging``) and only
renamed to its real name once every gate has passed.  When a gate refuses, the
staged files become ``model.onnx.failed`` and so on, and real-named files left by
an earlier export into the same directory are removed, so the directory never
holds a ``model.onnx`` next to a manifest that says ``failed``.
"""
from __future__ import annotations

import os
from pathlib import Path

from compressor.hashing import file_sha256
from compressor.outdir import ensure_writable_dir

FAILED_SUFFIX = ".failed"
STAGING_SUFFIX = ".staging"


def prepare_out_dir(out: Path) -> Path:
    """Create ``out`` and prove it is writable, or fail with one line, before any work."""
    return ensure_writable_dir(out, "output directory", keep=True)


class Artifacts:
    """Staged files of one export, keyed by their final names."""

    def __init__(self, out: Path, known: tuple[str, ...] = ()) -> None:
        self.out = out
        self.known = known  # every name an export may write, to clear leftovers of earlier ones
        self.staged: dict[str, Path] = {}
        self.scratch_files: list[Path] = []

    def stage(self, name: str) -> Path:
        """Where to write the artifact ``name`` until it is promoted."""
        path = self.out / f".{name}{STAGING_SUFFIX}"
        path.unlink(missing_ok=True)
        self.staged[name] = path
        return path

    def scratch(self, name: str) -> Path:
        """A temporary file in the output directory, removed whatever happens."""
        path = self.out / f".{name}.scratch"
        path.unlink(missing_ok=True)
        self.scratch_files.append(path)
        return path

    def cleanup(self) -> None:
        """Remove staged and scratch files (an error stopped the export)."""
        for path in [*self.staged.values(), *self.scratch_files]:
            path.unlink(missing_ok=True)
        self.staged.clear()
        self.scratch_files.clear()

    def discard(self, name: str) -> None:
        """Drop one staged artifact (its step failed; the others may still be promoted)."""
        path = self.staged.pop(name, None)
        if path is not None:
            path.unlink(missing_ok=True)

    def promote(self, refused=()) -> list[Path]:
        """Give every staged file its real name, but ``name.failed`` to the ``refused`` ones:
        their own gate failed, the others' passed (an INT8 file beside its verified fp32 model)."""
        self._clear_leftovers()
        moved = [self._move(name, name + FAILED_SUFFIX if name in refused else name) for name in list(self.staged)]
        self.cleanup()
        return moved

    def fail(self) -> list[Path]:
        """A gate refused: ``name.failed`` for every staged file; stale real names go."""
        self._clear_leftovers()
        moved = [self._move(name, name + FAILED_SUFFIX) for name in list(self.staged)]
        self.cleanup()
        return moved

    def _clear_leftovers(self) -> None:
        """Files an earlier export into the same directory left (valid or failed)."""
        for name in set(self.known) | set(self.staged):
            (self.out / name).unlink(missing_ok=True)
            (self.out / (name + FAILED_SUFFIX)).unlink(missing_ok=True)

    def _move(self, name: str, final: str) -> Path:
        target = self.out / final
        os.replace(self.staged.pop(name), target)
        return target


def make_readable(path: Path) -> Path:
    """Give a file written through a private temp file (mode 0600) the usual mode.

    ``compressor.atomic`` writes via ``mkstemp``; artifacts meant to be shipped and
    shared should get the permissions a plain ``open()`` would have given them."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)
    return path


def file_record(path: Path) -> dict:
    """sha256 and size, so a deployment can check it ships what was verified."""
    return {"sha256": file_sha256(path), "size": path.stat().st_size}
