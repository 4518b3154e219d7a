"""The data floor: datasets, the built-in digits set, detection samples.

Below the training run, export, eval and bench, so every one of them reads images the same
way without importing the trainer (``tests/unit/test_layers.py`` says so):

* ``datasets``: ``DataConfig``, ``load_data`` and the deterministic batch schedule that
  training, calibration, the export gate and eval share;
* ``digits``: the handwritten digits shipped in the package (real images, offline);
* ``detection``: a small generated detection set for the detector example and tests.

A run's recorded data settings are read back by ``compressor.runfiles.rundir``.
"""
