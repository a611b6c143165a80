"""The ``meanfield`` command.

Bad input prints one line, ``meanfield: error: <message>``, and exits with status 2; no
traceback.  Subcommands are thin: parse, call the library, print or write.  Each module
below registers its subcommands in :func:`build_parser`, in the order of ``--help``.
"""

from __future__ import annotations

import logging
import os
import sys

from ..explore import command as explore
from . import core_commands, experiments, generalization, kernel, plot, predict, sweep
from ..sweeps.output import os_error_text
from .options import Parser, UsageError, parse_range

__all__ = ["main", "build_parser", "parse_range"]

# The subcommand modules, registered statically (no optional imports: each is part of the
# package; `explore` imports Panel only when it runs).
COMMANDS = (core_commands, kernel, predict, experiments, generalization, sweep, plot, explore)


def build_parser():
    p = Parser(prog="meanfield", description="Mean-field theory of deep networks at "
               "initialization: phases, depth scales, critical lines (variances sw2, sb2).")
    from .._version import __version__

    p.add_argument("--version", action="version", version=f"meanfield {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for module in COMMANDS:
        module.register(sub)
    return p


def _quiet_stdout():
    """After a broken pipe: point stdout at /dev/null so the interpreter's final flush
    cannot fail again (and print "Exception ignored ...")."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


def _silence_dask_logs():
    """distributed logs every closed comm and cancelled task while a cluster shuts down
    after Ctrl-C; none of that is news to someone who pressed Ctrl-C."""
    for name in ("distributed", "tornado", "asyncio"):
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)


def _error(msg):
    first = str(msg).strip().splitlines()
    print(f"meanfield: error: {first[0] if first else 'failed'}", file=sys.stderr)
    return 2


def main(argv=None):
    """Run the ``meanfield`` command; returns the exit status.

    0: done; 2: bad input or a failure, one line on stderr; 130: Ctrl-C (one line);
    141: stdout was closed early (``meanfield critical ... | head``), nothing printed.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        args.func(args)
        sys.stdout.flush()  # a closed pipe shows up here, not at interpreter exit
        return 0
    except BrokenPipeError:
        _quiet_stdout()
        return 141
    except KeyboardInterrupt:
        _silence_dask_logs()
        print("\nmeanfield: interrupted", file=sys.stderr)
        return 130
    except UsageError as exc:
        print(f"{exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        return _error(str(exc) or type(exc).__name__)
    except MemoryError:
        return _error("out of memory; try a smaller grid, depth, width or count")
    except OSError as exc:
        where = f": {exc.filename}" if getattr(exc, "filename", None) else ""
        return _error(f"{os_error_text(exc)}{where}")
    except Exception as exc:  # the last resort: one line, never a traceback
        if os.environ.get("MEANFIELD_DEBUG"):
            raise
        return _error(f"internal error ({type(exc).__name__}: {exc}); set MEANFIELD_DEBUG=1 "
                      f"for the traceback")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
