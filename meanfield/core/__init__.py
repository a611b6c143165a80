"""The numerical core: activations, Gaussian expectations, fixed-point solvers, grids.

Layers inside, each importing only from the ones above it in this list:

``functions``, ``activation``
    The activation functions (Numba) and their registry; ``Activation.record`` is what the
    jitted code receives.
``gaussian``
    Gaussian expectations of an activation: closed forms per family, quadrature otherwise.
``length_map``, ``correlation_map``, ``point``
    The fixed points q*, c*, the slopes and depth scales at one point (Numba).
``engine``
    Arrays in, arrays out: the one function grids and sweeps call.
``analysis``, ``critical``, ``advice``
    The Python front of the core: validation, results, datasets, the critical line and
    initialization advice.
``vocabulary``, ``validate``
    Codes, defaults, metadata and input checks shared by every layer.
"""
