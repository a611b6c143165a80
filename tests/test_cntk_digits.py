"""The finite NumPy CNN (meanfield/experiments/finite_cnn.py) and the digits comparison
(meanfield/experiments/cntk_digits.py).

* the CNN's gradients against central finite differences, both readouts, depths 1-3;
* its empirical NNGP and NTK move toward the CNN-GP / CNTK of ``mf.kernels`` as the width
  grows (error ~ 1/sqrt(width): a wrong scale, filter normalisation or readout would leave an
  O(1) error at every width);
* gradient descent lowers the loss; bad arguments name the parameter;
* the comparison's kernel accuracies equal those recomputed directly with ``mf.predict``.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import ndtr

import meanfield as mf
from meanfield.experiments.cntk_digits import cntk_digits, digits_images, one_network_accuracy
from meanfield.experiments.finite_cnn import FiniteCNN


@pytest.mark.parametrize("readout", ["flatten", "gap"])
@pytest.mark.parametrize("depth", [1, 2, 3])
def test_gradient_matches_finite_differences(readout, depth):
    rng = np.random.default_rng(depth)
    X = rng.normal(size=(3, 5, 5, 2))
    Y = rng.normal(size=(3, 2))
    net = FiniteCNN("tanh", 1.7, 0.1, depth, 3, (5, 5, 2), 2, 3, readout, seed=depth)
    _, grads = net.loss_and_grads(X, Y)
    h = 1e-6
    checked = 0
    for (W, b), (gW, gb) in zip(net.params, grads):
        for arr, g in ((W, gW), (b, gb)):
            flat, gflat = arr.reshape(-1), g.reshape(-1)  # views: editing flat edits the net
            for e in rng.choice(flat.size, size=min(6, flat.size), replace=False):
                old = flat[e]
                flat[e] = old + h
                up, _ = net.loss_and_grads(X, Y)
                flat[e] = old - h
                down, _ = net.loss_and_grads(X, Y)
                flat[e] = old
                fd = (up - down) / (2 * h)
                assert abs(fd - gflat[e]) <= 1e-5 * max(abs(fd), 1e-3), (e, fd, gflat[e])
                checked += 1
    assert checked >= 4 * len(net.params)


@pytest.mark.parametrize("readout", ["flatten", "gap"])
def test_empirical_kernels_approach_cnn_gp(readout):
    X = np.random.default_rng(0).normal(size=(4, 6, 6, 1))
    ds = mf.kernels(X, "relu", 2.0, 0.1, 3, architecture=mf.Conv(3, "circular", readout))
    S, T = ds.nngp.values[-1], ds.ntk.values[-1]

    def error(width):
        es, et = [], []
        for seed in range(3):
            net = FiniteCNN("relu", 2.0, 0.1, 3, width, (6, 6, 1), 1, 3, readout, seed=seed)
            s, t = net.empirical_kernels(X)
            es.append(np.max(np.abs(s - S)) / np.max(S))
            et.append(np.max(np.abs(t - T)) / np.max(T))
        return np.mean(es), np.mean(et)

    narrow, wide = error(16), error(256)
    # measured: ~0.45 / 0.33 at 16 channels, ~0.1 at 256 (1/sqrt(16) = 4 x less is expected)
    for n_err, w_err in zip(narrow, wide):
        assert w_err < 0.2 and w_err < 0.5 * n_err, (narrow, wide)


def test_gradient_descent_lowers_the_loss():
    Xtr, Ytr, _, _ = digits_images(20, 1)
    net = FiniteCNN("relu", 2.0, 0.0, 2, 8, (8, 8, 1), 10, 3, "gap", seed=0)
    losses = net.train(Xtr, Ytr, 0.5, 20)
    assert losses.shape == (21,) and np.all(np.diff(losses) < 0)


@pytest.mark.parametrize("kwargs,name", [({"readout": "vec"}, "readout"),
                                         ({"width": 0}, "width"),
                                         ({"filter_size": 2}, "filter_size"),
                                         ({"sw2": -1.0}, "sw2"),
                                         ({"image_shape": (8, 8)}, "image_shape")])
def test_finite_cnn_errors_name_the_parameter(kwargs, name):
    args = dict(activation="relu", sw2=2.0, sb2=0.0, depth=2, width=4, image_shape=(8, 8, 1),
                n_out=10)
    args.update(kwargs)
    with pytest.raises(ValueError, match=name):
        FiniteCNN(**args)
    net = FiniteCNN("relu", 2.0, 0.0, 2, 4, (8, 8, 1), 10)
    with pytest.raises(ValueError, match="X must have shape"):
        net.forward(np.zeros((2, 8, 8)))


def test_comparison_matches_direct_predictions():
    ds = cntk_digits("relu", 2.0, 0.0, depths=(2, 3), n_train=30, n_test=25, finite_depths=(2,),
                     width=8, steps=3)
    assert ds.accuracy.dims == ("architecture", "predictor", "depth")
    Xtr, Ytr, Xte, yte = digits_images(30, 25)
    for arch, conv in (("conv flatten", mf.Conv(3, "circular", "flatten")),
                       ("conv gap", mf.Conv(3, "circular", "gap")), ("fc", None)):
        for kind in ("nngp", "ntk"):
            if conv is None:
                p = mf.predict(Xtr.reshape(30, 64), Ytr, Xte.reshape(25, 64), "relu", 2.0, 0.0, 3,
                               kind, depths=[2, 3])
            else:
                p = mf.predict(Xtr, Ytr, Xte, "relu", 2.0, 0.0, 3, kind, depths=[2, 3],
                               architecture=conv)
            acc = (p.prediction.argmax("output") == yte).mean("test").values
            np.testing.assert_array_equal(ds.accuracy.sel(architecture=arch, predictor=kind), acc)
        if conv is not None:  # the finite network's time and the CNTK at that time
            t = float(ds.time.sel(architecture=arch, depth=2))
            lam = np.linalg.eigvalsh(mf.kernels(Xtr, "relu", 2.0, 0.0, 2, architecture=conv)
                                     .ntk.values[-1])[-1]
            assert t == pytest.approx(3 * 0.5 * Ytr.size / lam, rel=1e-12)
            p = mf.predict(Xtr, Ytr, Xte, "relu", 2.0, 0.0, 2, t=t, depths=[2], architecture=conv)
            acc = float((p.prediction.argmax("output") == yte).mean())
            assert float(ds.accuracy.sel(architecture=arch, predictor="ntk at t", depth=2)) == \
                pytest.approx(acc, abs=1e-12)
            for pred in ("finite", "one net at t"):
                assert 0.0 <= float(ds.accuracy.sel(architecture=arch, predictor=pred,
                                                    depth=2)) <= 1.0
    assert np.all(np.isnan(ds.accuracy.sel(predictor="finite", depth=3)))
    with pytest.raises(ValueError, match="finite_depths"):
        cntk_digits(depths=(2, 3), finite_depths=(4,), n_train=20, n_test=5)


def test_one_network_accuracy():
    """Two outputs: P(f_y > f_o) = Phi((m_y - m_o) / sqrt(2 var)) in closed form; zero
    variance is the mean predictor's accuracy; a huge one is a guess."""
    rng = np.random.default_rng(5)
    mean = rng.normal(size=(40, 2))
    var = rng.uniform(0.1, 2.0, 40)
    labels = rng.integers(0, 2, 40)
    other = 1 - labels
    rows = np.arange(40)
    exact = np.mean(ndtr((mean[rows, labels] - mean[rows, other]) / np.sqrt(2 * var)))
    # 2000 draws per image: standard error <= 0.5 / sqrt(2000 * 40) = 0.0018
    assert one_network_accuracy(mean, var, labels) == pytest.approx(exact, abs=0.01)
    mean10 = rng.normal(size=(30, 10))
    lab10 = rng.integers(0, 10, 30)
    assert one_network_accuracy(mean10, np.zeros(30), lab10) == \
        np.mean(np.argmax(mean10, axis=1) == lab10)
    assert one_network_accuracy(mean10, np.full(30, 1e8), lab10) == pytest.approx(0.1, abs=0.02)
    assert np.isnan(one_network_accuracy(mean10, np.full(30, np.nan), lab10))
