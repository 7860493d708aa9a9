"""Who may call what: API keys, roles, per-key quotas and usage, the mesh's certificates (grpc-free)."""
