"""The `tunegate` command."""
