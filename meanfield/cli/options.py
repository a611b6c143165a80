"""What every subcommand shares: the parser class, argument parsing helpers, number format.

Bad input anywhere raises ValueError (or :class:`UsageError` for argparse's own errors)
with a one-line message; :func:`meanfield.cli.main` prints it and exits with status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import math
import sys
import threading

from ..core.vocabulary import DEPTH_CONSTANT, Q0
from ..core.budget import check_memory
from ..progress import bar, quiet


class UsageError(Exception):
    """An argparse error, already formatted as one line."""


class Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own errors: keep them to one line, exit 2
        raise UsageError(f"{self.prog}: {message}")


def parse_range(text, name, bytes_per_point=8):
    """``START:STOP:N`` (inclusive, N points) or a comma-separated list -> numpy array.

    A list must be strictly increasing (an axis has one value per grid line: a repeated or
    out-of-order value would draw a scrambled diagram), and N is checked against the
    memory of the machine (``bytes_per_point`` per value) before anything is allocated.
    """
    import numpy as np

    text = str(text).strip()
    if not text:
        raise ValueError(f"{name}: empty; expected START:STOP:N or a comma-separated list of "
                         f"numbers")
    form = f"{name}: expected START:STOP:N or a comma-separated list of numbers, got {text!r}"
    try:
        if ":" in text:
            parts = text.split(":")
            if len(parts) != 3:
                raise ValueError(form)
            start, stop, n = float(parts[0]), float(parts[1]), int(parts[2])
        else:
            items = [v.strip() for v in text.split(",")]
            if any(not v for v in items):
                raise ValueError(form)
            values = np.array([float(v) for v in items])
            if not np.all(np.isfinite(values)):
                raise ValueError(f"{name}: values must be finite numbers, got {text!r}")
            dup = values[:-1][np.diff(values) == 0]
            if dup.size:
                raise ValueError(f"{name}: {dup[0]:g} appears twice in {text!r}; give each "
                                 f"value once")
            if np.any(np.diff(values) < 0):
                raise ValueError(f"{name}: values must be in increasing order, got {text!r}")
            return values
    except ValueError as exc:
        if str(exc).startswith(name):
            raise
        raise ValueError(form) from None
    if not (math.isfinite(start) and math.isfinite(stop)):
        raise ValueError(f"{name}: START and STOP must be finite, got {text!r}")
    if n < 1:
        raise ValueError(f"{name}: the number of points must be >= 1, got {n}")
    if n > 1 and not stop > start:
        raise ValueError(f"{name}: STOP must be greater than START in {text!r}")
    if n == 1 and stop != start:
        raise ValueError(f"{name}: one point needs START == STOP, got {text!r}")
    check_memory(n * bytes_per_point, f"{name} {text} ({n} points)")
    return np.linspace(start, stop, n)


def parse_depths(text, name="--depths"):
    """A comma-separated list of depths (integers >= 1), e.g. ``"4,8,16"``."""
    try:
        vals = [float(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{name}: expected a comma-separated list of integers, got {text!r}") \
            from None
    if not vals or any(not v.is_integer() or v < 1 for v in vals):
        raise ValueError(f"{name}: expected a comma-separated list of integers >= 1, got {text!r}")
    return [int(v) for v in vals]


def range_count(text):
    """Number of points ``text`` (as given to :func:`parse_range`) describes, without
    allocating them; None if it is malformed (parse_range then says why)."""
    text = str(text).strip()
    try:
        if ":" in text:
            return int(text.split(":")[2])
        return len(text.split(","))
    except (ValueError, IndexError):
        return None


def check_grid(counts, bytes_per_point, what):
    """Refuse a grid of ``prod(counts)`` points that the machine cannot hold."""
    n = 1
    for c in counts:
        if c is None:
            return
        n *= max(int(c), 0)
    check_memory(n * bytes_per_point, f"{what} ({n} points)")


def show_progress(requested=True) -> bool:
    """Whether a command's own progress bar should show (not with MEANFIELD_NO_PROGRESS)."""
    return bool(requested) and not quiet()


def progress(iterable=None, total=None, desc=None, unit="it"):
    """A tqdm bar on stderr that appears only if the work takes over a second and is
    erased when it ends, so stdout stays a clean table."""
    return bar(iterable, total=total, desc=desc, unit=unit)


@contextlib.contextmanager
def busy(desc):
    """A progress line (elapsed time) for work that has no count, shown after a second."""
    from tqdm import tqdm

    if quiet():
        yield
        return
    done = threading.Event()

    def tick():
        if done.wait(1.0):
            return
        bar = tqdm(total=None, desc=desc, bar_format="{desc}: {elapsed} elapsed", leave=False,
                   file=sys.stderr)
        try:
            while not done.wait(0.5):
                bar.refresh()
        finally:
            bar.close()

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(timeout=2)


