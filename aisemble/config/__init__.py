"""Config schemas: the registry (models), the mesh layout, and what they share (schema)."""
