"""Vision backends: one class per way of running a vision model."""
