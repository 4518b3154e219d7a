"""Keeping third-party chatter out of the CLI's output (their exceptions go on one line
with ``compressor.errors.one_line``).

The exporters, onnxsim and the FP16 converter print progress, emit warnings and log
through ``logging`` (onnxscript's optimiser warns once per op it cannot fold).  The
command promises a short summary or one error line, and the manifest records what
matters (exporter used, fallback reason, why simplification was skipped).
"""
from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence stdout prints, warnings and log records below ERROR, restoring all three."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)
