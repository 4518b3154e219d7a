"""``python -m compressor ...`` (also how torchrun starts it)."""
from compressor.cli import main

main()
