"""The trust boundary: a file is data, never code, unless the caller says otherwise.

Model files and checkpoints are read with ``torch.load(weights_only=True)``, so no
pickle can run code.  But they also store the *name* of the model to rebuild, and a
``module.path:factory`` name means "import this module and call this function":
importing runs the module's top level, and the module can be anything importable
(``http.server:test`` serves the current directory, ``os:fork`` forks, a ``pwn.py``
shipped next to a run folder runs whatever it likes).  So a factory name read from a
file is refused unless the caller opts in with ``--trust-code`` (``trust_code=True``
in Python), the convention users know from model hubs.  Zoo, torchvision and
``timm:`` names only choose among constructors that are installed as packages and
never import a module the name picks, so they need no opt-in.

A name the user typed (``--model``, a model-name SOURCE, ``zoo.build`` in Python) is
the user's own decision and is never checked here.

Stdlib only: the CLI imports this module for its option help without loading torch.
"""
from __future__ import annotations

from compressor.errors import CompressorError

TIMM_PREFIX = "timm:"  # compressor.models.timm_models.PREFIX, repeated here to keep torch out of the CLI's import

TRUST_CODE_HELP = (
    "Let a model file or checkpoint whose model is a module.path:factory import that module and run its "
    "code (searched for as a typed --model is, the current directory included). Off by default: such a "
    "file is refused with one line. Zoo, torchvision and timm: models never need it."
)


def trust_code_option(more: str = ""):
    """``--trust-code`` for every command that loads a model file or checkpoint; ``more``
    adds what else the command reads a model name from."""
    import click

    return click.option("--trust-code", is_flag=True, help=TRUST_CODE_HELP + more)


class UntrustedCodeError(CompressorError):
    """A file names Python code to import, and the caller did not pass ``trust_code``."""


def is_factory_name(name: str) -> bool:
    """``package.module:factory`` (anything with a colon that is not ``timm:``)."""
    return ":" in name and not name.startswith(TIMM_PREFIX)


def check_trusted(name: str, where: str, trust_code: bool) -> None:
    """Refuse a ``module.path:factory`` name read from ``where`` unless ``trust_code``.

    Called before anything is imported: the refusal must leave the named module (and
    ``sys.path``) untouched, or the check would come too late to matter.
    """
    if trust_code or not is_factory_name(name):
        return
    module = name.partition(":")[0]
    where = where.replace("\n", "\\n").replace("\r", "\\r")  # a hostile path cannot add a line either
    raise UntrustedCodeError(
        f"{where} names the Python factory {_shown(name)}: loading it would import module {_shown(module)} "
        "and run its code; refused (pass --trust-code, or trust_code=True in Python, only if you trust that code)"
    )


def _shown(text: str, limit: int = 80) -> str:
    """Quoted, escaped (a name with a newline cannot break the one-line error) and short."""
    return repr(text if len(text) <= limit else text[:limit] + "...")
