"""conv_depth_scales against the measured decay of the convolutional kernel recursion.

The slopes are measured on the library's own recursion, never on the formula:

* covariance modes: the per-pair full pixel-pixel map of ``conv_blocks`` (``_expect_full``
  then ``_shift_sum``: the body of ``_pair_full``, which ``kernels(..., Conv(readout="gap"))``
  runs), started at the fixed point plus a perturbation exp(i(w1.p + w2.p')), minus the
  unperturbed run, projected on the same exponential;
* pixel-variance modes: ``conv.self_diagonals`` (the per-pixel variances every conv kernel
  starts from) on images whose first-layer variances are q* (1 + small cos(w.p));
* the uniform mode through the public ``mf.kernels`` itself (both readouts).

slope = log|a^{l+1}/a^l| is compared with -1/xi(w) to 1e-6.
"""

import numpy as np
import pytest

import meanfield as mf
from meanfield.core.activation import get_activation
from meanfield.ntk import conv as CV
from meanfield.ntk import conv_blocks as CB
from meanfield.ntk.conv_hermite import depth_table

TOL = 1e-6
H = W = 8
K = 3


def _positions():
    h, w = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
    return h.ravel(), w.ravel()


def _phase(m):
    h, w = _positions()
    return 2.0 * np.pi * (m[0] * h / H + m[1] * w / W)


