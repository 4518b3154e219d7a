"""The run-files floor: what a `compress prune` run leaves on disk, and how it is read back.

Above data and the model zoo, below the training run, export, eval and bench: the trainer
writes these files, and everything after it reads them through this floor, never through
the trainer (``tests/unit/test_layers.py`` forbids export, evaluation and bench to import
``compressor.training``):

* ``modelfile``: the pruned model file format (``ModelSpec``, ``save_pruned``,
  ``load_pruned``, ``rebuild``), read without unpickling arbitrary objects;
* ``integrity``: the sha256 digest a model file and a checkpoint carry, checked on load;
* ``rundir``: a run directory's recorded data settings (``summary.json``'s ``data``), read
  back as data.

The file names of a run directory (``summary.json``, ``model.pt``, ``checkpoint.pt``) are
in ``compressor.artifacts``, one floor lower, because the output-directory checks of the
base floor (``compressor.outdir``) need them too.
"""
