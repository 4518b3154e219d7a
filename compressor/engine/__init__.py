"""The pruning engine: analyse a model into channel groups, cost and rank them, choose a
plan, apply it (slicing) or simulate it (masking), and check the result.

It knows nothing of schedules, training, model zoos, export or the CLI: those layers
sit above it and call down into it (``tests/unit/test_layers.py`` keeps it so).
"""
