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
    """Silence prints (stdout and stderr), warnings and log records, restoring all three.

    torch.export logs a whole graph dump at ERROR when a model branches on a value;
    the failure itself comes back as an exception, which the caller reports on one line."""
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)
