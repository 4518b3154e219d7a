"""One `compress prune` run: data, the training loop, checkpoints, the run's artifacts
(metrics, plots, summary) and the pruned model file format."""
