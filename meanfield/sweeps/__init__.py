"""Sweeps at scale: declarative specs (``spec``), the dataset layout (``layout``), chunked
zarr stores (``store``), and resumable, distributed runs (``run``)."""

from .run import sweep
from .spec import SweepSpec, load_spec, parse_spec
from .store import SweepStatus, open_sweep, sweep_status

__all__ = ["SweepSpec", "SweepStatus", "load_spec", "parse_spec", "sweep", "open_sweep",
           "sweep_status"]
