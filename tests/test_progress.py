"""Progress bars: they count the work and never change a value."""

from __future__ import annotations

import numpy as np
import pytest

import meanfield as mf
from meanfield import progress
from meanfield.ntk import recursion
from meanfield.ntk.recursion import setup


@pytest.mark.parametrize("act", ["erf", "tanh"])
def test_chunked_layers_equal_one_pass(act, monkeypatch):
    """compute() with a progress callback goes through the layers in chunks; the block
    state carried between chunks must give the one-pass values bit for bit."""
    rng = np.random.default_rng(3)
    X = rng.standard_normal((40, 7)) * rng.uniform(0.7, 1.3, (40, 1))
    n, L = X.shape[0], 12
    a = mf.get_activation(act)
    blocks = [(np.arange(n), np.arange(n), True)]
    whole = [(np.empty((L, n, n)), np.empty((L, n, n)))]
    setup(a, 1.8, 0.1, X, blocks).compute(L, whole)
    # Force chunks of one, then several layers: the interval is measured, so make it tiny
    # for the first call and huge afterwards.
    monkeypatch.setattr(recursion, "PROGRESS_SECONDS", 0.0)
    counts = []
    parts = [(np.empty((L, n, n)), np.empty((L, n, n)))]
    setup(a, 1.8, 0.1, X, blocks).compute(L, parts, progress=counts.append)
    assert counts == [1] * (L - 1)
    monkeypatch.setattr(recursion, "PROGRESS_SECONDS", 1e9)
    counts = []
    setup(a, 1.8, 0.1, X, blocks).compute(L, parts, progress=counts.append)
    assert counts[0] == 1 and sum(counts) == L - 1 and len(counts) == 2
    for (S, T), (S2, T2) in zip(whole, parts):
        assert np.array_equal(S, S2) and np.array_equal(T, T2)


def test_kernels_with_bar_shown_are_unchanged(monkeypatch, capsys):
    rng = np.random.default_rng(4)
    X = rng.standard_normal((30, 5)) * rng.uniform(0.8, 1.2, (30, 1))
    quiet = mf.kernels(X, "gelu", 2.0, 0.05, 9, progress=False)
    monkeypatch.delenv("MEANFIELD_NO_PROGRESS", raising=False)
    monkeypatch.setattr(progress, "quiet", lambda: False)  # as on a terminal
    monkeypatch.setattr(recursion, "PROGRESS_SECONDS", 0.0)
    shown = mf.kernels(X, "gelu", 2.0, 0.05, 9)
    kept = mf.kernels(X, "gelu", 2.0, 0.05, 9, depths=[3, 9])
    assert capsys.readouterr().out == ""  # bars go to stderr only
    assert quiet.identical(shown)
    assert np.array_equal(kept.ntk.values, quiet.ntk.sel(depth=[3, 9]).values)


def test_bars_draw_only_on_a_terminal(monkeypatch):
    class Stream:
        def __init__(self, tty):
            self.tty = tty

        def isatty(self):
            return self.tty

    monkeypatch.delenv("MEANFIELD_NO_PROGRESS", raising=False)
    monkeypatch.delitem(__import__("sys").modules, "ipykernel", raising=False)
    monkeypatch.setattr("sys.stderr", Stream(False))
    assert progress.quiet()  # a log file gets no carriage-return updates
    monkeypatch.setattr("sys.stderr", Stream(True))
    assert not progress.quiet()
    monkeypatch.setenv("MEANFIELD_NO_PROGRESS", "1")
    assert progress.quiet()
