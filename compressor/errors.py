"""The toolkit's user-facing error base class.

Anything raised as a ``CompressorError`` is a problem with the user's input or
model, and the CLI prints its message as one line with a non-zero exit instead of
a traceback.
"""


class CompressorError(Exception):
    """A user-facing error with a one-line message."""
