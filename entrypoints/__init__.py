"""Composition roots: the `aisemble` command and the mesh launcher, the only code that knows every service."""