def _ref(act, sw2, sb2, m, var="xi"):
    ds = mf.conv_depth_scales(act, sw2, sb2, K, (H, W))
    a = (m[0] + H // 2) % H - H // 2
    b = (m[1] + W // 2) % W - W // 2
    return -1.0 / float(ds[var].sel(mode_y=a, mode_x=b)), ds


def _covariance_run(act, sw2, sb2, q, S, L):
    """L layers of the pixel-pixel covariance map of two images whose pixel variances are q."""
    P = H * W
    nbr = CB.neighbours(H, W, K, True)
    mode, _ = CV.expectation_mode(act)
    v = np.full(P, q)
    tab, kp, odd = np.zeros((P, 1)), np.ones(P, dtype=np.int64), False
    if mode == CB.EXPECT_HERMITE:
        tab, _, kp, odd = depth_table(act, v)
    out = [S.copy()]
    Kf, Kd, b2 = np.empty((P, P)), np.empty((P, P)), np.full((1, 1), sb2)
    for _ in range(L):
        CB._expect_full(mode, act.record, v, v, S, False, Kf, Kd, tab, tab, kp, kp, odd)
        S = np.empty((P, P))
        CB._shift_sum(Kf, Kd, Kf, nbr, sw2 / K ** 2, b2, S, False)
        out.append(S)
    return np.array(out)


def covariance_slopes(activation, sw2, sb2, m1, m2, eps, L):
    """Measured log-decay per layer of the perturbation eps q* cos(w1.p + w2.p') of the
    cross-covariance (two inputs at the fixed point).  In the ordered phase (c* = 1) the
    perturbation must keep c <= 1: -eps q* (2 + cos), against the unperturbed run."""
    act = get_activation(activation)
    r = mf.analyze(act, sw2, sb2)
    ph = _phase(m1)[:, None] + _phase(m2)[None, :]
    base = np.full(ph.shape, r.q_star * r.c_star)
    if r.c_star < 1.0:  # odd part of +-eps: no second-order terms
        pert = eps * r.q_star * np.cos(ph)
        D = (_covariance_run(act, sw2, sb2, r.q_star, base + pert, L)
             - _covariance_run(act, sw2, sb2, r.q_star, base - pert, L)) / 2.0
    else:
        D = (_covariance_run(act, sw2, sb2, r.q_star, base - eps * r.q_star * (2.0 + np.cos(ph)), L)
             - _covariance_run(act, sw2, sb2, r.q_star, base, L))
    a = np.abs((D * np.exp(-1j * ph)).sum(axis=(1, 2)))
    return np.diff(np.log(a)), r


CASES = [("erf", 2.5, 0.1), ("tanh", 2.0, 0.05), ("erf", 1.2, 0.1), ("tanh", 0.8, 0.05)]
MODES = [((0, 0), (0, 0)), ((1, 0), (0, 0)), ((2, 3), (0, 0)), ((4, 4), (0, 0)),
         ((0, 0), (3, 1)), ((1, 2), (2, -1))]


@pytest.mark.parametrize("activation,sw2,sb2", CASES)
@pytest.mark.parametrize("m1,m2", MODES)
def test_covariance_modes(activation, sw2, sb2, m1, m2):
    """Chaotic (c* < 1) and ordered (c* = 1) erf and tanh: every mode, including ones that
    vary in p' or in both pixels (the eigenvalue is lambda(w1 + w2))."""
    ref, ds = _ref(activation, sw2, sb2, (m1[0] + m2[0], m1[1] + m2[1]))
    ordered = ds.c_star.item() == 1.0
    # decay by at most ~e^-8 (e^-4 from the smaller ordered eps) so that the difference of
    # the runs stays far above rounding
    L = max(1, min(6, int((4.0 if ordered else 8.0) / abs(ref))))
    slopes, r = covariance_slopes(activation, sw2, sb2, m1, m2, 1e-7 if ordered else 1e-5, L)
    assert r.phase == ("ordered" if ordered else "chaotic")
    np.testing.assert_allclose(slopes, ref, rtol=0, atol=TOL)


def test_eigenvalue_is_of_the_sum_frequency():
    """The map keeps the lag p' - p: a perturbation cos(w.(p - p')) (w1 = -w2) decays like
    the uniform mode, one in cos(w.(p + p')) like lambda(2 w)."""
    lag, _ = covariance_slopes("erf", 2.5, 0.1, (1, 0), (-1, 0), 1e-5, 4)
    tot, _ = covariance_slopes("erf", 2.5, 0.1, (1, 0), (1, 0), 1e-5, 4)
    np.testing.assert_allclose(lag, _ref("erf", 2.5, 0.1, (0, 0))[0], atol=TOL, rtol=0)
    np.testing.assert_allclose(tot, _ref("erf", 2.5, 0.1, (2, 0))[0], atol=TOL, rtol=0)
    assert abs(tot[0] - _ref("erf", 2.5, 0.1, (1, 0))[0]) > 0.1


@pytest.mark.parametrize("sw2", [1.0, 1.5])
@pytest.mark.parametrize("m", [(1, 0), (2, 3)])
def test_relu_covariance_modes(sw2, m):
    """ReLU (closed form) is ordered with c* = 1, where its map has a sqrt(1 - c) term: the
    measured slope is s0 + a sqrt(eps) + O(eps).  Two runs, eps = 1e-6 and 1e-8, give s0 by
    Richardson extrapolation in sqrt(eps)."""
    ref, _ = _ref("relu", sw2, 0.1, m)
    L = max(1, min(4, int(4.0 / abs(ref))))
    s1, _ = covariance_slopes("relu", sw2, 0.1, m, (0, 0), 1e-6, L)
    s2, _ = covariance_slopes("relu", sw2, 0.1, m, (0, 0), 1e-8, L)
    assert np.all(np.abs(s2 - ref) > 1e-5)  # the sqrt term is there ...
    np.testing.assert_allclose((10.0 * s2 - s1) / 9.0, ref, rtol=0, atol=TOL)  # ... and removed


def variance_slopes(activation, sw2, sb2, m, eta, L):
    """Measured log-decay of the pixel-variance mode m of one image, from images whose
    first-layer variances are q* + O(eta) cos(w.p), through conv.self_diagonals."""
    act = get_activation(activation)
    r = mf.analyze(act, sw2, sb2)
    ph = _phase(m)
    nbr = CB.neighbours(H, W, K, True)
    mode, _ = CV.expectation_mode(act)

    def run(e):
        x2 = (r.q_star - sb2) / sw2 * (1.0 + e * np.cos(ph))
        Z = np.sqrt(x2).reshape(1, H * W, 1)
        return CV.self_diagonals(mode, act, Z, nbr, sw2, sb2, float(K * K), 1.0, L + 1)[0][0]

    D = (run(eta) - run(-eta)) / 2.0  # odd part: no second-order terms
    a = np.abs((D * np.exp(-1j * ph)).sum(axis=1))
    return np.diff(np.log(a))


@pytest.mark.parametrize("activation,sw2,sb2", CASES + [("relu", 1.5, 0.1)])
@pytest.mark.parametrize("m", [(0, 0), (1, 0), (1, 1), (3, 2)])
def test_variance_modes(activation, sw2, sb2, m):
    ref, _ = _ref(activation, sw2, sb2, m, "xi_length")
    L = max(2, min(5, int(8.0 / abs(ref))))
    np.testing.assert_allclose(variance_slopes(activation, sw2, sb2, m, 1e-4, L), ref,
                               rtol=0, atol=TOL)


@pytest.mark.parametrize("readout", ["flatten", "gap"])
@pytest.mark.parametrize("activation,sw2,sb2", [("erf", 2.5, 0.1), ("tanh", 2.0, 0.05)])
def test_readouts_decay_with_the_uniform_mode(readout, activation, sw2, sb2):
    """Through mf.kernels itself: two images at the fixed point (every pixel variance q*,
    cross-covariance q* c*) plus a small perturbation; both readouts are spatial averages,
    so their deviation decays with the w = 0 scale, the fully connected xi_c."""
    r = mf.analyze(activation, sw2, sb2)
    C = 2
    s = np.sqrt(C * (r.q_star - sb2) / sw2)
    t0 = np.arccos((r.q_star * r.c_star - sb2) / (r.q_star - sb2))
    rng = np.random.default_rng(0)
    shape = rng.standard_normal((H, W))

    def readout_at(e):
        th = t0 + e * shape
        X = np.zeros((2, H, W, C))
        X[0, :, :, 0] = s
        X[1, :, :, 0], X[1, :, :, 1] = s * np.cos(th), s * np.sin(th)
        ds = mf.kernels(X, activation, sw2, sb2, 5,
                        architecture=mf.Conv(filter_size=K, padding="circular", readout=readout))
        return ds.nngp.values[:, 0, 1]

    D = (readout_at(1e-5) - readout_at(-1e-5)) / 2.0
    ref = _ref(activation, sw2, sb2, (0, 0))[0]
    assert ref == pytest.approx(-1.0 / r.xi_c, abs=1e-12)
    np.testing.assert_allclose(np.diff(np.log(np.abs(D))), ref, rtol=0, atol=TOL)


def test_dataset_layout_and_special_values():
    ds = mf.conv_depth_scales("erf", 2.5, 0.1, 3, (6, 6, 3))
    assert ds.xi.dims == ("mode_y", "mode_x") and ds.sizes == {"mode_y": 6, "mode_x": 6}
    assert list(ds.mode_y.values) == [-3, -2, -1, 0, 1, 2]
    r = mf.analyze("erf", 2.5, 0.1)
    assert ds.xi.sel(mode_y=0, mode_x=0).item() == pytest.approx(r.xi_c, rel=1e-12)
    assert ds.xi_length.sel(mode_y=0, mode_x=0).item() == pytest.approx(r.xi_q, rel=1e-12)
    # 6 x 6 with k = 3: 1 + 2 cos(2 pi 2/6) = 0, the mode is gone after one layer
    assert ds.eigenvalue.sel(mode_y=2, mode_x=0).item() == 0.0
    assert ds.xi.sel(mode_y=2, mode_x=0).item() == 0.0
    # lambda(pi, 0) = -1/3: negative, the depth scale uses |chi_c lambda|
    assert ds.eigenvalue.sel(mode_y=-3, mode_x=0).item() == pytest.approx(-1 / 3, abs=1e-15)
    assert ds.xi.sel(mode_y=-3, mode_x=0).item() == pytest.approx(
        -1 / np.log(r.chi_c / 3), rel=1e-12)
    assert np.all(ds.xi.values <= r.xi_c + 1e-12)  # the uniform mode lives longest
    assert ds.phase.item() == "chaotic" and ds.attrs["padding"] == "circular"
    # k = 1: every mode has lambda = 1 (the delta-like filter of Xiao et al.)
    one = mf.conv_depth_scales("tanh", 1.5, 0.05, 1, (4, 5))
    np.testing.assert_allclose(one.xi.values, mf.analyze("tanh", 1.5, 0.05).xi_c, rtol=1e-12)
    # critical: the uniform mode never decays exponentially
    crit = mf.conv_depth_scales("tanh", 1.0, 0.0, 3, (8, 8))
    assert crit.xi.sel(mode_y=0, mode_x=0).item() == np.inf
    assert np.isfinite(crit.xi.sel(mode_y=1, mode_x=0).item())
    # relu without a fixed point (sw2 > 2, sb2 > 0): NaN, with the reason
    none = mf.conv_depth_scales("relu", 3.0, 0.1, 3, (8, 8))
    assert np.all(np.isnan(none.xi.values)) and none.attrs["status"] != "converged"


@pytest.mark.parametrize("kwargs,word", [
    (dict(filter_size=2), "filter_size"), (dict(filter_size=0), "filter_size"),
    (dict(filter_size=3.0), "filter_size"), (dict(filter_size=9), "filter_size"),
    (dict(padding="same"), "padding"), (dict(padding="valid"), "padding"),
    (dict(image_shape=(8,)), "image_shape"), (dict(image_shape=(8, 0)), "image_shape"),
    (dict(image_shape=8), "image_shape"), (dict(sw2=-1.0), "sw2"),
])
def test_errors_name_the_parameter(kwargs, word):
    args = dict(activation="tanh", sw2=1.5, sb2=0.05, filter_size=3, image_shape=(8, 8))
    args.update(kwargs)
    with pytest.raises(ValueError, match=word):
        mf.conv_depth_scales(**args)


def test_figure():
    import matplotlib

    matplotlib.use("Agg")
    from meanfield.plot.conv import conv_mode_depth_scales

    fig = conv_mode_depth_scales("erf", 0.05, 3, (8, 8), sw2=np.linspace(0.5, 3.0, 6))
    ax = fig.axes[0]
    assert ax.get_yscale() == "log" and len(ax.get_lines()) == 6  # 5 modes + critical sw2
    import matplotlib.pyplot as plt

    plt.close(fig)
