"""``depths=`` on kernels and ntk_metrics: the kept depths equal the full run's."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import meanfield as mf


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(26, 6)) * rng.uniform(0.8, 1.2, size=(26, 1))
    return X[:20], rng.normal(size=(20, 2)), X[20:]


@pytest.mark.parametrize("act", ["erf", "tanh"])
def test_kernels_depths_equal_full(data, act):
    X, _, Xt = data
    full = mf.kernels(X, act, 1.5, 0.05, 7, X2=Xt)
    part = mf.kernels(X, act, 1.5, 0.05, 7, X2=Xt, depths=[6, 2, 2])  # sorted, distinct
    assert list(part.depth.values) == [2, 6]
    xr.testing.assert_identical(full.sel(depth=[2, 6]), part)


def test_kernels_one_norm_depths(data):
    X, _, _ = data
    X = X / np.linalg.norm(X, axis=1, keepdims=True)
    full = mf.kernels(X, "gelu", 1.8, 0.0, 5)
    part = mf.kernels(X, "gelu", 1.8, 0.0, 5, depths=5)
    xr.testing.assert_identical(full.sel(depth=[5]), part)


def test_metrics_depths(data):
    X, y, Xt = data
    full = mf.ntk_metrics(X, y, Xt, "erf", 1.5, 0.05, 9)
    part = mf.ntk_metrics(X, y, Xt, "erf", 1.5, 0.05, 9, depths=[3, 5, 7, 9])
    for v in ("lambda_max", "lambda_min", "condition_number", "prediction", "status"):
        xr.testing.assert_identical(full[v].sel(depth=[3, 5, 7, 9]), part[v])
    # per-layer rates over a gap of 2: (kappa^5 / kappa^3)^(1/2) = sqrt of the product of
    # the two one-layer ratios
    k = full.condition_number
    np.testing.assert_allclose(part.condition_ratio.sel(depth=5),
                               np.sqrt(k.sel(depth=5) / k.sel(depth=3)), rtol=1e-14)
    np.testing.assert_allclose(part.condition_ratio.sel(depth=5) ** 2,
                               full.condition_ratio.sel(depth=5) * full.condition_ratio.sel(depth=4),
                               rtol=1e-13)
    assert np.isfinite(part.decay_rate.sel(depth=5)) and np.isnan(part.decay_rate.sel(depth=9))
    uneven = mf.ntk_metrics(X, y, Xt, "erf", 1.5, 0.05, 9, depths=[2, 3, 9])
    assert np.isnan(uneven.decay_rate.sel(depth=3))  # unequal gaps: no per-layer rate


@pytest.mark.parametrize("bad", [[0], [10], [2.5], [], "x", True])
def test_bad_depths(data, bad):
    X, y, Xt = data
    with pytest.raises(ValueError, match=r"^depths"):
        mf.kernels(X, "erf", 1.5, 0.05, 9, depths=bad)
    with pytest.raises(ValueError, match=r"^depths"):
        mf.ntk_metrics(X, y, Xt, "erf", 1.5, 0.05, 9, depths=bad)
