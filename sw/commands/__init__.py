"""Subcommands of the ``lowbit`` CLI, one module each.

A command module defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``; the
CLI finds every module in this package, so adding a command never edits a shared file. Commands that
produce results take ``--json`` (see :func:`lowbit.sw.cli.emit`).
"""
