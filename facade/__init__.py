"""The HTTP facades in front of the gateway: thin translators to its gRPC services (no model logic)."""
