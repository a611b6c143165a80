"""The ``meanfield`` command.

Bad input prints one line, ``meanfield: error: <message>``, and exits with status 2; no
traceback.  Subcommands are thin: parse, call the library, print or write.  Each module
below registers its subcommands in :func:`build_parser`, in the order of ``--help``.
"""

from __future__ import annotations

import sys

from ..explore import command as explore
from . import core_commands, experiments, kernel, plot, sweep
from .options import Parser, UsageError, parse_range

__all__ = ["main", "build_parser", "parse_range"]

# The subcommand modules, registered statically (no optional imports: each is part of the
# package; `explore` imports Panel only when it runs).
COMMANDS = (core_commands, kernel, experiments, sweep, plot, explore)


def build_parser():
    p = Parser(prog="meanfield", description="Mean-field theory of deep networks at "
               "initialization: phases, depth scales, critical lines (variances sw2, sb2).")
    from .._version import __version__

    p.add_argument("--version", action="version", version=f"meanfield {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for module in COMMANDS:
        module.register(sub)
    return p


def main(argv=None):
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        args.func(args)
        return 0
    except UsageError as exc:
        print(f"{exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"meanfield: error: {msg}", file=sys.stderr)
        return 2
    except (FileNotFoundError, PermissionError, IsADirectoryError) as exc:
        print(f"meanfield: error: {exc.strerror}: {exc.filename}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("meanfield: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
