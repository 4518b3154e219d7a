"""One `compress prune` run: data, the training loop, checkpoints, the run's artifacts
(metrics, plots, summary).  The pruned model file format it writes is
``compressor.runfiles.modelfile``, one floor lower, where export, eval and bench read it."""
