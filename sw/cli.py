"""The ``lowbit`` command line: one entry point, subcommands discovered from ``lowbit.sw.commands``."""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys

from . import commands
from .errors import LowbitError

__all__ = ["main", "build_parser", "emit"]


class _Parser(argparse.ArgumentParser):
    # argparse prints usage plus an error; we want one line that says what to do.
    def error(self, message):
        sys.stderr.write(f"lowbit: error: {message} (see '{self.prog} --help')\n")
        sys.exit(2)


def _command_modules():
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            yield importlib.import_module(f"{commands.__name__}.{info.name}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="lowbit", description="Bit-exact low-bit neural-network accelerators for open FPGAs.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for module in _command_modules():
        cmd = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def emit(result, as_json: bool, text: str | None = None, stream=None) -> None:
    """Print a command's result: ``json.dumps(result)`` with ``--json``, else ``text`` (or the dict)."""
    stream = stream or sys.stdout
    if as_json:
        stream.write(json.dumps(result, indent=2, sort_keys=True, default=_json_default) + "\n")
    else:
        stream.write((text if text is not None else "\n".join(f"{k}: {v}" for k, v in result.items())) + "\n")
    stream.flush()


def _json_default(obj):
    import numpy as np
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"cannot encode {type(obj).__name__} as JSON")


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except LowbitError as exc:
        sys.stderr.write(f"lowbit: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("lowbit: interrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
