"""Tests of the convolutional kernels, ``kernels(..., architecture=Conv(...))`` (docs/theory.md,
"Convolutional networks").

Three tiers:

* an independent, straightforward NumPy recursion written here, on the full (HW)^2
  pixel-pixel covariance of every pair of images (shifts by ``np.roll`` / zero padding, not
  the package's neighbour tables), with the closed forms of erf and ReLU written out and a
  2-D trapezoid rule in Cholesky coordinates for tanh and gelu;
* neural-tangents (float64) values stored in tests/data/conv_reference.json by
  tests/data/make_conv_reference.py (neural-tangents is not needed to run this file);
* reductions and invariants: filter_size 1 is the fully connected network on pixels,
  1 x 1 images are the fully connected network on channels, symmetry, PSD, cross-kernels.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
from scipy.special import erf as sp_erf

import meanfield as mf

DATA = os.path.join(os.path.dirname(__file__), "data", "conv_reference.json")


# --------------------------------------------------------------------------- references
def _shift_sum(M, H, W, k, circular):
    """sum_d M[p + d, p' + d] over the k x k offsets d, M of shape (H, W, H, W)."""
    r = k // 2
    out = np.zeros_like(M)
    if circular:
        for a in range(-r, r + 1):
            for b in range(-r, r + 1):
                out += np.roll(M, shift=(-a, -b, -a, -b), axis=(0, 1, 2, 3))
        return out
    Mp = np.zeros((H + 2 * r, W + 2 * r, H + 2 * r, W + 2 * r))
    Mp[r:r + H, r:r + W, r:r + H, r:r + W] = M
    for a in range(-r, r + 1):
        for b in range(-r, r + 1):
            out += Mp[r + a:r + a + H, r + b:r + b + W, r + a:r + a + H, r + b:r + b + W]
    return out


def _erf_expect(s11, s22, s12):
    a1, a2 = 1 + 2 * s11, 1 + 2 * s22
    return (2 / np.pi * np.arcsin(2 * s12 / np.sqrt(a1 * a2)),
            4 / np.pi / np.sqrt(a1 * a2 - 4 * s12 ** 2))


def _relu_expect(s11, s22, s12):
    r = np.sqrt(s11 * s22)
    c = np.clip(s12 / r, -1.0, 1.0)
    # theta = arccos(c), written as 2 asin(sqrt((1 - c)/2)) so that c = 1 gives exactly 0
    th = 2 * np.arcsin(np.sqrt(np.clip((r - s12) / (2 * r), 0.0, 1.0)))
    return r * (np.sin(th) + (np.pi - th) * c) / (2 * np.pi), (np.pi - th) / (2 * np.pi)


_Z = np.arange(-9.0, 9.0 + 1e-12, 0.06)  # trapezoid step 0.06 on [-9, 9]: ~1e-15 up to q = 16 (THEORY)
_WZ = 0.06 * np.exp(-0.5 * _Z ** 2) / math.sqrt(2 * math.pi)


def _trapezoid_expect(phi, dphi):
    """E[phi(u) phi(v)], E[phi'(u) phi'(v)] by a 2-D trapezoid rule in Cholesky coordinates:
    u = sqrt(s11) z1, v = (s12/sqrt(s11)) z1 + sqrt(s22 - s12^2/s11) z2."""
    def expect(s11, s22, s12):
        shape = np.shape(s12)
        s11, s22, s12 = (np.broadcast_to(a, shape).ravel() for a in (s11, s22, s12))
        a = np.sqrt(s11)
        b = s12 / a
        c = np.sqrt(np.clip(s22 - b * b, 0.0, None))
        D = np.empty(s12.size)
        Dp = np.empty(s12.size)
        for e in range(s12.size):
            u = a[e] * _Z[:, None]
            v = b[e] * _Z[:, None] + c[e] * _Z[None, :]
            w = _WZ[:, None] * _WZ[None, :]
            D[e] = np.sum(w * phi(u) * phi(v))
            Dp[e] = np.sum(w * dphi(u) * dphi(v))
        return D.reshape(shape), Dp.reshape(shape)
    return expect


def _gelu(x):
    return 0.5 * x * (1 + sp_erf(x / math.sqrt(2)))


def _dgelu(x):
    return 0.5 * (1 + sp_erf(x / math.sqrt(2))) + x * np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


EXPECT = {
    "erf": _erf_expect,
    "relu": _relu_expect,
    "tanh": _trapezoid_expect(np.tanh, lambda x: 1 - np.tanh(x) ** 2),
    "gelu": _trapezoid_expect(_gelu, _dgelu),
}


def reference(X, act, sw2, sb2, L, k, padding, readout, X2=None):
    """The recursion of docs/theory.md on full (HW)^2 covariances, pair by pair."""
    expect = EXPECT[act]
    circ = padding == "circular"
    n, H, W, C = X.shape
    Y = X if X2 is None else X2
    allimg = np.concatenate([X, Y]) if X2 is not None else X
    N = allimg.shape[0]
    S = {}
    for i in range(N):
        for j in range(N):
            G = np.einsum("hwc,gvc->hwgv", allimg[i], allimg[j])
            S[i, j] = sw2 / (C * k * k) * _shift_sum(G, H, W, k, circ) + sb2
    T = {key: v.copy() for key, v in S.items()}
    rows = range(n, N) if X2 is not None else range(n)
    out_s = np.empty((L, len(rows), n))
    out_t = np.empty((L, len(rows), n))
    P = H * W
    for l in range(L):
        for a, i in enumerate(rows):
            for j in range(n):
                for out, M in ((out_s, S[i, j]), (out_t, T[i, j])):
                    M2 = M.reshape(P, P)
                    out[l, a, j] = np.mean(np.diag(M2)) if readout == "flatten" else np.mean(M2)
        if l == L - 1:
            break
        Sn, Tn = {}, {}
        pairs = [(i, j) for i in rows for j in range(n)] + [(i, i) for i in range(N)]
        for i, j in set(pairs):
            vi = np.diag(S[i, i].reshape(P, P)).reshape(H, W)[:, :, None, None]
            vj = np.diag(S[j, j].reshape(P, P)).reshape(H, W)[None, None, :, :]
            K, Kd = expect(vi, vj, S[i, j])
            Sn[i, j] = sw2 / (k * k) * _shift_sum(K, H, W, k, circ) + sb2
            Tn[i, j] = Sn[i, j] + sw2 / (k * k) * _shift_sum(Kd * T[i, j], H, W, k, circ)
        S, T = Sn, Tn
    return out_s, out_t


def close(got, ref, tol):
    """|got - ref| <= tol * max|ref| everywhere."""
    scale = max(1.0, float(np.max(np.abs(ref))))
    err = float(np.max(np.abs(got - ref)))
    assert err <= tol * scale, f"max error {err:.3g} > {tol:g} x {scale:.3g}"


def phase_points(act):
    """(name, sw2, sb2): ordered, critical (mf.critical_sw2) and chaotic.  gelu has no edge
    of chaos for sb2 <= 0.1 (its length map diverges first), so it gets sb2 = 0.3."""
    sb2 = 0.3 if act == "gelu" else 0.05
    c = mf.critical_sw2(act, sb2)
    assert np.isfinite(c)
    return [("ordered", 0.6 * c, sb2), ("critical", c, sb2), ("chaotic", 1.6 * c, sb2)]


def _images(seed, n, H, W, C):
    return np.random.default_rng(seed).normal(size=(n, H, W, C))


# --------------------------------------------------------------------------- tier 1
@pytest.mark.parametrize("act", ["erf", "relu"])
@pytest.mark.parametrize("padding", ["circular", "same"])
@pytest.mark.parametrize("readout", ["flatten", "gap"])
def test_closed_forms_match_numpy_reference(act, padding, readout):
    X = _images(1, 3, 4, 4, 2)
    for phase, sw2, sb2 in phase_points(act):
        ds = mf.kernels(X, act, sw2, sb2, 4, architecture=mf.Conv(3, padding, readout))
        S, T = reference(X, act, sw2, sb2, 4, 3, padding, readout)
        close(ds.nngp.values, S, 1e-12)
        close(ds.ntk.values, T, 1e-12)


@pytest.mark.parametrize("act", ["tanh", "gelu"])
@pytest.mark.parametrize("padding", ["circular", "same"])
@pytest.mark.parametrize("readout", ["flatten", "gap"])
def test_quadrature_activations_match_numpy_reference(act, padding, readout):
    X = _images(2, 2, 3, 3, 2)
    for phase, sw2, sb2 in phase_points(act):
        ds = mf.kernels(X, act, sw2, sb2, 3, architecture=mf.Conv(3, padding, readout))
        S, T = reference(X, act, sw2, sb2, 3, 3, padding, readout)
        close(ds.nngp.values, S, 1e-9)
        close(ds.ntk.values, T, 1e-9)


@pytest.mark.parametrize("readout", ["flatten", "gap"])
def test_cross_kernel_matches_reference(readout):
    X, X2 = _images(3, 3, 4, 4, 2), _images(4, 2, 4, 4, 2)
    ds = mf.kernels(X, "erf", 1.7, 0.1, 3, X2=X2, architecture=mf.Conv(3, "same", readout))
    S, T = reference(X, "erf", 1.7, 0.1, 3, 3, "same", readout, X2=X2)
    assert ds.nngp.shape == (3, 2, 3)
    close(ds.nngp.values, S, 1e-12)
    close(ds.ntk.values, T, 1e-12)


@pytest.mark.parametrize("act", ["erf", "relu"])
def test_zero_pixels_and_zero_bias(act):
    """Digits-like images: blank regions give zero variances (sb2 = 0), handled exactly."""
    X = _images(5, 3, 5, 5, 1)
    X[:, :2, :, :] = 0.0
    X[0] = 0.0
    for padding in ("circular", "same"):
        for readout in ("flatten", "gap"):
            ds = mf.kernels(X, act, 1.5, 0.0, 3, architecture=mf.Conv(3, padding, readout))
            assert np.all(np.isfinite(ds.ntk.values))
            if act == "erf":  # (the ReLU reference has no zero-variance branch)
                S, T = reference(X, act, 1.5, 0.0, 3, 3, padding, readout)
                close(ds.nngp.values, S, 1e-12)
                close(ds.ntk.values, T, 1e-12)


def test_custom_activation():
    mf.register_activation("conv_test_tanh", lambda x: math.tanh(x),
                           dphi=lambda x: 1.0 - math.tanh(x) ** 2, odd=True,
                           singularity_distance=math.pi / 2, overwrite=True)
    try:
        X = _images(6, 2, 3, 3, 2)
        ds = mf.kernels(X, "conv_test_tanh", 1.3, 0.05, 3, architecture=mf.Conv(3, "same", "gap"))
        S, T = reference(X, "tanh", 1.3, 0.05, 3, 3, "same", "gap")
        close(ds.nngp.values, S, 1e-9)
        close(ds.ntk.values, T, 1e-9)
    finally:
        mf.unregister_activation("conv_test_tanh")


# --------------------------------------------------------------------------- tier 2
def _nt_cases():
    with open(DATA) as f:
        return json.load(f)


@pytest.mark.parametrize("case", range(24))
def test_neural_tangents_reference(case):
    """neural-tangents 0.6.5, float64 (tests/data/make_conv_reference.py).

    neural-tangents computes ReLU's arccos of a correlation that rounds to 1 - 1e-16 on
    the pixel diagonal of an image with itself, so its ReLU NTK there is ~1e-8 off
    (docs/theory.md, "Numerics"); those entries are compared at 1e-7 and checked at
    1e-12 against the NumPy reference instead.  Everything else is 1e-12.
    """
    data = _nt_cases()
    c = data["cases"][case]
    X, X2 = np.array(data["X"]), np.array(data["X2"])
    arch = mf.Conv(c["filter_size"], c["padding"], c["readout"])
    L = data["depth"]
    ds = mf.kernels(X, c["activation"], c["sw2"], c["sb2"], L, architecture=arch)
    dx = mf.kernels(X, c["activation"], c["sw2"], c["sb2"], L, X2=X2, architecture=arch)
    close(ds.nngp.values, np.array(c["nngp"]), 1e-12)
    close(dx.nngp.values, np.array(c["nngp_cross"]), 1e-12)
    close(dx.ntk.values, np.array(c["ntk_cross"]), 1e-12)
    ntk = np.array(c["ntk"])
    off = ~np.eye(X.shape[0], dtype=bool)
    close(ds.ntk.values[:, off], ntk[:, off], 1e-12)
    close(ds.ntk.values[:, ~off], ntk[:, ~off], 1e-12 if c["activation"] == "erf" else 1e-7)
    if c["activation"] == "relu":
        S, T = reference(X, "relu", c["sw2"], c["sb2"], L, 3, c["padding"], c["readout"])
        close(ds.ntk.values, T, 1e-12)


# --------------------------------------------------------------------------- tier 3
@pytest.mark.parametrize("act", ["erf", "relu", "tanh"])
def test_filter_one_is_fully_connected_on_pixels(act):
    """k = 1: every pixel runs the fully connected recursion on its C channels, so flatten is
    the mean over p of Sigma_FC(x_p, x'_p) and GAP the mean over p, p' of Sigma_FC(x_p, x'_p')."""
    X = _images(7, 3, 3, 4, 2)
    n, H, W, C = X.shape
    P = H * W
    fc = mf.kernels(X.reshape(n * P, C), act, 1.4, 0.1, 3)
    S = fc.nngp.values.reshape(3, n, P, n, P)
    T = fc.ntk.values.reshape(3, n, P, n, P)
    # tanh: the conv path sums Hermite series cut at a relative tail of 1e-12
    # (docs/theory.md), the fully connected one interpolates 2-D quadratures.
    tol = 1e-11 if act == "tanh" else 1e-13
    for padding in ("circular", "same"):
        flat = mf.kernels(X, act, 1.4, 0.1, 3, architecture=mf.Conv(1, padding, "flatten"))
        gap = mf.kernels(X, act, 1.4, 0.1, 3, architecture=mf.Conv(1, padding, "gap"))
        close(flat.nngp.values, np.einsum("lipjp->lij", S) / P, tol)
        close(flat.ntk.values, np.einsum("lipjp->lij", T) / P, tol)
        close(gap.nngp.values, S.mean(axis=(2, 4)), tol)
        close(gap.ntk.values, T.mean(axis=(2, 4)), tol)


@pytest.mark.parametrize("readout", ["flatten", "gap"])
def test_one_pixel_images_are_fully_connected(readout):
    X = _images(8, 4, 1, 1, 5)
    fc = mf.kernels(X.reshape(4, 5), "gelu", 1.9, 0.2, 4)
    for padding in ("circular", "same"):
        ds = mf.kernels(X, "gelu", 1.9, 0.2, 4, architecture=mf.Conv(1, padding, readout))
        close(ds.nngp.values, fc.nngp.values, 1e-13)
        close(ds.ntk.values, fc.ntk.values, 1e-13)


@pytest.mark.parametrize("act", ["relu", "tanh"])
@pytest.mark.parametrize("readout", ["flatten", "gap"])
def test_symmetric_psd_and_cross_consistent(act, readout):
    X = _images(9, 6, 5, 5, 3)
    arch = mf.Conv(3, "circular", readout)
    ds = mf.kernels(X, act, 1.8, 0.1, 5, architecture=arch)
    for name in ("nngp", "ntk"):
        K = ds[name].values
        np.testing.assert_array_equal(K, np.swapaxes(K, 1, 2))
        for l in range(K.shape[0]):
            ev = np.linalg.eigvalsh(K[l])
            assert ev.min() >= -1e-12 * ev.max()
    dx = mf.kernels(X[:4], act, 1.8, 0.1, 5, X2=X[4:], architecture=arch)
    np.testing.assert_allclose(dx.ntk.values, ds.ntk.values[:, 4:, :4], rtol=1e-14, atol=0)


def test_dataset_layout_and_attrs():
    X = _images(10, 3, 4, 4, 2)
    ds = mf.kernels(X, "relu", 2.0, 0.0, 3, architecture=mf.Conv(3, "same", "gap"))
    assert ds.nngp.dims == ("depth", "i", "j") and ds.ntk.shape == (3, 3, 3)
    assert list(ds.depth.values) == [1, 2, 3]
    a = ds.attrs
    assert (a["architecture"], a["filter_size"], a["padding"], a["readout"]) == ("conv", 3, "same", "gap")
    assert a["method"] == "per pixel pair: closed form"
    for v in ("nngp", "ntk", "depth", "i", "j"):
        assert "long_name" in ds[v].attrs and "units" in ds[v].attrs
    assert mf.Conv() == mf.Conv(3, "circular", "flatten")


# --------------------------------------------------------------------------- errors
@pytest.mark.parametrize("kwargs, word", [
    ({"filter_size": 2}, "filter_size"), ({"filter_size": 0}, "filter_size"),
    ({"filter_size": 3.0}, "filter_size"), ({"filter_size": True}, "filter_size"),
    ({"padding": "valid"}, "padding"), ({"readout": "max"}, "readout"),
])
def test_conv_validation(kwargs, word):
    with pytest.raises(ValueError, match=word):
        mf.Conv(**kwargs)


def test_conv_is_frozen():
    with pytest.raises(AttributeError):
        mf.Conv().filter_size = 5


def test_bad_shapes():
    X = _images(11, 2, 4, 4, 1)
    with pytest.raises(ValueError, match="architecture"):
        mf.kernels(X, "erf", 1.0, 0.0, 2)
    with pytest.raises(ValueError, match="X must be four-dimensional"):
        mf.kernels(X.reshape(2, 16), "erf", 1.0, 0.0, 2, architecture=mf.Conv())
    with pytest.raises(ValueError, match="filter_size 5"):
        mf.kernels(X, "erf", 1.0, 0.0, 2, architecture=mf.Conv(5))
    with pytest.raises(ValueError, match="X2"):
        mf.kernels(X, "erf", 1.0, 0.0, 2, X2=_images(1, 2, 4, 3, 1), architecture=mf.Conv())
    with pytest.raises(ValueError, match="X2 must be four"):
        mf.kernels(X, "erf", 1.0, 0.0, 2, X2=np.ones((2, 16)), architecture=mf.Conv())
    with pytest.raises(ValueError, match="architecture"):
        mf.kernels(X, "erf", 1.0, 0.0, 2, architecture="conv")
    with pytest.raises(ValueError, match="NaN"):
        Y = X.copy()
        Y[0, 0, 0, 0] = np.nan
        mf.kernels(Y, "erf", 1.0, 0.0, 2, architecture=mf.Conv())
    with pytest.raises(ValueError, match="sw2"):
        mf.kernels(X, "erf", -1.0, 0.0, 2, architecture=mf.Conv())


# --------------------------------------------------------------------------- metrics and CLI
def test_ntk_metrics_takes_the_architecture():
    X, Xt = _images(12, 6, 4, 4, 1), _images(13, 3, 4, 4, 1)
    y = np.arange(6.0) - 2.5
    arch = mf.Conv(3, "same", "gap")
    ds = mf.ntk_metrics(X, y, Xt, "erf", 1.5, 0.05, 4, architecture=arch)
    K = mf.kernels(X, "erf", 1.5, 0.05, 4, architecture=arch).ntk.values
    Kt = mf.kernels(X, "erf", 1.5, 0.05, 4, X2=Xt, architecture=arch).ntk.values
    ev = np.linalg.eigvalsh(K[2])
    np.testing.assert_allclose(ds.lambda_max.values[2], ev[-1], rtol=1e-12)
    np.testing.assert_allclose(ds.prediction.values[2], Kt[2] @ np.linalg.solve(K[2], y),
                               rtol=1e-9)
    assert ds.attrs["readout"] == "gap"
    with pytest.raises(ValueError, match="architecture"):
        mf.ntk_metrics(X, y, Xt, "erf", 1.5, 0.05, 4)
    with pytest.raises(ValueError, match="X_test"):
        mf.ntk_metrics(X, y, Xt[:, :3], "erf", 1.5, 0.05, 4, architecture=arch)


def test_cli_conv(tmp_path, capsys):
    from meanfield.cli import main
    X = _images(14, 5, 4, 4, 1)
    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "flat.npy", X.reshape(5, 16))
    code = main(["kernel", "relu", "--sw2", "2", "--sb2", "0.1", "--depth", "3", "--data",
                 str(tmp_path / "x.npy"), "--conv", "3", "--padding", "same", "--readout", "gap"])
    out, err = capsys.readouterr()
    assert code == 0 and "conv 3x3, padding same, readout gap" in out
    ds = mf.ntk_metrics(X, np.zeros(5), X, "relu", 2, 0.1, 3, architecture=mf.Conv(3, "same", "gap"))
    assert f"{float(ds.lambda_max[2]):.6g}"[:5] in out
    for argv, word in [
        (["--data", str(tmp_path / "flat.npy"), "--conv", "3"], "(n, H, W, C)"),
        (["--data", str(tmp_path / "x.npy")], "add --conv"),
        (["--data", str(tmp_path / "x.npy"), "--conv", "5"], "filter_size 5"),
        (["--data", str(tmp_path / "x.npy"), "--conv", "2"], "--conv: filter_size"),
        (["--data", str(tmp_path / "flat.npy"), "--readout", "gap"], "--readout needs --conv"),
    ]:
        code = main(["kernel", "erf", "--sw2", "1", "--sb2", "0", "--depth", "2", *argv])
        out, err = capsys.readouterr()
        assert code == 2 and word in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("act", ["tanh", "silu", "softplus"])
