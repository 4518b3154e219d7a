"""Output directories: proven writable before any work, never someone else's files.

* ``ensure_writable_dir``: create the directory and write (then remove) a probe file
  in it, so ``--out afile/sub`` or ``--out /proc/x`` fails with one line before an
  epoch is trained or a variant timed, not after.
* ``refuse_links``: a directory the tool names itself (``RUN/bench``) that is a
  symbolic link is refused, so writes never leave the directory the user gave.
* ``check_fresh_output``: a fresh run goes into a missing or empty directory; one
  holding another run is for ``--resume``, one holding anything else needs
  ``--overwrite`` (the run then replaces its own artifact names there and leaves the
  rest alone).
* ``check_free_names``: the same rule for the named files a command writes (bench's
  reports, eval's ``--json``): a name where nothing is may be written; a name holding
  anything is an earlier result or someone's own file, replaced only with ``--overwrite``
  (or when ``ours`` proves it is a file the command may supersede); a directory never.
* ``remove_stale_temps``: the temp and staging files a killed process leaves
  (``.checkpoint.pt.*.tmp``, ``.model.pt.*.tmp``, ``.model.onnx.staging``) are removed
  when the next one starts; nothing else is touched.

Stdlib only: the CLI calls these before it imports torch.
"""
from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Callable

from compressor.artifacts import CHECKPOINT_FILE
from compressor.errors import CompressorError

log = logging.getLogger(__name__)

# compressor.atomic's temp files are ".NAME.<random>.tmp"; exporters' staging files ".NAME.staging"
# and their scratch files ".NAME.scratch".  Only dot-files of these shapes are ever removed.
STALE_SUFFIXES = (".tmp", ".staging", ".scratch")


class OutputDirError(CompressorError):
    """An output location that cannot be used: unwritable, or holding files that are not ours."""


def ensure_writable_dir(path: Path, what: str = "output directory", keep: bool = True) -> Path:
    """Create ``path`` and prove a file can be created in it, or raise one line.

    ``keep=False`` removes again the directories this call created: the work that
    follows may still fail on something else (an unknown model), and a failed command
    should leave no trace; the writer creates them for real when it writes.
    """
    path = Path(path)
    if lexists(path, what) and not path.is_dir():
        raise OutputDirError(f"cannot write to {what} {path}: it is a file, not a directory")
    created = [p for p in (path, *path.parents) if not p.exists()]
    try:
        path.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(dir=path, prefix=".write-test-")
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        raise OutputDirError(f"cannot write to {what} {path}: {_reason(error)}") from error
    finally:
        for directory in created if not keep else ():
            with contextlib.suppress(OSError):  # not created after all, or no longer empty
                directory.rmdir()
    return path


def refuse_links(path: Path, depth: int, what: str) -> None:
    """The last ``depth`` components of ``path`` are directories the tool names and makes itself
    (``RUN/bench``, ``bench/cache/<digest>``), not ones the user named: a symbolic link at one
    was planted, and writing through it would put files outside the directory the user gave."""
    path = Path(path)
    for part in [path, *path.parents][:depth]:
        if part.is_symlink():
            raise OutputDirError(f"cannot write to {what} {path}: {part} is a symbolic link, not a directory this "
                                 "tool made; remove the link")


def _reason(error: OSError) -> str:
    """Why, in words: a path component that is a file reads 'Not a directory'."""
    return error.strerror or type(error).__name__


def lexists(path: Path, what: str) -> bool:
    """Is anything (a dangling link too) at ``path``?  A name the OS cannot even look up (a
    component over 255 bytes: 'File name too long') is one line naming ``what`` (the option),
    not a traceback from the first ``stat`` some later check makes."""
    try:
        return path.is_symlink() or path.exists()
    except OSError as error:
        raise OutputDirError(f"cannot write to {what} {path}: {_reason(error)}") from error


def check_free_names(paths: list[tuple[str, Path]], overwrite: bool, remedy: str,
                     ours: Callable[[Path], bool] | None = None) -> None:
    """Refuse, in one line and before any work, to write where something already is.

    ``paths`` pairs each file a command will write with the option that named it (``""``
    for a default name).  An existing file or link is replaced only with ``overwrite``, or
    when ``ours(path)`` says it is the command's own earlier output that a new one may
    supersede (an earlier eval report); ``remedy`` says what to do instead.  A directory at
    a file's name is never replaced, and two options naming one file are refused: the
    second write would replace the first."""
    named = [(f"{option} {path}" if option else str(path), Path(path)) for option, path in paths]
    seen: dict[Path, str] = {}
    for label, path in named:
        key = Path(os.path.abspath(path))
        if key in seen:
            raise OutputDirError(f"{seen[key]} and {label} are one file; give each output its own name")
        seen[key] = label
    taken = [(label, path) for label, path in named if lexists(path, label)]
    for label, path in taken:
        if path.is_dir() and not path.is_symlink():
            raise OutputDirError(f"{label} is a directory; give a file name")
    refused = [label for label, path in taken if not overwrite and not (ours and ours(path))]
    if refused:
        one = len(refused) == 1
        raise OutputDirError(f"{', '.join(refused)} already exist{'s' if one else ''}; refused to replace "
                             f"{'it' if one else 'them'} ({remedy})")


def check_fresh_output(out: Path, overwrite: bool = False) -> None:
    """A fresh run may start in ``out``: missing, empty, or ``--overwrite`` given; never
    over another run (that is ``--resume``'s, whatever ``--overwrite`` says)."""
    out = Path(out)
    if lexists(out / CHECKPOINT_FILE, "--out"):
        raise OutputDirError(
            f"{out} already holds a run; pass --resume {out} to continue it, or choose another --out"
        )
    if out.is_dir() and not overwrite:
        theirs = sorted(p.name for p in out.iterdir() if not _is_stale_temp(p))
        if theirs:
            shown = ", ".join(theirs[:3]) + (f" and {len(theirs) - 3} more" if len(theirs) > 3 else "")
            raise OutputDirError(
                f"--out {out} is not empty ({shown}) and holds no run of this tool; choose an empty or new "
                "directory, or pass --overwrite to write this run's files there"
            )


def _is_stale_temp(path: Path) -> bool:
    return path.name.startswith(".") and path.name.endswith(STALE_SUFFIXES) and not path.is_dir()


def remove_stale_temps(out: Path) -> list[Path]:
    """Remove the temp/staging files a killed write left in ``out`` (links themselves, never
    their targets).  Call it only where no other process of ours is writing."""
    out = Path(out)
    if not out.is_dir():
        return []
    removed = [p for p in out.iterdir() if _is_stale_temp(p)]
    for path in removed:
        path.unlink(missing_ok=True)
    if removed:
        log.info("removed %d stale temp file(s) from %s", len(removed), out)
    return removed
