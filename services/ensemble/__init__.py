"""The ensemble service: one input on several models in parallel, results combined by a strategy."""
