"""The `aisemble` sub-commands, one module per area; entrypoints/cli.py assembles them into one parser."""
