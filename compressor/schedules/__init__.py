"""When and how much to prune during training: the one-cycle controller (``onecycle``), its
stability indicators, the shrinking regulariser and the loss-aware step schedule (``laasp``).
Built on the engine; knows nothing of data loading, run directories, export or the CLI."""
