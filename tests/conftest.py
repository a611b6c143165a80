"""Shared test settings."""

import pytest


@pytest.fixture(autouse=True)
def _no_progress_bars(monkeypatch):
    # Progress displays appear after a second of work (a cold Numba compile is enough);
    # the tests compare stderr exactly, so they run without them.
    monkeypatch.setenv("MEANFIELD_NO_PROGRESS", "1")
