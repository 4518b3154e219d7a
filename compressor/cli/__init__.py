"""The ``compress`` command line (``compressor.cli.main``)."""
from compressor.cli.main import main

__all__ = ["main"]
