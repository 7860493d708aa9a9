"""Ai-semble model services: one gRPC server per area."""
