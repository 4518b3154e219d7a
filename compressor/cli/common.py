"""What every ``compress`` command shares: one-line user errors, the C,H,W option parser and
the --trust-code flag.  Light on purpose (click only): ``compress --help`` imports it."""
from __future__ import annotations

import functools
import re

import click

from compressor.errors import CompressorError


def user_errors(command):
    """Print CompressorError as a one-line error instead of a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except CompressorError as error:
            raise click.ClickException(str(error)) from error

    return wrapper


def parse_input_size(ctx, param, value: str | None) -> tuple[int, int, int] | None:
    if value is None:
        return None
    parts = [p for p in re.split(r"[,x×\s]+", value.strip()) if p]
    if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise click.BadParameter(f"expected three positive integers C,H,W (e.g. 3,224,224), got '{value}'")
    return tuple(int(p) for p in parts)


def trust_code_flag(extra_help: str = ""):
    """The --trust-code flag (``compressor.trust``), with what it also covers in this command."""
    from compressor.trust import trust_code_option

    return trust_code_option(extra_help)
