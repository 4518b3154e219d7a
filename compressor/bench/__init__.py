"""The latency benchmarker behind ``compress bench``.

Measure -> compare -> report: backends turn a model artifact into a ``Runnable``
(one inference on a buffer prepared once), ``timing`` runs dense and pruned
variants interleaved in rounds, ``stats`` summarises the samples, ``report``
writes the table, JSON, markdown and chart.  ``rounding`` uses the same timing to
find the channel multiple a backend rewards (``--round-to auto``).
"""
