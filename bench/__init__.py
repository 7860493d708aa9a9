"""Benchmarks: each area measures our path and the bare model in the same run and prints the ratios."""
