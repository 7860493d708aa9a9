"""The model store: artifacts with manifests and checksums, and the recipes that build them from installed packages."""
