"""Finite-width Monte Carlo against the mean-field theory, and the trainability experiment.

Tiers: an independent reference (explicit per-output backpropagation of a tiny network for
the empirical NTK); Monte Carlo against the analytic mean-field values within 3 standard
errors, with a check that the test has power (a 10% wrong sw2 is rejected); invariants
(reproducibility, batching independence); smoke tests of training and the CLI.
"""

from __future__ import annotations

import argparse
import math

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import xarray as xr  # noqa: E402

import meanfield as mf  # noqa: E402
from meanfield import simulate as S  # noqa: E402
from meanfield.experiments import simulate as SX  # noqa: E402
from meanfield import trainability as T  # noqa: E402
from meanfield.cli.experiments import register as add_parsers  # noqa: E402

# Layer-1 NTK and the top-layer gradient scale have no randomness in some entries (SE = 0);
# agreement there is to rounding.
ATOL = 1e-12

# (activation, sw2, sb2): the ordered and chaotic phases of tanh and relu.
CASES = [("tanh", 0.8, 0.05), ("tanh", 2.5, 0.1), ("relu", 1.5, 0.1), ("relu", 2.5, 0.1)]


def _zscore(ds, name):
    return np.abs(ds[name] - ds[f"{name}_theory"]).values / np.maximum(ds[f"{name}_se"].values, 1e-300)


def _within(ds, name, k=3.0):
    diff = np.abs(ds[name] - ds[f"{name}_theory"]).values
    return diff <= k * ds[f"{name}_se"].values + ATOL


@pytest.fixture(scope="module")
def wide():
    return {c: S.simulate(c[0], c[1], c[2], depth=4, width=1000, networks=20, seed=11) for c in CASES}


def test_phases_are_the_intended_ones():
    phases = [mf.analyze(a, w, b).phase for a, w, b in CASES]
    # relu at (2.5, 0.1): chi_1 = 1.25 > 1, and the lengths grow without bound (q* = inf)
    assert phases == ["ordered", "chaotic", "ordered", "unbounded"]


@pytest.mark.parametrize("case", CASES, ids=[f"{a}-{w}-{b}" for a, w, b in CASES])
def test_width_1000_matches_mean_field(wide, case):
    ds = wide[case]
    for name in ("q", "correlation", "grad"):
        ok = _within(ds, name)
        assert ok.all(), (name, _zscore(ds, name))
        # The test has power: standard errors are a few percent of the values, not huge.
        rel = ds[f"{name}_se"].values / np.abs(ds[f"{name}_theory"].values)
        assert np.nanmax(rel) < 0.05, (name, rel)
    # The gradient theory is not trivial: it changes by a factor chi-like per layer.
    g = ds.grad_theory.sel(input="x").values
    assert abs(g[0] / g[-1] - 1) > 0.1


@pytest.mark.parametrize("case", CASES, ids=[f"{a}-{w}-{b}" for a, w, b in CASES])
def test_a_wrong_theory_is_rejected(wide, case):
    """The same measurements against the theory at 1.1 sw2 must fail the 3-SE test."""
    act, sw2, sb2 = case
    ds = wide[case]
    wrong = SX._theory(mf.get_activation(act), 1.1 * sw2, sb2, 4, 1.0, 0.5)
    for name, th in (("q", wrong[0]), ("grad", wrong[2])):
        z = np.abs(ds[name].values - th) / np.maximum(ds[f"{name}_se"].values, 1e-300)
        assert z.max() > 3.0, (name, z)


def test_gradient_theory_against_closed_form_relu():
    # ReLU: sw2 E[phi'(z)^2] = sw2/2 at every q, so E[delta^l]^2 = (sw2/2)^(L-l).
    ds = S.simulate("relu", 1.5, 0.1, depth=5, width=8, networks=2, seed=0, ntk=False)
    np.testing.assert_allclose(ds.grad_theory.sel(input="x").values, 0.75 ** np.arange(4, -1, -1),
                               rtol=1e-12)


