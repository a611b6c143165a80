"""Experiments with finite networks (computation only; figures are in ``meanfield.plot``):
``simulate`` draws random networks and measures them beside the theory, ``trainability``
trains them with SGD over (sigma_w^2, depth)."""
