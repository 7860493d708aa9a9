"""Test pictures: generated on the fly (text lines, documents, broken files) or taken from installed packages."""
