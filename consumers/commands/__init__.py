"""Subcommands of the ``interest-stream`` CLI, one module each (see :mod:`consumers.cli`)."""
