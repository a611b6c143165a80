"""NNGP and NTK kernels per depth on a data set, and the NTK's trainability metrics.

``recursion`` runs the layer recursion over blocks of a point set (``blocks`` holds its
Numba kernels); ``dataset`` returns the kernels as xarray datasets; ``metrics`` the NTK
condition number and mean predictor per depth; ``prediction`` the infinite-width NNGP and
NTK predictions (mean and variance) per depth.
"""

from .conv import Conv
from .dataset import kernels, two_point_kernels
from .metrics import ntk_metrics
from .prediction import predict

__all__ = ["Conv", "kernels", "two_point_kernels", "ntk_metrics", "predict"]
