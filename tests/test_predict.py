"""Infinite-width predictions (meanfield.predict): against neural-tangents' stored values for erf
and relu, against an independent NumPy computation for tanh, limits, depth selection, errors."""

from __future__ import annotations

import os

import numpy as np
import pytest
import scipy.linalg
import xarray as xr

import meanfield as mf
from meanfield.ntk.prediction import predictions

HERE = os.path.dirname(os.path.abspath(__file__))
REFS = os.path.join(HERE, "data", "predict_refs.npz")  # tests/data/make_predict_refs.py
TOL = 1e-9


@pytest.fixture(scope="module")
def refs():
    return np.load(REFS)


def _close(ours, ref, scale):
    """max |ours - ref| <= TOL * scale (scale: the size of the quantity, not of the difference)."""
    err = np.max(np.abs(ours - ref)) / scale
    assert err <= TOL, f"relative error {err:.2e}"


@pytest.mark.parametrize("act", ["erf", "relu"])
@pytest.mark.parametrize("r", [0, 1])
def test_matches_neural_tangents(refs, act, r):
    """Mean and variance per test point, NNGP and NTK, t = None and t in {0, 3, 40, 1e4}, with
    and without diag_reg, depths 2, 4, 7, to 1e-9 of neural-tangents 0.6.5 (float64)."""
    Xtr, Y, Xte = refs["X_train"], refs["y_train"], refs["X_test"]
    sw2, sb2 = refs[f"{act}_params"]
    reg = float(refs["diag_regs"][r])
    depths = [int(d) for d in refs["depths"] if d > 1]
    inf = predictions(Xtr, Y, Xte, act, sw2, sb2, max(depths), t=None, diag_reg=reg, depths=depths)
    fin = predictions(Xtr, Y, Xte, act, sw2, sb2, max(depths), t=refs["times"], diag_reg=reg,
                      depths=depths)
    for get in ("nngp", "ntk"):
        assert inf[get].sizes["depth"] == len(depths)
        for L in depths:
            key = f"{act}_{get}_L{L}_r{r}"
            prior = np.max(refs[f"{key}_t_var"][0])  # t = 0: the prior variance K(x*, x*)
            a, b = inf[get].sel(depth=L), fin[get].sel(depth=L)
            assert a.status.item() == 0
            _close(a.prediction.values, refs[f"{key}_inf_mean"], np.max(np.abs(Y)))
            _close(a.variance.values, refs[f"{key}_inf_var"], prior)
            _close(b.prediction.values, refs[f"{key}_t_mean"], np.max(np.abs(Y)))
            _close(b.variance.values, refs[f"{key}_t_var"], prior)


def test_singular_depth_is_nan_with_reason(refs):
    """Depth 1 is the linear kernel of 24 points in 6 dimensions: rank <= 7, numerically
    singular.  t = None is NaN and flagged; a short time is still well defined."""
    Xtr, Y, Xte = refs["X_train"], refs["y_train"], refs["X_test"]
    ds = mf.predict(Xtr, Y, Xte, "erf", 1.6, 0.05, 2)
    assert bool(ds.singular.sel(depth=1)) and not bool(ds.singular.sel(depth=2))
    meanings = ds.status.attrs["flag_meanings"].split()
    assert meanings[int(ds.status.sel(depth=1))].startswith("numerically_singular")
    assert np.all(np.isnan(ds.prediction.sel(depth=1))) and np.all(np.isnan(ds.variance.sel(depth=1)))
    assert np.isinf(ds.condition_number.sel(depth=1))
    assert np.all(np.isfinite(ds.prediction.sel(depth=2)))
    short = mf.predict(Xtr, Y, Xte, "erf", 1.6, 0.05, 1, t=[1.0, np.inf])
    assert np.all(np.isfinite(short.prediction.isel(time=0)))
    assert np.all(np.isnan(short.prediction.isel(time=1)))


# --------------------------------------------------------------------------- tanh: independent
# Trapezoidal rule on z in [-9, 9]: exponentially accurate for integrands analytic in a strip
# (docs/theory.md, "Numerics"; ~1e-15 up to q = 16 with step 0.06).  Gauss-Hermite is not used:
# it is off by ~2e-7 for tanh at q = 4.
H = 0.05
NODES = np.arange(-9.0, 9.0 + H / 2, H)
WEIGHTS = H * np.exp(-0.5 * NODES ** 2) / np.sqrt(2 * np.pi)


