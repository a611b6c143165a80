"""Bounded work for sweeps: the checks live in :mod:`meanfield.core.budget` (the solvers
and kernels below the sweeps refuse oversized work too); re-exported here."""

from ..core.budget import BudgetError, available_memory, check_disk, check_memory, gib

__all__ = ["BudgetError", "available_memory", "check_memory", "check_disk", "gib"]
