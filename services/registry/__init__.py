"""The registry service: the control plane of the mesh, the one writer of the model registry."""