def _numpy_kernels(Z, sw2, sb2, L):
    """NNGP and NTK of depth L by a 2-D trapezoidal rule per pair (no meanfield code)."""
    z, w = NODES, WEIGHTS
    W = np.outer(w, w)
    S = sw2 * Z @ Z.T / Z.shape[1] + sb2
    T = S.copy()
    for _ in range(L - 1):
        d = np.sqrt(np.diag(S))
        c = np.clip(S / np.outer(d, d), -1, 1)
        E, Ed = np.empty_like(S), np.empty_like(S)
        for a in range(S.shape[0]):
            u = d[a] * z[:, None]
            for b in range(S.shape[0]):
                v = d[b] * (c[a, b] * z[:, None] + np.sqrt(1 - c[a, b] ** 2) * z[None, :])
                E[a, b] = np.sum(np.tanh(u) * np.tanh(v) * W)
                Ed[a, b] = np.sum(np.cosh(u) ** -2 * np.cosh(v) ** -2 * W)
        S, T = sw2 * E + sb2, sw2 * E + sb2 + sw2 * Ed * T
    return S, T


def _numpy_predict(S, T, n, Y, t, kind):
    """The formulas of docs/theory.md with dense matrix functions (expm, explicit solves)."""
    G = T if kind == "ntk" else S
    Gtt, Gst = G[:n, :n], G[n:, :n]
    Ktt, Kst, Kss = S[:n, :n], S[n:, :n], S[n:, n:]
    N = Y.size
    if t is None:
        flow = np.eye(n)
        flow2 = np.eye(n)
    else:
        flow = np.eye(n) - scipy.linalg.expm(-Gtt * t / N)
        flow2 = np.eye(n) - scipy.linalg.expm(-2 * Gtt * t / N)
    A = Gst @ np.linalg.solve(Gtt, flow)
    if kind == "ntk":
        cov = Kss + A @ Ktt @ A.T - A @ Kst.T - Kst @ A.T
    else:
        cov = Kss - Kst @ np.linalg.solve(Gtt, flow2) @ Kst.T
    return A @ Y, np.diag(cov)


@pytest.mark.parametrize("one_norm", [False, True])
def test_tanh_against_numpy(one_norm):
    rng = np.random.default_rng(3)
    n, m, L, sw2, sb2 = 12, 5, 5, 1.3, 0.1
    Z = rng.normal(size=(n + m, 4))
    if one_norm:  # the shared-norm (Chebyshev) path of the recursion
        Z *= 2.0 / np.linalg.norm(Z, axis=1, keepdims=True)
    Y = np.eye(3)[rng.integers(0, 3, n)]
    S, T = _numpy_kernels(Z, sw2, sb2, L)
    times = [0.5, 20.0]
    out = predictions(Z[:n], Y, Z[n:], "tanh", sw2, sb2, L, depths=[L])
    out_t = predictions(Z[:n], Y, Z[n:], "tanh", sw2, sb2, L, t=times, depths=[L])
    for kind in ("nngp", "ntk"):
        for ti, t in enumerate([None] + times):
            mean, var = _numpy_predict(S, T, n, Y, t, kind)
            ds = out[kind] if t is None else out_t[kind].isel(time=ti - 1)
            np.testing.assert_allclose(ds.prediction.values[0], mean, rtol=0, atol=1e-9)
            np.testing.assert_allclose(ds.variance.values[0], var, rtol=0, atol=1e-9 * np.max(np.diag(S)))


# --------------------------------------------------------------------------- limits, layout
@pytest.fixture(scope="module")
def small():
    rng = np.random.default_rng(11)
    X = rng.normal(size=(15, 20))
    return X[:10], rng.normal(size=10), X[10:]


