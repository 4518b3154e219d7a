"""``stages.json``: which stages of a ``compress run`` pipeline are done, with what settings.

Each finished stage is recorded with the files it wrote and their sha256; a stage counts as
done on ``--resume`` only while every one of those files is still there with the same bytes
(present and complete).  A stage that is not done runs again, and so does every stage after
it, since each reads what the one before wrote.  The file is written atomically after each
stage, so an interrupted pipeline leaves the record of the stages before the interruption.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from compressor.artifacts import RunStages, problems
from compressor.atomic import atomic_write_text
from compressor.errors import CompressorError
from compressor.hashing import file_sha256

STAGES_FILE = "stages.json"
FORMAT = "compressor.run-stages/1"
STAGES = ("prune", "export", "eval", "bench", "report")
MAX_BYTES = 1 << 20  # a record is a few KB; a larger file is not one


@dataclass
class Stages:
    out: Path
    settings: dict  # the options of the stages after prune (prune keeps its own in its checkpoint)
    done: dict[str, dict] = field(default_factory=dict)  # stage -> command, finished_at, files

    @property
    def path(self) -> Path:
        return self.out / STAGES_FILE

    @classmethod
    def load(cls, out: Path) -> Stages:
        path = Path(out) / STAGES_FILE
        if path.is_symlink() or not path.is_file():
            raise CompressorError(f"{out} holds no `compress run` pipeline (no {STAGES_FILE}): nothing to resume")
        try:
            with path.open("rb") as handle:
                data = json.loads(handle.read(MAX_BYTES + 1).decode("utf-8"))
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as error:
            raise CompressorError(f"{path} is not a readable `compress run` record ({type(error).__name__})") from None
        if not _well_formed(data):
            raise CompressorError(f"{path} is not a `compress run` record of this version (format {FORMAT})")
        return cls(Path(out), data["settings"], data["stages"])

    def save(self) -> None:
        atomic_write_text(self.path, json.dumps({"format": FORMAT, "settings": self.settings, "stages": self.done},
                                                indent=1, allow_nan=False) + "\n")

    def complete(self, stage: str) -> bool:
        """Recorded as finished, and every file it wrote still there with the bytes it wrote."""
        record = self.done.get(stage)
        if record is None:
            return False
        for name, digest in record["files"].items():
            path = self.out / name
            if path.is_symlink() or not path.is_file() or file_sha256(path) != digest:
                return False
        return True

    def record(self, stage: str, command: str, files: list[Path]) -> None:
        """``stage`` has finished, having written ``files`` (inside the output directory)."""
        self.done[stage] = {
            "command": command,
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "files": {str(Path(f).relative_to(self.out)): file_sha256(Path(f)) for f in files},
        }
        self.save()

    def forget(self, stage: str) -> None:
        """About to run ``stage`` (again): until it finishes it is not done."""
        if self.done.pop(stage, None) is not None:
            self.save()


def _well_formed(data) -> bool:
    if problems(RunStages, data) or data["format"] != FORMAT or not set(data["stages"]) <= set(STAGES):
        return False
    # names inside the run directory only: a record must not point the check elsewhere
    return all(_inside(name) for record in data["stages"].values() for name in record["files"])


def _inside(name: str) -> bool:
    path = Path(name)
    return not path.is_absolute() and ".." not in path.parts and name != ""
