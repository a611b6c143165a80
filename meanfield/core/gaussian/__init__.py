"""Gaussian expectations of activations: closed forms (``closed``), quadrature rules
(``quadrature``) and the functions the solvers and kernels call (``moments``)."""