def test_time_limits(small):
    """t = 0 is the prior (mean 0, variance K(x*, x*)); t = inf equals t = None."""
    Xtr, y, Xte = small
    for kind in ("ntk", "nngp"):
        ds = mf.predict(Xtr, y, Xte, "erf", 1.5, 0.05, 4, kernel=kind, t=[0.0, np.inf])
        ref = mf.predict(Xtr, y, Xte, "erf", 1.5, 0.05, 4, kernel=kind)
        prior = mf.kernels(Xte, "erf", 1.5, 0.05, 4).nngp.values
        assert np.all(ds.prediction.isel(time=0).values == 0.0)
        np.testing.assert_allclose(ds.variance.isel(time=0).values,
                                   np.diagonal(prior, axis1=1, axis2=2), rtol=1e-13)
        np.testing.assert_allclose(ds.prediction.isel(time=1).values, ref.prediction.values,
                                   rtol=0, atol=1e-10 * np.max(np.abs(y)))
        np.testing.assert_allclose(ds.variance.isel(time=1).values, ref.variance.values,
                                   rtol=0, atol=1e-10 * np.max(prior))


def test_interpolates_training_points(small):
    """Trained to convergence without ridge, both predictors reproduce the training targets
    with zero variance there (X_test = X_train)."""
    Xtr, y, _ = small
    for kind in ("ntk", "nngp"):
        ds = mf.predict(Xtr, y, Xtr, "relu", 2.0, 0.1, 3, kernel=kind)
        np.testing.assert_allclose(ds.prediction.values, np.broadcast_to(y, (3, 10)), atol=1e-9)
        assert np.max(np.abs(ds.variance.values)) < 1e-9


def test_layout_and_depth_selection(small):
    Xtr, y, Xte = small
    Y = np.stack([y, -y, 2 * y], axis=1)
    full = mf.predict(Xtr, Y, Xte, "tanh", 1.2, 0.05, 6, t=[1.0, 5.0])
    part = mf.predict(Xtr, Y, Xte, "tanh", 1.2, 0.05, 6, t=[1.0, 5.0], depths=[2, 5])
    assert full.prediction.dims == ("depth", "time", "test", "output")
    assert full.variance.dims == ("depth", "time", "test")
    assert list(part.depth.values) == [2, 5]
    xr.testing.assert_identical(full.sel(depth=[2, 5]), part)
    # outputs are independent: column 1 is minus column 0
    np.testing.assert_allclose(full.prediction.sel(output=1), -full.prediction.sel(output=0),
                               rtol=1e-13)
    scalar = mf.predict(Xtr, y, Xte, "tanh", 1.2, 0.05, 3, t=2.0)
    assert scalar.prediction.dims == ("depth", "test") and float(scalar.time) == 2.0
    for v in scalar.data_vars.values():
        assert "long_name" in v.attrs and "units" in v.attrs


@pytest.mark.parametrize("kwargs, name", [
    ({"kernel": "gp"}, "kernel"),
    ({"t": -1.0}, "t"),
    ({"t": [1.0, np.nan]}, "t"),
    ({"diag_reg": -0.1}, "diag_reg"),
    ({"depths": [0, 2]}, "depths"),
    ({"depths": [5]}, "depths"),
    ({"sw2": -1.0}, "sw2"),
    ({"depth": 0}, "depth"),
])
def test_errors_name_the_parameter(small, kwargs, name):
    Xtr, y, Xte = small
    args = {"activation": "erf", "sw2": 1.5, "sb2": 0.05, "depth": 3, **kwargs}
    with pytest.raises(ValueError, match=rf"^{name}\b"):
        mf.predict(Xtr, y, Xte, **args)


def test_errors_on_data(small):
    Xtr, y, Xte = small
    with pytest.raises(ValueError, match="X_test has 3 features"):
        mf.predict(Xtr, y, Xte[:, :3], "erf", 1.5, 0.0, 2)
    with pytest.raises(ValueError, match="y_train has 9 rows"):
        mf.predict(Xtr, y[:9], Xte, "erf", 1.5, 0.0, 2)
    with pytest.raises(ValueError, match="X_train contains NaN"):
        mf.predict(np.full_like(Xtr, np.nan), y, Xte, "erf", 1.5, 0.0, 2)


def test_does_not_mutate_inputs(small):
    Xtr, y, Xte = small
    copies = [a.copy() for a in (Xtr, y, Xte)]
    mf.predict(Xtr, y, Xte, "erf", 1.5, 0.05, 3, t=[1.0], diag_reg=0.1)
    for a, b in zip((Xtr, y, Xte), copies):
        assert np.array_equal(a, b)
