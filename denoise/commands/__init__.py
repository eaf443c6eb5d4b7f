"""Subcommands of the ``denoise`` CLI; each is a thin wrapper over library functions."""
