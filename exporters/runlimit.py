"""A time limit on every ONNX Runtime run this toolkit makes.

An ONNX file is a program, not a table of weights: a valid graph whose ``Loop`` has a trip
count of 10^15 runs for ever, and ``compress eval FILE`` or ``compress bench FILE`` would
hang with it.  So every run -- eval's batches, bench's timed calls, the export gate's cases,
the INT8 gate's batches -- goes through ``RunLimit``: a watchdog thread sets ONNX Runtime's
``RunOptions.terminate`` once one run has taken longer than the limit, ONNX Runtime stops
between two kernels (inside a ``Loop`` too, between iterations), and the caller gets one
``RunLimitError`` line saying which limit was hit and how to raise it.

The watchdog is one thread per ``RunLimit`` that sleeps until the current run's deadline;
arming it costs a lock and a clock read per run, so bench's timed calls stay what they
time (a thread or a timer started per run would add tens of microseconds to each).

ONNX Runtime's INT8 calibrator (``quantize_static``) creates and runs its own session, which
no ``RunOptions`` reach; ``check_bounded`` refuses a graph with ``Loop`` or ``Scan`` before
it is handed over (the only nodes that run more than once per run).
"""
from __future__ import annotations

import logging
import math
import os
import threading
import time
import weakref
from typing import Callable, TypeVar

from compressor.errors import CompressorError

log = logging.getLogger(__name__)

LIMIT_ENV = "COMPRESS_ORT_RUN_LIMIT_S"
# Seconds one ONNX Runtime run may take.  The largest legitimate run here is a batch of
# eval (128 images at 224 px) through a big classifier on a few CPU cores: about a minute
# for a ViT-L; five minutes leaves room for slower machines and still ends a runaway graph.
DEFAULT_LIMIT_S = 300.0
# The ops that run a subgraph more than once per run: a trip count read from the file (or
# computed from the input) sets how long a run takes.  ``If`` runs one branch once.
REPEATING_OPS = ("Loop", "Scan")

T = TypeVar("T")


class RunLimitError(CompressorError):
    """One ONNX Runtime run took longer than the limit (and was stopped)."""


def limit_seconds() -> float:
    """The per-run limit: ``COMPRESS_ORT_RUN_LIMIT_S`` when set, else ``DEFAULT_LIMIT_S``.
    An environment variable rather than an option, so one setting reaches every command and
    the library alike (eval, bench, export's gate and INT8 checks)."""
    text = os.environ.get(LIMIT_ENV)
    if text is None or not text.strip():
        return DEFAULT_LIMIT_S
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise CompressorError(f"{LIMIT_ENV}={text!r} is not a positive, finite number of seconds")
    return value


class RunLimit:
    """Runs ``run(run_options)`` calls of one session, each stopped after ``seconds``.

    ``name`` is the file, for the error.  ``close()`` (or dropping the object) ends the
    watchdog thread."""

    def __init__(self, name: str, seconds: float | None = None) -> None:
        import onnxruntime as ort

        self.name = name
        self.seconds = limit_seconds() if seconds is None else seconds
        self._watch = _Watch(ort.RunOptions(), self.seconds)
        self._finalizer = weakref.finalize(self, self._watch.stop.set)

    @property
    def options(self):
        """The ``RunOptions`` every run of this limit is given."""
        return self._watch.options

    def __call__(self, run: Callable[[object], T]) -> T:
        watch = self._watch
        watch.begin(self.error)
        try:
            result = run(watch.options)
        except Exception as error:
            if watch.fired:
                raise self.error() from error
            raise
        finally:
            watch.end()
        if watch.fired:  # stopped just as it finished: it still took longer than the limit
            raise self.error()
        return result

    def error(self) -> RunLimitError:
        return RunLimitError(
            f"ONNX Runtime stopped {self.name}: one run took longer than the limit of {self.seconds:g} s per run "
            f"(a graph can loop for ever, e.g. a Loop node with a huge trip count); if the model is only slow, raise "
            f"the limit with the environment variable {LIMIT_ENV}=SECONDS"
        )

    def close(self) -> None:
        self._finalizer()

    @property
    def watching(self) -> bool:
        """Whether the watchdog thread is alive (tests: ``close`` ends it)."""
        thread = self._watch.thread
        return thread is not None and thread.is_alive()


class _Watch:
    """The state the watchdog thread shares with ``RunLimit``: the thread holds this, never the
    ``RunLimit``, so dropping the ``RunLimit`` ends the thread (its finalizer sets ``stop``)."""

    def __init__(self, options, seconds: float) -> None:
        self.options, self.seconds = options, seconds
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.started: float | None = None  # the current run's start (time.monotonic); None between runs
        self.fired = False
        self.thread: threading.Thread | None = None

    def begin(self, error: Callable[[], RunLimitError]) -> None:
        with self.lock:
            if self.fired:  # terminate stays set: every later run of this session would stop at once
                raise error()
            if self.stop.is_set():
                raise CompressorError("this ONNX Runtime run limit was closed")
            self.started = time.monotonic()
            if self.thread is None:
                self.thread = threading.Thread(target=_watchdog, args=(self,), name="ort-run-limit", daemon=True)
                self.thread.start()

    def end(self) -> None:
        with self.lock:
            self.started = None


def _watchdog(watch: _Watch) -> None:
    """Sleep until the current run's deadline (or ``seconds`` while idle); past it, terminate."""
    while not watch.stop.is_set():
        with watch.lock:
            started, now = watch.started, time.monotonic()
            if started is not None and now - started >= watch.seconds:
                watch.options.terminate = True
                watch.fired = True
                log.debug("ONNX Runtime run stopped after %.3g s (limit %.3g s)", now - started, watch.seconds)
                return
        watch.stop.wait(watch.seconds if started is None else started + watch.seconds - now)


def check_bounded(model, name: str, what: str) -> None:
    """Refuse a graph (an ``onnx.ModelProto``) with ``Loop`` or ``Scan`` nodes, subgraphs included,
    before it goes where ``RunLimit`` cannot reach (``what``: ONNX Runtime's INT8 calibrator)."""
    found = sorted({node.op_type for node in _nodes(model.graph) if node.op_type in REPEATING_OPS})
    if found:
        raise CompressorError(
            f"{name} has {' and '.join(found)} nodes, which repeat as often as the graph says; {what} runs it "
            "without a time limit, so it is refused"
        )


def _nodes(graph):
    """Every node of ``graph`` and of the subgraphs its nodes hold (If branches, Loop bodies)."""
    import onnx

    for node in graph.node:
        yield node
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                yield from _nodes(attribute.g)
            elif attribute.type == onnx.AttributeProto.GRAPHS:
                for sub in attribute.graphs:
                    yield from _nodes(sub)
