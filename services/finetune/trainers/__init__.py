"""Trainers: one class per kind of fine-tuning, run by the worker process through one training loop."""
