"""Finite-width Monte Carlo of random fully connected networks, beside the mean-field theory.

Networks as in docs/theory.md ("Network at initialization"), with variances ``sw2 = sigma_w^2``
and ``sb2 = sigma_b^2`` (not standard deviations), in the NTK parameterization::

    z^l = sqrt(sw2 / N_{l-1}) omega^l y^{l-1} + sqrt(sb2) beta^l,   y^l = phi(z^l),   y^0 = x
    omega^l_ij, beta^l_i ~ N(0, 1)

so that W^l = sqrt(sw2/N_{l-1}) omega^l ~ N(0, sw2/N_{l-1}) and b^l ~ N(0, sb2): the same
random network as docs/theory.md, with the trainable parameters (omega, beta) of unit variance.

Measured per layer l and per network, for two inputs x, x' of chosen length and correlation:

* ``q^l = |z^l(x)|^2 / N`` (the length map), and the same for x';
* ``c^l = z^l(x).z^l(x') / (|z^l(x)| |z^l(x')|)`` (the correlation map);
* ``E[(delta^l)^2] = |delta^l|^2 / N`` where ``delta^l = d(e.z^L)/dz^l`` is the
  backpropagated random error signal ``e ~ N(0, I_N)`` (Schoenholz et al. 2017);
* the empirical NTK of the network whose readout is layer l,
  ``Theta-hat^l(x, x') = (1/N) sum_i sum_theta dz^l_i(x)/dtheta dz^l_i(x')/dtheta`` over
  all parameters theta = (omega^m, beta^m), m <= l, computed exactly (no finite
  differences) by the chain rule; see :func:`_ntk_step`.

Every network has its own random stream, derived from ``seed`` and its index (and the
layer) by ``numpy.random.SeedSequence``; results therefore do not depend on how networks
are batched.  All arithmetic is float64.
"""

from __future__ import annotations

import math

import numpy as np
import xarray as xr

from .._version import __version__
from ..core import validate as V
from ..core.activation import get_activation
from ..ntk import two_point_kernels
from ..core.budget import check_memory

__all__ = ["simulate", "width_convergence"]

# The empirical NTK costs O(K L N^3) (a chain of N x N matrix products per layer, network
# and input pair); at N = 256 that is ~0.1 s per layer and network on two cores.  Above
# this width ``ntk=None`` skips it, so that q, c and gradients at width 1000 stay cheap.
NTK_AUTO_MAX_WIDTH = 256
# Stored weights of one batch of networks (all layers) stay under this many bytes; the
# batch size adapts, down to one network.  The results do not depend on it.
BATCH_BYTES = 1 << 28
# Spawn-key prefixes keep the input, weight and error-signal streams disjoint.
_KEY_INPUT, _KEY_WEIGHTS, _KEY_ERROR = 0, 1, 2

PAIRS = ("xx", "x'x'", "xx'")


# --------------------------------------------------------------------------- validation
def _seed(seed):
    return V.integer("seed", seed, 0)


def _rng(seed, *key):
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=key)))


# --------------------------------------------------------------------------- the network
def two_inputs(dim, q0, c0, seed):
    """Two inputs in R^dim with |x|^2/dim = |x'|^2/dim = q0 and x.x'/(|x||x'|) = c0 exactly.

    Random directions (from ``seed``) made orthonormal by Gram-Schmidt, so the layer-1
    theory is exact: q^1 = sw2 q0 + sb2 and Sigma^1_12 = sw2 q0 c0 + sb2.  Returns (dim, 2).
    """
    g = _rng(seed, _KEY_INPUT).standard_normal((dim, 2))
    u1 = g[:, 0] / np.linalg.norm(g[:, 0])
    v = g[:, 1] - (g[:, 1] @ u1) * u1
    u2 = v / np.linalg.norm(v)
    r = math.sqrt(dim * q0)
    return np.stack([r * u1, r * (c0 * u1 + math.sqrt(max(0.0, 1.0 - c0 * c0)) * u2)], axis=1)


def _draw(seed, nets, layer, n_out, n_in):
    """Unit-variance parameters (omega, beta) of one layer for the networks ``nets``."""
    omega = np.empty((len(nets), n_out, n_in))
    beta = np.empty((len(nets), n_out, 1))
    for j, k in enumerate(nets):
        rng = _rng(seed, _KEY_WEIGHTS, int(k), layer)
        omega[j] = rng.standard_normal((n_out, n_in))
        beta[j, :, 0] = rng.standard_normal(n_out)
    return omega, beta


