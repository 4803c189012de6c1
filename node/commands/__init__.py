"""Subcommands of the ``wulian`` CLI, one module each."""