def test_hermite_expansion_matches_2d_quadrature(act):
    """The per-pixel Hermite path (conv_hermite) against moments.pair's 2-D rule, on
    variances up to 6 and correlations up to 1 (docs/theory.md, "Convolutional networks")."""
    from meanfield.core.gaussian.moments import pair
    from meanfield.ntk.conv_hermite import depth_table, herm_pair
    a = mf.get_activation(act)
    q = np.array([0.02, 0.3, 1.0, 2.5, 6.0])
    H, K, terms, odd = depth_table(a, q)
    assert np.all(terms <= K) and odd == (act == "tanh")
    for i in range(q.size):
        for j in range(q.size):
            for c in (-0.95, -0.3, 0.0, 0.6, 0.99, 0.999999, 1.0):
                s12 = c * math.sqrt(q[i] * q[j])
                D, Dp = herm_pair(H[i], H[j], max(terms[i], terms[j]), q[i], q[j], s12, False,
                                  odd)
                D0, Dp0 = pair(a.record, q[i], q[j], s12, False)
                assert abs(D - D0) <= 1e-11 * max(1.0, abs(D0)), (q[i], q[j], c)
                assert abs(Dp - Dp0) <= 1e-11 * max(1.0, abs(Dp0)), (q[i], q[j], c)
