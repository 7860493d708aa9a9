"""The gateway: the mesh's front door (registry, model selection, routing, cache)."""
