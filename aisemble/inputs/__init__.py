"""Inputs a request carries that need checking and decoding before a model sees them (images)."""
