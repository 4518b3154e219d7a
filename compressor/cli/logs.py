"""How ``compress`` shows what the library logs.

Library code never prints: it logs through ``logging.getLogger(__name__)``, so every
message is under the ``compressor`` logger.  Used as a library, nothing is set up
here: Python's own fallback (``logging.lastResort``) shows warnings and errors on
stderr, one plain line each, and info and debug lines stay silent until the caller
configures logging.

The command line owns its console, so for the length of one command it puts one
handler on the ``compressor`` logger that writes each message's text alone, where
the CLI printed it before it logged: info lines (the per-epoch lines of ``compress
prune``) on stdout, warnings, errors and debug lines on stderr.  ``-v`` lowers the
level to DEBUG, ``-q`` raises it to WARNING; errors that end a command are not log
records and stay one ``Error:`` line whatever the level.  When the command ends the
logger is put back as it was, so an in-process call (``CliRunner``, a test) leaves
no handler behind.
"""
from __future__ import annotations

import logging

import click

LOGGER = "compressor"


class ConsoleHandler(logging.Handler):
    """The message text alone; INFO on stdout, every other level on stderr.

    ``click.echo`` looks the streams up at each line (so a test runner's swapped
    ``sys.stdout`` is honoured) and flushes, as ``print(..., flush=True)`` did."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            click.echo(self.format(record), err=not logging.INFO <= record.levelno < logging.WARNING)
        except Exception:  # noqa: BLE001 - logging's contract: a failing handler never raises
            self.handleError(record)


def show_logs(ctx: click.Context, level: int) -> ConsoleHandler:
    """Route ``compressor``'s records at ``level`` and above to the console until ``ctx``
    closes.  The records do not also propagate to the root logger: a dependency that
    configured root logging must not print every line twice."""
    logger = logging.getLogger(LOGGER)
    saved = logger.level, logger.propagate
    handler = ConsoleHandler()
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False

    def restore() -> None:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]

    ctx.call_on_close(restore)
    return handler
