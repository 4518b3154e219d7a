"""The one kind of progress bar every command shows (prune's epochs, eval's batches, bench's
cells): tqdm on stderr, gone when done, and only when stderr is a terminal -- a log file, a
pipe or CI gets the commands' lines, never a bar's redraws."""
from __future__ import annotations

import sys


def progress_bar(total: int, desc: str, **options):
    from tqdm.auto import tqdm  # here: `compress --help` must not import it

    # disable=None is tqdm's "off unless the stream is a terminal"
    return tqdm(total=total, desc=desc, leave=False, file=sys.stderr, dynamic_ncols=True, disable=None, **options)