def fmt(v, digits=12):
    """A number for tables: ``g`` format with ``digits`` significant digits, inf/nan as words."""
    if isinstance(v, float):
        if math.isinf(v) or math.isnan(v):
            return str(v)
        return f"{v:.{digits}g}"
    return str(v)


def add_activation(sp, default=None):
    """The positional ACT argument (optional when ``default`` is given)."""
    if default is None:
        sp.add_argument("activation", help="activation name (see `meanfield activations`)")
    else:
        sp.add_argument("activation", nargs="?", default=default,
                        help=f"activation (default {default})")


def add_point(sp):
    """--sw2 and --sb2 as single required numbers."""
    sp.add_argument("--sw2", type=float, required=True, help="weight variance sigma_w^2")
    sp.add_argument("--sb2", type=float, required=True, help="bias variance sigma_b^2")


def add_network(sp):
    """ACT, --sw2, --sb2 and --depth: a network of depth L at one initialization."""
    add_activation(sp)
    add_point(sp)
    sp.add_argument("--depth", type=int, required=True, help="number of layers L >= 1")


def add_solver_options(sp, depth=True):
    """--rho, --q0 (and --depth-constant) of analyze/diagram."""
    sp.add_argument("--rho", type=float, default=1.0, help="dropout keep probability (default 1)")
    sp.add_argument("--q0", type=float, default=Q0, help=f"initial length q^0 (default {Q0:g})")
    if depth:
        add_depth_constant(sp)


def add_depth_constant(sp):
    sp.add_argument("--depth-constant", type=float, default=DEPTH_CONSTANT,
                    help=f"max_depth = C * xi_c (default {DEPTH_CONSTANT:g})")


def add_sw2_depth_grid(sp, sw2, depths, sw2_note=""):
    """--sw2 START:STOP:N | LIST, --sb2 and --depths of the experiments over (sw2, depth)."""
    sp.add_argument("--sw2", default=sw2, help=f"START:STOP:N or a list (default {sw2}){sw2_note}")
    sp.add_argument("--sb2", type=float, default=0.05, help="bias variance (default 0.05)")
    first = depths.split(",")
    sp.add_argument("--depths", default=depths, help="comma-separated depths (default "
                    f"{','.join(first[:2])},...,{first[-1]})")


def add_outputs(sp, output, *, required=False, metavar=None, png=None, replaces="existing outputs"):
    """-o/--output, an optional --png and --overwrite, worded alike on every command.

    ``--overwrite`` only ever replaces what meanfield itself wrote (see
    :mod:`meanfield.sweeps.output`); the help says so wherever it appears.
    """
    sp.add_argument("-o", "--output", required=required, metavar=metavar, help=output)
    if png:
        sp.add_argument("--png", help=png)
    sp.add_argument("--overwrite", action="store_true",
                    help=f"replace {replaces} (only what meanfield wrote)")


def command(subparsers, name, func):
    """Add the subcommand ``name`` run by ``func``, documented by ``func``'s docstring.

    The docstring's first paragraph is the one-line help of ``meanfield -h``, the second
    the description of ``meanfield NAME -h``, so a command's text lives with its handler.
    """
    paragraphs = [" ".join(p.split()) for p in inspect.cleandoc(func.__doc__).split("\n\n")]
    head = paragraphs[0].rstrip(".")
    # argparse's help lines start in lower case; an acronym (NTK) keeps its capitals.
    if not head.split()[0][1:].isupper():
        head = head[:1].lower() + head[1:]
    p = subparsers.add_parser(name, help=head, description=paragraphs[1])
    p.set_defaults(func=func)
    return p


def add_scheduler(sp, what="chunks"):
    """--scheduler and --workers: where the dask tasks of a resumable store run."""
    sp.add_argument("--scheduler", metavar="ADDRESS",
                    help="address of a running dask scheduler (e.g. tcp://host:8786); default: "
                         "a local cluster of one process per core")
    sp.add_argument("--workers", type=int, default=None, metavar="N",
                    help=f"local worker processes when no --scheduler is given (1: compute the "
                         f"{what} in this process)")


@contextlib.contextmanager
def dask_client(address):
    """A dask.distributed Client connected to ``address`` (None: yields None), closed after."""
    if not address:
        yield None
        return
    from dask.distributed import Client

    try:
        client = Client(address, timeout="10s")
    except OSError as err:
        raise ValueError(f"cannot connect to dask scheduler {address!r}: {err}") from None
    try:
        yield client
    finally:
        client.close()


def numbers(flag, text, kind):
    """A comma-separated list of ``kind`` (int, float) values, or ValueError naming ``flag``."""
    items = [v.strip() for v in str(text).split(",")]
    try:
        if any(not v for v in items):
            raise ValueError
        return [kind(v) for v in items]
    except ValueError:
        raise ValueError(f"{flag}: expected a comma-separated list of numbers, got {text!r}") \
            from None
