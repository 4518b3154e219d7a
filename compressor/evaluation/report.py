"""``EvalReport``: one row per model file, the data they saw, and where it is recorded.

Units: ``top1`` and ``top5`` in percent (as summary.json and metrics.jsonl record
accuracy), ``top1_agreement`` as a fraction 0-1 (as export's manifest records it),
``loss`` the mean cross-entropy per image.  ``to_dict()`` is the ``--json`` file;
``manifest_section()`` the ``evaluation`` key added to an export's manifest.json.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field

from compressor.export.manifest import finite_json

log = logging.getLogger(__name__)

REPORT_FORMAT = "compressor.eval/1"
OK = "ok"
SKIPPED = "skipped"


@dataclass
class EvalRow:
    name: str  # "pytorch" or the artifact's file name
    backend: str  # "pytorch", "onnxruntime", "tensorrt"
    provider: str | None  # where it ran; None when skipped
    file: str
    status: str = OK  # OK or SKIPPED
    reason: str | None = None  # why skipped
    images: int = 0
    top1: float | None = None
    top5: float | None = None
    loss: float | None = None
    correct_top1: int | None = None
    correct_top5: int | None = None
    top1_agreement: float | None = None  # with the PyTorch row, when there is one
    note: str | None = None

    def to_dict(self) -> dict:
        return finite_json(asdict(self))


@dataclass
class EvalReport:
    source: str
    source_kind: str  # "run", "file", "export", "files"
    data: dict  # dataset, data_dir, split, images, batch_size, num_classes, input_size, from
    rows: list[EvalRow]
    measured_at: str  # ISO 8601, UTC
    recorded_top1: float | None = None  # the run's own final validation top-1 (summary.json "top1")
    versions: dict = field(default_factory=dict)
    manifest_updated: str | None = None  # the manifest.json that got the evaluation section
    notes: list[str] = field(default_factory=list)  # what the user should know (an export left out, a run gone)

    @property
    def pytorch(self) -> EvalRow | None:
        return next((r for r in self.rows if r.backend == "pytorch" and r.status == OK), None)

    def row(self, name: str) -> EvalRow:
        return next(r for r in self.rows if r.name == name)

    def to_dict(self) -> dict:
        return {
            "format": REPORT_FORMAT,
            "source": self.source,
            "source_kind": self.source_kind,
            "dataset": self.data.get("dataset"),
            "split": self.data.get("split"),
            "images": self.data.get("images"),
            "data": dict(self.data),
            "recorded_top1": self.recorded_top1,
            "rows": [r.to_dict() for r in self.rows],
            "measured_at": self.measured_at,
            "versions": dict(self.versions),
            "manifest_updated": self.manifest_updated,
            "notes": list(self.notes),
        }

    def manifest_section(self) -> dict:
        return {
            "dataset": self.data.get("dataset"),
            "split": self.data.get("split"),
            "images": self.data.get("images"),
            "data_dir": self.data.get("data_dir"),
            "rows": [r.to_dict() for r in self.rows],
            "measured_at": self.measured_at,
        }

    def table(self) -> str:
        """The report as the CLI prints it: a header line, one line per row, the run's own top-1."""
        data = self.data
        where = data["dataset"] + (f" in {data['data_dir']}" if data.get("data_dir") else "")
        lines = [f"{self.source}: {data['images']} {data['split']} images of {where}, batch {data['batch_size']}"]
        headers = ["model", "backend", "provider", "images", "top-1", "top-5", "loss", "agree"]
        cells = [headers]
        for row in self.rows:
            if row.status != OK:
                cells.append([row.name, row.backend, "skipped", "", "", "", "", ""])
                continue
            cells.append([
                row.name, row.backend, row.provider or "", str(row.images), _percent(row.top1), _percent(row.top5),
                "-" if row.loss is None else f"{row.loss:.4f}",
                "-" if row.top1_agreement is None else f"{100 * row.top1_agreement:.2f}%",
            ])
        widths = [max(len(line[i]) for line in cells) for i in range(len(headers))]
        right = {3, 4, 5, 6, 7}
        for line in cells:
            lines.append("  " + "  ".join(c.rjust(w) if i in right else c.ljust(w)
                                          for i, (c, w) in enumerate(zip(line, widths))).rstrip())
        for row in self.rows:
            if row.status != OK:
                lines.append(f"  {row.name} skipped: {row.reason}")
            elif row.note:
                lines.append(f"  {row.name}: {row.note}")
        torch_row = self.pytorch
        if self.recorded_top1 is not None and torch_row is not None and data.get("from") == "run" \
                and data.get("split") == "val":
            same = abs(torch_row.top1 - self.recorded_top1) < 1e-6
            if data["images"] < (data.get("split_size") or data["images"]):
                verdict = "compare on the whole split (no --limit)"
            else:
                verdict = "reproduced" if same else (
                    f"differs by {torch_row.top1 - self.recorded_top1:+.2f} points (a run that validated on a GPU "
                    "or with --amp computed it there; on the CPU in fp32 it is reproduced exactly)")
            lines.append(f"  the run recorded top-1 {self.recorded_top1:.2f}% (summary.json): {verdict}")
        lines += [f"  note: {note}" for note in self.notes]
        if self.manifest_updated:
            lines.append(f"  recorded in {self.manifest_updated}")
        return "\n".join(lines)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}%"
