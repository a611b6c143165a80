"""Sweeps at scale: declarative specs (``spec``), the dataset layout (``layout``), chunked
zarr stores (``store``), and resumable, distributed runs (``run``) on one scheduler
(``execute``); kernels too large for memory, block by block into a store (``kernel_run``,
``kernel_store``, ``kernel_table``)."""

from .kernel_run import kernels_to_store
from .kernel_store import KernelStoreStatus, kernel_store_status, open_kernels
from .run import sweep
from .spec import SweepSpec, load_spec, parse_spec
from .store import SweepStatus, open_sweep, sweep_status

__all__ = ["SweepSpec", "SweepStatus", "load_spec", "parse_spec", "sweep", "open_sweep",
           "sweep_status", "kernels_to_store", "open_kernels", "kernel_store_status",
           "KernelStoreStatus"]
