"""Pruning inside other training frameworks' loops (Lightning)."""
