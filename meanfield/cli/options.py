"""What every subcommand shares: the parser class, argument parsing helpers, number format.

Bad input anywhere raises ValueError (or :class:`UsageError` for argparse's own errors)
with a one-line message; :func:`meanfield.cli.main` prints it and exits with status 2.
"""

from __future__ import annotations

import argparse
import math

from ..core.vocabulary import DEPTH_CONSTANT, Q0


class UsageError(Exception):
    """An argparse error, already formatted as one line."""


class Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own errors: keep them to one line, exit 2
        raise UsageError(f"{self.prog}: {message}")


def parse_range(text, name):
    """``START:STOP:N`` (inclusive, N points) or a comma-separated list -> numpy array."""
    import numpy as np

    text = str(text).strip()
    form = f"{name}: expected START:STOP:N or a comma-separated list of numbers, got {text!r}"
    try:
        if ":" in text:
            parts = text.split(":")
            if len(parts) != 3:
                raise ValueError(form)
            start, stop, n = float(parts[0]), float(parts[1]), int(parts[2])
        else:
            return np.array([float(v) for v in text.split(",") if v.strip()])
    except ValueError:
        raise ValueError(form) from None
    if n < 1:
        raise ValueError(f"{name}: the number of points must be >= 1, got {n}")
    if n > 1 and not stop > start:
        raise ValueError(f"{name}: STOP must be greater than START in {text!r}")
    return np.linspace(start, stop, n)


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
