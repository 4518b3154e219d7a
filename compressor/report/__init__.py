"""The library behind ``compress run``: which stages of a pipeline are done (``stages``), and
the one report that joins what the stages wrote (``collect`` reads the files, ``render``
writes report.md and report.html).

The report copies every number from the files the stages wrote (summary.json, the eval
report, the export's manifest.json, bench.json); it measures and recomputes nothing, so
it always says what the separate commands said.  A layer above bench, below the CLI.
"""