def _ntk_step(theta, y, dphi, W, sw2, sb2, n_in):
    """One layer of the exact empirical-NTK recursion, for a batch of networks.

    With z^{l+1} = W y^l + sqrt(sb2) beta and W = sqrt(sw2/N) omega, the Jacobian of
    z^{l+1} with respect to the parameters of layer l+1 gives
    ``(sw2/N) y^l(x).y^l(x') + sb2`` times the identity, and the chain rule through
    layer l gives ``W D(x) Theta-hat^l(x, x') D(x')^T W^T`` with D = diag(phi'(z^l)).
    Hence (Jacot et al. 2018, at finite width and exactly)::

        Theta-hat^{l+1}(x, x') = [(sw2/N) y^l(x).y^l(x') + sb2] I + W D Theta-hat^l D' W^T

    where Theta-hat^l(x, x')_{ij} = sum_theta dz^l_i(x)/dtheta dz^l_j(x')/dtheta is the
    full N x N matrix: this is J(x) J(x')^T summed layer by layer, not an approximation.

    theta : (K, 3, N, N) for the pairs (x, x), (x', x'), (x, x'); y, dphi : (K, N, 2).
    """
    WD = [W * dphi[:, None, :, p] for p in (0, 1)]
    gram = sw2 / n_in * np.einsum("kip,kiq->kpq", y, y) + sb2
    out = np.empty((theta.shape[0], 3, W.shape[1], W.shape[1]))
    eye = np.eye(W.shape[1])
    for s, (a, b) in enumerate(((0, 0), (1, 1), (0, 1))):
        out[:, s] = WD[a] @ theta[:, s] @ WD[b].transpose(0, 2, 1)
        out[:, s] += gram[:, a, b, None, None] * eye
    return out