def _explicit_ntk(act, sw2, sb2, L, N, X, seed, k):
    """Empirical NTK of network k by backpropagating every output unit separately.

    For each output i of layer l, the gradient of z^l_i with respect to each parameter
    array (omega^m, beta^m) is built explicitly as an array of the parameter's shape,
    then Theta_ii(x, x') = sum over all parameters of the products.
    """
    d = X.shape[0]
    Ws = []
    n_in = d
    for m in range(L):
        om, be = SX._draw(seed, [k], m, N, n_in)
        Ws.append((om[0], be[0, :, 0], math.sqrt(sw2 / n_in)))
        n_in = N
    out = np.zeros((L, 3))
    for p, (a, b) in enumerate(((0, 0), (1, 1), (0, 1))):
        grads = []
        for x in (X[:, a], X[:, b]):
            ys, zs = [x], []
            for om, be, s in Ws:
                zs.append(s * om @ ys[-1] + math.sqrt(sb2) * be)
                ys.append(act(zs[-1]))
            per_layer = []
            for l in range(L):
                per_out = []
                for i in range(N):
                    g = np.zeros(N)
                    g[i] = 1.0  # dz^l_i / dz^l
                    params = []
                    for m in range(l, -1, -1):
                        om, be, s = Ws[m]
                        params.append(s * np.outer(g, ys[m]))      # d/d omega^m
                        params.append(math.sqrt(sb2) * g)          # d/d beta^m
                        if m > 0:
                            g = act.derivative(zs[m - 1]) * (s * om.T @ g)
                    per_out.append(np.concatenate([q.ravel() for q in params]))
                per_layer.append(per_out)
            grads.append(per_layer)
        for l in range(L):
            out[l, p] = np.mean([grads[0][l][i] @ grads[1][l][i] for i in range(N)])
    return out


@pytest.mark.parametrize("act", ["tanh", "relu"])
def test_empirical_ntk_equals_explicit_backprop(act):
    L, N = 3, 5
    ds = S.simulate(act, 1.7, 0.2, depth=L, width=N, networks=2, seed=5, input_dim=4,
                    ntk=True, keep_networks=True)
    X = SX.two_inputs(4, 1.0, 0.5, 5)
    for k in range(2):
        ref = _explicit_ntk(mf.get_activation(act), 1.7, 0.2, L, N, X, 5, k)
        np.testing.assert_allclose(ds.ntk_networks.values[k], ref, rtol=1e-12)


@pytest.mark.parametrize("case", [("tanh", 0.8, 0.05), ("tanh", 2.5, 0.1), ("relu", 1.5, 0.1)])
def test_small_network_ntk_matches_theory(case):
    # Width 96 with 16 networks: the O(1/N) bias of the mean stays well inside the O(1/sqrt(K N))
    # standard error, so the comparison tests the O(1) theory, not the finite-width correction.
    ds = S.simulate(*case, depth=4, width=96, networks=16, seed=4, ntk=True)
    assert _within(ds, "ntk").all(), _zscore(ds, "ntk")
    np.testing.assert_allclose(ds.ntk.isel(depth=0).values, ds.ntk_theory.isel(depth=0).values,
                               rtol=1e-12)
    assert np.nanmax(ds.ntk_se.values / ds.ntk_theory.values) < 0.1


def test_width_convergence_is_inverse_sqrt():
    ds = S.width_convergence("tanh", 1.5, 0.1, depth=3, widths=(16, 64, 256), networks=30, seed=2)
    for name in ("q_error_exponent", "ntk_error_exponent"):
        p = ds[name].values[1:]  # layer 1 NTK is exact at every width
        assert np.all((p > -0.8) & (p < -0.3)), (name, p)
    assert np.all(ds.ntk_error.isel(depth=0).values < 1e-12)
    fig = S.plot_width_convergence(ds)
    assert isinstance(fig, matplotlib.figure.Figure)
    fig2 = S.plot_simulation(S.simulate("tanh", 1.5, 0.1, 3, 32, networks=4))
    assert isinstance(fig2, matplotlib.figure.Figure)


