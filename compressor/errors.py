"""The toolkit's user-facing error base class.

Anything raised as a ``CompressorError`` is a problem with the user's input or
model, and the CLI prints its message as one line with a non-zero exit instead of
a traceback.
"""
import re


class CompressorError(Exception):
    """A user-facing error with a one-line message."""


# Deprecated names keep working, with a DeprecationWarning, until this release.
DEPRECATED_REMOVED_IN = "0.2"


def deprecated(old: str, new: str, stacklevel: int = 3) -> None:
    """Warn that ``old`` (a name kept for one release) is ``new`` now.  ``stacklevel`` 3
    points at the caller of the function that calls this."""
    import warnings

    warnings.warn(f"{old} is deprecated and will be removed in {DEPRECATED_REMOVED_IN}; use {new}",
                  DeprecationWarning, stacklevel=stacklevel)


# A terminal control sequence: ESC [ parameters letter (colours are "ESC[96m" ... "ESC[0m").
_ANSI_CODES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def one_line(error: BaseException | str, limit: int | None = 300) -> str:
    """``error`` squeezed onto one line (every run of whitespace, newlines included, one
    space) and its text cut at ``limit`` characters: the CLI promises one-line errors.
    An exception reads ``Type: message`` (just ``Type`` when it has no message); pass
    ``str(error)``, or any text, to get the message alone.  Every layer squeezes
    third-party messages with this one function.  Terminal colour codes (torch.export
    colours its messages) are dropped: they are noise in a log, a JSON report or a pipe."""
    text = " ".join(_ANSI_CODES.sub("", str(error)).split())
    if limit is not None:
        text = text[:limit]
    if isinstance(error, BaseException):
        return f"{type(error).__name__}: {text}" if text else type(error).__name__
    return text