def _run(act, sw2, sb2, depth, width, X, networks, seed, ntk, progress=None):
    """Per-network measurements: dict of arrays with a leading network axis."""
    d = X.shape[0]
    L, N, K = depth, width, networks
    q = np.empty((K, L, 2))
    corr = np.empty((K, L))
    grad = np.empty((K, L, 2))
    theta_hat = np.full((K, L, 3), np.nan)
    per_net = 8 * N * max(N, d) * L
    batch = int(max(1, min(K, BATCH_BYTES // per_net)))
    sw, sb = math.sqrt(sw2), math.sqrt(sb2)
    for start in range(0, K, batch):
        nets = np.arange(start, min(K, start + batch))
        B = len(nets)
        y = np.broadcast_to(X, (B, d, 2))
        Ws, zs = [], []
        if ntk:
            g1 = sw2 / d * (X.T @ X) + sb2
            theta = np.zeros((B, 3, N, N))
            idx = np.arange(N)
            for s, (a, b) in enumerate(((0, 0), (1, 1), (0, 1))):
                theta[:, s, idx, idx] = g1[a, b]
        n_in = d
        for l in range(L):
            omega, beta = _draw(seed, nets, l, N, n_in)
            W = (sw / math.sqrt(n_in)) * omega
            if ntk and l > 0:
                theta = _ntk_step(theta, y, act.derivative(zs[-1]), W, sw2, sb2, n_in)
            z = W @ y + sb * beta
            Ws.append(W)
            zs.append(z)
            y = act(z)
            q[nets, l] = np.mean(z * z, axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                corr[nets, l] = np.sum(z[:, :, 0] * z[:, :, 1], axis=1) / (
                    N * np.sqrt(q[nets, l, 0] * q[nets, l, 1]))
            if ntk:
                theta_hat[nets, l] = np.trace(theta, axis1=2, axis2=3) / N
            n_in = N
        # Backward pass of the random error signal e at the top layer (the loss e.z^L):
        # delta^L = e, delta^l = phi'(z^l) * (W^{l+1})^T delta^{l+1}.
        e = np.stack([_rng(seed, _KEY_ERROR, int(k)).standard_normal(N) for k in nets])
        delta = np.repeat(e[:, :, None], 2, axis=2)
        grad[nets, L - 1] = np.mean(delta * delta, axis=1)
        for l in range(L - 2, -1, -1):
            delta = act.derivative(zs[l]) * (Ws[l + 1].transpose(0, 2, 1) @ delta)
            grad[nets, l] = np.mean(delta * delta, axis=1)
        if progress is not None:
            progress(B)
    return {"q": q, "correlation": corr, "grad": grad, "ntk": theta_hat}


def _theory(act, sw2, sb2, depth, q0, c0):
    """Mean-field values of q^l, c^l, E[(delta^l)^2] and Theta^l for the same inputs."""
    q1 = sw2 * q0 + sb2
    s12 = sw2 * q0 * c0 + sb2
    c1 = s12 / q1 if q1 > 0 else 1.0
    tp = two_point_kernels(act, sw2, sb2, depth, q1=q1, q2=q1, c=min(1.0, max(-1.0, c1)))
    q = np.stack([tp.q1.values, tp.q2.values], axis=1)
    T = np.stack([tp.ntk_11.values, tp.ntk_22.values, tp.ntk_12.values], axis=1)
    # Backpropagation multiplies E[delta^2] by Sigmadot^{l+1}(x, x) = sw2 E[phi'(z^l)^2]
    # per layer (docs/theory.md, gradients; equal widths).  The NTK recursion
    # Theta^{l+1} = Sigma^{l+1} + Sigmadot^{l+1} Theta^l gives it from the kernels above.
    with np.errstate(invalid="ignore", divide="ignore"):
        sdot = (T[1:, :2] - q[1:]) / T[:-1, :2]
    grad = np.ones((depth, 2))
    for l in range(depth - 2, -1, -1):
        grad[l] = grad[l + 1] * sdot[l]
    return q, tp.correlation.values, grad, T


def _mean_se(a):
    """Mean over networks (axis 0) and its Monte Carlo standard error std/sqrt(K)."""
    return a.mean(axis=0), a.std(axis=0, ddof=1) / math.sqrt(a.shape[0])


def _attrs(long_name, units="1", **extra):
    return {"long_name": long_name, "units": units, **extra}


def _check(activation, sw2, sb2, depth, width, networks, seed, q0, c0, input_dim, ntk):
    act = get_activation(activation)
    sw2 = V.variance("sw2", sw2)
    sb2 = V.variance("sb2", sb2)
    depth = V.integer("depth", depth, 1)
    width = V.integer("width", width, 1)
    networks = V.integer("networks", networks, 2)
    seed = _seed(seed)
    q0 = V.scalar("q0", q0, minimum=0.0, inclusive=False)
    c0 = V.scalar("c0", c0, minimum=-1.0, maximum=1.0)
    input_dim = width if input_dim is None else V.integer("input_dim", input_dim, 2)
    if input_dim < 2:
        raise ValueError(f"input_dim must be >= 2 to hold two inputs, got {input_dim} "
                         f"(it defaults to the width)")
    # One network's weights (all layers) are held at once, with as much again for the
    # activations and the NTK chain; per network and layer a few dozen results are kept.
    check_memory(16.0 * (depth * float(width) ** 2 + input_dim * float(width))
                 + 512.0 * networks * depth,
                 f"depth {depth} x width {width} x {networks} networks")
    if ntk is None:
        ntk = width <= NTK_AUTO_MAX_WIDTH
    elif not isinstance(ntk, (bool, np.bool_)):
        raise ValueError(f"ntk must be True, False or None (auto), got {ntk!r}")
    return act, sw2, sb2, depth, width, networks, seed, q0, c0, input_dim, bool(ntk)


def simulate(activation, sw2, sb2, depth, width, *, networks=100, seed=0, q0=1.0, c0=0.5,
             input_dim=None, ntk=None, keep_networks=False, progress=None) -> xr.Dataset:
    """Monte Carlo of random finite-width networks beside the mean-field theory, per layer.

    Draws ``networks`` independent fully connected networks of ``depth`` layers of
    ``width`` units (docs/theory.md conventions; W ~ N(0, sw2/N_{l-1}), b ~ N(0, sb2)),
    propagates two inputs x, x' and backpropagates a random error signal, and measures
    per layer l::

        q-hat^l      = |z^l(x)|^2 / N                        theory: q^{l+1} = sw2 E phi(sqrt(q^l) z)^2 + sb2
        c-hat^l      = z^l(x).z^l(x') / (|z^l(x)||z^l(x')|)    theory: the correlation map
        grad^l       = |delta^l|^2 / N,  delta^L = e ~ N(0, I)
                       delta^l = phi'(z^l) (W^{l+1})^T delta^{l+1}
                                                             theory: prod_{m>l} sw2 E[phi'(z^{m-1})^2]
        Theta-hat^l  = trace of the empirical NTK of layer l / N   theory: Theta^l (docs/theory.md)

    For l in the ordered or chaotic phase near the fixed point, grad^l ~ exp(-(L-l)/xi_grad).

    Parameters
    ----------
    activation : str or Activation
    sw2, sb2 : float
        Weight and bias *variances* (not standard deviations), >= 0.
    depth : int
        Number of layers L >= 1.
    width : int
        Width N of every layer (>= 1).
    networks : int, default 100
        Number K >= 2 of independent networks; standard errors are std/sqrt(K).
    seed : int, default 0
        Seed (>= 0).  Inputs, each network's weights and its error signal come from
        disjoint ``SeedSequence`` streams, so network k is the same for any K >= k.
    q0 : float, default 1
        Input length |x|^2/d = |x'|^2/d (> 0); q^1 = sw2 q0 + sb2.
    c0 : float, default 0.5
        Input correlation x.x'/(|x||x'|) in [-1, 1].
    input_dim : int, optional
        Input dimension d (default: the width).
    ntk : bool or None, default None
        Measure the empirical NTK (cost O(K L N^3)); None = only for width <= 256.
    keep_networks : bool, default False
        Also return the per-network values (``*_networks`` variables, dim ``network``).
    progress : callable, optional
        Called as ``progress(k)`` after each batch of k networks (for a progress bar).

    Returns
    -------
    xarray.Dataset
        Dims ``depth`` (1..L), ``input`` (x, x') and ``pair`` (xx, x'x', xx').  For each
        of ``q`` (depth, input), ``correlation`` (depth), ``grad`` (depth, input) and
        ``ntk`` (depth, pair): the mean over networks, ``<name>_se`` (Monte Carlo
        standard error) and ``<name>_theory`` (mean-field value, from
        :func:`meanfield.two_point_kernels`).  ``ntk`` is NaN when not measured.

    Raises
    ------
    ValueError
        Unknown activation, negative variances, non-integer or too small depth, width,
        networks, seed, input_dim; q0 <= 0; c0 outside [-1, 1].
    """
    act, sw2, sb2, L, N, K, seed, q0, c0, d, ntk = _check(
        activation, sw2, sb2, depth, width, networks, seed, q0, c0, input_dim, ntk)
    X = two_inputs(d, q0, c0, seed)
    with np.errstate(over="ignore", invalid="ignore"):
        raw = _run(act, sw2, sb2, L, N, X, K, seed, ntk, progress)
    th = dict(zip(("q", "correlation", "grad", "ntk"), _theory(act, sw2, sb2, L, q0, c0)))
    dims = {"q": ("depth", "input"), "correlation": ("depth",), "grad": ("depth", "input"),
            "ntk": ("depth", "pair")}
    names = {
        "q": ("length q^l = |z^l|^2/N (mean squared pre-activation)", "1"),
        "correlation": ("correlation c^l = z^l(x).z^l(x') / (|z^l(x)| |z^l(x')|)", "1"),
        "grad": ("gradient norm E[(delta^l)^2] = |dL/dz^l|^2/N for a random error e ~ N(0, I) "
                 "at layer L", "1"),
        "ntk": ("neural tangent kernel Theta^l (NTK parameterization; mean diagonal of the "
                "empirical NTK)", "1"),
    }
    data = {}
    for name, dim in dims.items():
        m, se = _mean_se(raw[name])
        ln, u = names[name]
        data[name] = (dim, m, _attrs(f"{ln}: mean over networks", u))
        data[f"{name}_se"] = (dim, se, _attrs(f"{ln}: Monte Carlo standard error of the mean", u))
        data[f"{name}_theory"] = (dim, th[name], _attrs(f"{ln}: mean-field theory", u))
        if keep_networks:
            data[f"{name}_networks"] = (("network",) + dim, raw[name],
                                        _attrs(f"{ln}: per network", u))
    coords = {
        "depth": ("depth", np.arange(1, L + 1), _attrs("layer index l (pre-activation layers)",
                                                        "layers")),
        "input": ("input", ["x", "x'"], _attrs("input")),
        "pair": ("pair", list(PAIRS), _attrs("pair of inputs of the kernel")),
    }
    if keep_networks:
        coords["network"] = ("network", np.arange(K), _attrs("network index", "1"))
    attrs = {
        "title": f"finite-width Monte Carlo vs mean-field theory: {act.name}",
        "activation": act.name, "activation_formula": act.formula,
        "sw2": sw2, "sb2": sb2, "width": N, "networks": K, "seed": seed,
        "q0": q0, "c0": c0, "input_dim": d, "ntk_measured": int(ntk),
        "meanfield_version": __version__,
        "conventions": "docs/theory.md: sw2, sb2 are variances; W = sqrt(sw2/N) omega, b = sqrt(sb2) "
                       "beta with omega, beta ~ N(0, 1) (NTK parameterization)",
    }
    for k, v in act.parameters.items():
        attrs[f"activation_{k}"] = v
    return xr.Dataset(data, coords=coords, attrs=attrs)


# --------------------------------------------------------------------------- width scan
def _rms_se(err):
    """RMS over networks (axis 0) and its delta-method standard error."""
    e2 = err * err
    rms = np.sqrt(e2.mean(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        se = e2.std(axis=0, ddof=1) / math.sqrt(err.shape[0]) / (2.0 * rms)
    return rms, se


def width_convergence(activation, sw2, sb2, depth, widths=(16, 32, 64, 128, 256), *,
                      networks=50, seed=0, q0=1.0, c0=0.5) -> xr.Dataset:
    """Distance of single finite-width networks from the mean-field theory against width.

    For each width N, ``networks`` independent networks (:func:`simulate`, with the
    empirical NTK) give per layer the root-mean-square deviations::

        q_error^l   = sqrt(E_networks (q-hat^l(x) - q^l)^2)
        ntk_error^l = sqrt(E_networks (Theta-hat^l(x, x') - Theta^l(x, x'))^2)

    A single network's kernels self-average over its N units, so both fall as O(1/sqrt N)
    (with an O(1/N) bias on top).  The fitted exponent of error ~ N^p over the widths
    is returned per layer; the theory says p = -1/2.

    Parameters
    ----------
    activation, sw2, sb2, depth, q0, c0
        As in :func:`simulate`.
    widths : sequence of int
        At least two distinct widths >= 1.  The NTK costs O(networks depth N^3).
    networks : int, default 50
    seed : int, default 0
        Width i uses the seed ``seed + i``, so different widths are independent.

    Returns
    -------
    xarray.Dataset
        ``q_error``, ``q_error_se``, ``ntk_error``, ``ntk_error_se`` over (width, depth);
        ``q_error_exponent`` and ``ntk_error_exponent`` over depth (least-squares slope
        of log error against log N); the theory values ``q_theory``, ``ntk_theory``.
    """
    try:
        ws = [V.integer("widths", w, 1) for w in np.atleast_1d(np.asarray(widths, dtype=object))]
    except TypeError:
        raise ValueError(f"widths must be a sequence of integers >= 1, got {widths!r}") from None
    if len(set(ws)) < 2:
        raise ValueError(f"widths needs at least two distinct values, got {widths!r}")
    ws = sorted(set(ws))
    seed = _seed(seed)
    q_err, q_se, t_err, t_se = [], [], [], []
    for i, N in enumerate(ws):
        ds = simulate(activation, sw2, sb2, depth, N, networks=networks, seed=seed + i, q0=q0,
                      c0=c0, ntk=True, keep_networks=True)
        r, s = _rms_se(ds.q_networks.values[:, :, 0] - ds.q_theory.values[None, :, 0])
        q_err.append(r)
        q_se.append(s)
        r, s = _rms_se(ds.ntk_networks.values[:, :, 2] - ds.ntk_theory.values[None, :, 2])
        t_err.append(r)
        t_se.append(s)
    logN = np.log(np.asarray(ws, dtype=float))

    def slope(err):
        with np.errstate(divide="ignore"):
            y = np.log(np.asarray(err))
        return np.array([np.polyfit(logN, y[:, l], 1)[0] if np.all(np.isfinite(y[:, l]))
                         else np.nan for l in range(y.shape[1])])

    wd = ("width", "depth")
    out = xr.Dataset(
        {
            "q_error": (wd, np.array(q_err), _attrs("RMS over networks of q-hat^l(x) - q^l")),
            "q_error_se": (wd, np.array(q_se), _attrs("standard error of q_error")),
            "ntk_error": (wd, np.array(t_err),
                          _attrs("RMS over networks of Theta-hat^l(x, x') - Theta^l(x, x')")),
            "ntk_error_se": (wd, np.array(t_se), _attrs("standard error of ntk_error")),
            "q_error_exponent": (("depth",), slope(q_err),
                                 _attrs("fitted exponent p of q_error ~ N^p (theory -1/2)")),
            "ntk_error_exponent": (("depth",), slope(t_err),
                                   _attrs("fitted exponent p of ntk_error ~ N^p (theory -1/2)")),
            "q_theory": (("depth",), ds.q_theory.values[:, 0], _attrs("mean-field q^l")),
            "ntk_theory": (("depth",), ds.ntk_theory.values[:, 2],
                           _attrs("mean-field Theta^l(x, x')")),
        },
        coords={"width": ("width", np.array(ws), _attrs("layer width N", "units")),
                "depth": ds.depth},
        attrs={k: ds.attrs[k] for k in ("activation", "activation_formula", "sw2", "sb2", "q0",
                                        "c0", "networks", "meanfield_version", "conventions")},
    )
    out.attrs["title"] = f"convergence of finite-width networks to the mean-field theory: " \
                         f"{ds.attrs['activation']}"
    out.attrs["seed"] = seed
    return out