def test_reproducible_and_independent_of_batching():
    a = S.simulate("tanh", 1.3, 0.1, 3, 40, networks=6, seed=7, keep_networks=True)
    b = S.simulate("tanh", 1.3, 0.1, 3, 40, networks=6, seed=7, keep_networks=True)
    xr.testing.assert_identical(a, b)
    c = S.simulate("tanh", 1.3, 0.1, 3, 40, networks=6, seed=8, keep_networks=True)
    assert not np.array_equal(a.q_networks.values, c.q_networks.values)
    # Network k has its own stream: the first 3 of 6 equal a run of 3, and a forced batch
    # size of 1 changes nothing.
    d = S.simulate("tanh", 1.3, 0.1, 3, 40, networks=3, seed=7, keep_networks=True)
    np.testing.assert_array_equal(a.q_networks.values[:3], d.q_networks.values)
    old = SX.BATCH_BYTES
    try:
        SX.BATCH_BYTES = 1
        e = S.simulate("tanh", 1.3, 0.1, 3, 40, networks=6, seed=7, keep_networks=True)
    finally:
        SX.BATCH_BYTES = old
    for name in ("q", "correlation", "grad", "ntk"):
        np.testing.assert_allclose(e[f"{name}_networks"].values, a[f"{name}_networks"].values,
                                   rtol=1e-13, atol=1e-300)


def test_dataset_explains_itself():
    ds = S.simulate("relu", 1.5, 0.1, 2, 16, networks=3)
    for v in list(ds.data_vars) + list(ds.coords):
        assert "long_name" in ds[v].attrs and "units" in ds[v].attrs, v


# --------------------------------------------------------------------------- trainability
TINY = dict(sb2=0.05, width=32, steps=150, batch_size=32, learning_rate=0.05, n_samples=400, seed=1)


@pytest.fixture(scope="module")
def tiny():
    return T.trainability("tanh", [0.3, 1.5], (2, 40), **TINY)


def test_shallow_trains_deep_ordered_does_not(tiny):
    acc = tiny.accuracy
    assert float(acc.sel(sw2=1.5, depth=2)) > 0.6  # well above chance (0.1)
    # sw2 = 0.3 is deep in the ordered phase: xi_c ~ 1 layer, 40 layers forget the input.
    assert float(tiny.max_depth.sel(sw2=0.3)) < 40
    assert float(acc.sel(sw2=0.3, depth=40)) < 0.25
    assert not tiny.diverged.values.any()


def test_trainability_reproducible(tiny):
    again = T.trainability("tanh", [0.3, 1.5], (2, 40), **TINY)
    xr.testing.assert_identical(tiny, again)


def test_fit_depth_constant_recovers_a_planted_boundary():
    sw2 = np.linspace(1.0, 4.0, 7)
    xi = np.array([mf.analyze("tanh", s, 0.05).xi_c for s in sw2])
    depths = np.arange(2, 400, 2)
    acc = np.where(depths[None, :] <= 4.0 * xi[:, None], 0.9, 0.1)
    ds = xr.Dataset({"accuracy": (("sw2", "depth"), acc), "xi_c": (("sw2",), xi)},
                    coords={"sw2": sw2, "depth": depths})
    fit = T.fit_depth_constant(ds)
    inside = 4.0 * xi < depths[-1]
    assert int(fit.n_fitted) == inside.sum() > 3
    assert abs(float(fit.constant) - 4.0) < 0.1
    fig = T.plot_trainability(ds.assign_attrs(activation="tanh", sb2=0.05, width=1, steps=1,
                                              learning_rate=0.1), fit)
    assert isinstance(fig, matplotlib.figure.Figure)


def test_digits_inputs_normalized():
    X, y = T.digits_data()
    assert X.shape == (1797, 64) and set(np.unique(y)) == set(range(10))
    np.testing.assert_allclose(np.sum(X * X, axis=1) / 64, 1.0, rtol=1e-12)


# --------------------------------------------------------------------------- errors, CLI
@pytest.mark.parametrize("kwargs, match", [
    (dict(width=0), "width"), (dict(depth=1.5), "depth"), (dict(networks=1), "networks"),
    (dict(seed=-1), "seed"), (dict(sw2=-1.0), "sw2"), (dict(c0=2.0), "c0"), (dict(q0=0.0), "q0"),
    (dict(activation="nope"), "nope"), (dict(ntk="yes"), "ntk"), (dict(input_dim=1), "input_dim"),
    (dict(width=True), "width"),
])
def test_simulate_rejects_bad_arguments(kwargs, match):
    args = dict(activation="tanh", sw2=1.0, sb2=0.1, depth=2, width=8)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        S.simulate(args.pop("activation"), args.pop("sw2"), args.pop("sb2"), args.pop("depth"),
                   args.pop("width"), **args)


@pytest.mark.parametrize("kwargs, match", [
    (dict(depths=()), "depths"), (dict(depths=(2, 0)), "depths"), (dict(depths=(2, 2)), "dupl"),
    (dict(learning_rate=0.0), "learning_rate"), (dict(batch_size=5000), "batch_size"),
    (dict(sw2=[-1.0]), "sw2"), (dict(steps=0), "steps"), (dict(width=0), "width"),
])
def test_trainability_rejects_bad_arguments(kwargs, match):
    args = dict(sw2=[1.0], depths=(2,), width=4, steps=1, n_samples=50)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        T.trainability("tanh", **args)


def test_width_convergence_rejects_one_width():
    with pytest.raises(ValueError, match="widths"):
        S.width_convergence("tanh", 1.0, 0.1, 2, widths=(8, 8))


def _cli(argv):
    p = argparse.ArgumentParser()
    add_parsers(p.add_subparsers(dest="command"))
    args = p.parse_args(argv)
    return args.func(args)


def test_cli_simulate_writes_outputs(tmp_path, capsys):
    out, png = tmp_path / "s.nc", tmp_path / "s.png"
    assert _cli(["simulate", "tanh", "--sw2", "1.5", "--sb2", "0.1", "--depth", "3", "--width",
                 "16", "--networks", "4", "-o", str(out), "--png", str(png)]) == 0
    ds = xr.open_dataset(out)
    assert ds.sizes["depth"] == 3 and png.stat().st_size > 0
    ds.close()
    assert "q (sim)" in capsys.readouterr().out


def test_cli_trainability_writes_outputs(tmp_path):
    out = tmp_path / "t.nc"
    assert _cli(["trainability", "tanh", "--sw2", "1:2:2", "--depths", "1,2", "--width", "8",
                 "--steps", "2", "-o", str(out), "--png", str(tmp_path / "t.png")]) == 0
    assert xr.open_dataset(out).accuracy.shape == (2, 2)


@pytest.mark.parametrize("argv, match", [
    (["simulate", "tanh", "--sw2", "1", "--sb2", "0", "--depth", "2", "--width", "4", "-o", "x.txt"],
     r"\.nc"),
    (["simulate", "tanh", "--sw2", "1", "--sb2", "0", "--depth", "2", "--width", "0"], "width"),
    (["simulate", "tanh", "--sw2", "1", "--sb2", "0", "--depth", "2", "--width", "4", "--png", "a.jpg"],
     "png"),
    (["trainability", "--depths", "2,x", "-o", "t.nc"], "depths"),
    (["trainability", "--sw2", "1:2", "-o", "t.nc"], "sw2"),
    (["trainability", "-o", "/nonexistent_dir/t.nc"], "directory"),
])
def test_cli_bad_input_is_a_value_error(argv, match):
    with pytest.raises(ValueError, match=match):
        _cli(argv)
