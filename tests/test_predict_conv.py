"""``predict(..., architecture=Conv(...))`` and ``depths=`` of the convolutional kernels.

* reductions: 1 x 1 images with a 1 x 1 filter are the fully connected network on the
  channels, so the predictions must equal the fully connected ones;
* an independent reference: the full-covariance NumPy recursion of tests/test_conv.py for
  the kernels of every image pair, then the formulas of docs/theory.md with dense matrix
  functions (tests/test_predict.py's ``_numpy_predict``);
* ``depths=``: the kept depths equal the all-depth kernels bit for bit, and the memory held
  is that of the kept depths only;
* the CLI's --conv/--padding/--readout on ``meanfield predict``.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import xarray as xr

import meanfield as mf
from meanfield.cli import main

from .test_conv import _images, reference
from .test_predict import _numpy_predict


def _split(seed, n, m, H, W, C, k=3):
    X = _images(seed, n + m, H, W, C)
    Y = np.eye(k)[np.random.default_rng(seed + 1).integers(0, k, n)]
    return X[:n], Y, X[n:]


@pytest.mark.parametrize("readout", ["flatten", "gap"])
@pytest.mark.parametrize("kind", ["ntk", "nngp"])
def test_one_pixel_images_predict_like_fully_connected(readout, kind):
    Xtr, Y, Xte = _split(1, 9, 4, 1, 1, 5)
    t = [0.7, 30.0, np.inf]
    fc = mf.predict(Xtr.reshape(9, 5), Y, Xte.reshape(4, 5), "erf", 1.6, 0.1, 4, kernel=kind, t=t)
    cv = mf.predict(Xtr, Y, Xte, "erf", 1.6, 0.1, 4, kernel=kind, t=t,
                    architecture=mf.Conv(1, "circular", readout))
    for name in ("prediction", "variance", "lambda_min", "lambda_max"):
        np.testing.assert_allclose(cv[name].values, fc[name].values, rtol=1e-12, atol=1e-13)
    assert cv.attrs["architecture"] == "conv" and cv.attrs["readout"] == readout
    assert "shared_norm" not in cv.attrs


@pytest.mark.parametrize("act,padding,readout", [("erf", "circular", "gap"),
                                                 ("relu", "same", "flatten"),
                                                 ("relu", "circular", "gap"),
                                                 ("erf", "same", "flatten")])
def test_matches_numpy_reference(act, padding, readout):
    n, m, L = 7, 3, 3
    Xtr, Y, Xte = _split(2, n, m, 4, 4, 2)
    S, T = reference(np.concatenate([Xtr, Xte]), act, 1.7, 0.1, L, 3, padding, readout)
    arch = mf.Conv(3, padding, readout)
    for kind in ("ntk", "nngp"):
        for t in (None, 5.0):
            ds = mf.predict(Xtr, Y, Xte, act, 1.7, 0.1, L, kernel=kind, t=t, depths=[2, 3],
                            architecture=arch)
            for i, l in enumerate((2, 3)):
                mean, var = _numpy_predict(S[l - 1], T[l - 1], n, Y, t, kind)
                scale = np.max(np.abs(mean))
                np.testing.assert_allclose(ds.prediction.values[i], mean, rtol=0,
                                           atol=1e-10 * scale)
                np.testing.assert_allclose(ds.variance.values[i], var, rtol=0,
                                           atol=1e-10 * np.max(np.diagonal(S[l - 1])))


def test_training_points_are_interpolated():
    """At t = inf the NTK and NNGP predictors reproduce the training targets on the training
    images (kernel regression without ridge), and their variance there is ~0."""
    Xtr, Y, _ = _split(3, 8, 0, 5, 5, 1)
    for kind in ("ntk", "nngp"):
        ds = mf.predict(Xtr, Y, Xtr, "relu", 2.0, 0.05, 3, kind, architecture=mf.Conv(3))
        np.testing.assert_allclose(ds.prediction.values, np.broadcast_to(Y, (3,) + Y.shape),
                                   atol=1e-8)
        assert np.max(np.abs(ds.variance.values)) < 1e-8


def test_errors_name_the_parameter():
    Xtr, Y, Xte = _split(4, 5, 2, 4, 4, 1)
    arch = mf.Conv(3)
    with pytest.raises(ValueError, match="X_train is four-dimensional"):
        mf.predict(Xtr, Y, Xte, "erf", 1.5, 0.1, 2)
    with pytest.raises(ValueError, match="architecture"):
        mf.predict(Xtr, Y, Xte, "erf", 1.5, 0.1, 2, architecture="conv")
    with pytest.raises(ValueError, match="X_test"):
        mf.predict(Xtr, Y, Xte[:, :3], "erf", 1.5, 0.1, 2, architecture=arch)
    with pytest.raises(ValueError, match="X_train must be four-dimensional"):
        mf.predict(Xtr.reshape(5, 16), Y, Xte, "erf", 1.5, 0.1, 2, architecture=arch)
    with pytest.raises(ValueError, match="y_train"):
        mf.predict(Xtr, Y[:3], Xte, "erf", 1.5, 0.1, 2, architecture=arch)
    with pytest.raises(ValueError, match="depths"):
        mf.predict(Xtr, Y, Xte, "erf", 1.5, 0.1, 2, depths=[3], architecture=arch)
    with pytest.raises(ValueError, match="kernel"):
        mf.predict(Xtr, Y, Xte, "erf", 1.5, 0.1, 2, kernel="gp", architecture=arch)


# --------------------------------------------------------------------------- depths=
@pytest.mark.parametrize("act", ["relu", "tanh"])
@pytest.mark.parametrize("readout", ["flatten", "gap"])
def test_kept_depths_equal_all_depths(act, readout):
    X = _images(5, 5, 4, 4, 2)
    X2 = _images(6, 3, 4, 4, 2)
    arch = mf.Conv(3, "same", readout)
    for x2 in (None, X2):
        full = mf.kernels(X, act, 1.8, 0.1, 6, X2=x2, architecture=arch)
        kept = mf.kernels(X, act, 1.8, 0.1, 6, X2=x2, architecture=arch, depths=[4, 2])
        assert list(kept.depth.values) == [2, 4]
        np.testing.assert_array_equal(kept.nngp.values, full.nngp.values[[1, 3]])
        np.testing.assert_array_equal(kept.ntk.values, full.ntk.values[[1, 3]])
        xr.testing.assert_identical(kept.depth, full.depth.sel(depth=[2, 4]))
    m_full = mf.ntk_metrics(X, np.arange(5.0), X2, act, 1.8, 0.1, 6, architecture=arch)
    m_kept = mf.ntk_metrics(X, np.arange(5.0), X2, act, 1.8, 0.1, 6, depths=[3, 6],
                            architecture=arch)
    np.testing.assert_array_equal(m_kept.prediction.values, m_full.prediction.values[[2, 5]])
    np.testing.assert_array_equal(m_kept.lambda_min.values, m_full.lambda_min.values[[2, 5]])


def test_kept_depths_hold_only_their_memory():
    """Peak traced memory of depths=[L] is far below the all-depth call's: the kernels of the
    other depths are never allocated (the per-image pixel variances, L x n x HW, remain)."""
    X = _images(7, 60, 4, 4, 1)
    arch = mf.Conv(3, "circular", "flatten")
    mf.kernels(X[:4], "erf", 1.5, 0.1, 2, architecture=arch)  # compile / load outside the trace

    def peak(**kw):
        tracemalloc.start()
        ds = mf.kernels(X, "erf", 1.5, 0.1, 30, architecture=arch, **kw)
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return ds, top

    full, p_full = peak()
    one, p_one = peak(depths=[30])
    np.testing.assert_array_equal(one.ntk.values[0], full.ntk.values[-1])
    all_depths = full.nngp.nbytes + full.ntk.nbytes  # 2 x 30 x 60 x 60 doubles = 1.7 MB
    assert p_full >= all_depths
    assert p_one < p_full - 0.8 * all_depths, (p_one, p_full)


# --------------------------------------------------------------------------- CLI
def test_cli_predict_conv(tmp_path, capsys):
    Xtr, Y, Xte = _split(8, 10, 4, 5, 5, 1)
    files = {}
    for name, arr in (("xtr", Xtr), ("y", Y), ("xte", Xte), ("flat", Xtr.reshape(10, 25))):
        files[name] = str(tmp_path / f"{name}.npy")
        np.save(files[name], arr)
    out = tmp_path / "p.nc"
    base = ["predict", "relu", "--sw2", "2", "--sb2", "0.1", "--depth", "3", "--labels",
            files["y"]]
    code = main(base + ["--train", files["xtr"], "--test", files["xte"], "--conv", "3",
                        "--padding", "same", "--readout", "gap", "--depths", "1,3", "-o",
                        str(out)])
    text, err = capsys.readouterr()
    assert code == 0 and err == "" and "conv 3x3, padding same, readout gap" in text
    ref = mf.predict(Xtr, Y, Xte, "relu", 2, 0.1, 3, depths=[1, 3],
                     architecture=mf.Conv(3, "same", "gap"))
    with xr.open_dataset(out) as ds:
        np.testing.assert_array_equal(ds.prediction.values, ref.prediction.values)
        assert ds.attrs["readout"] == "gap" and ds.attrs["padding"] == "same"
    for argv, word in [
        (["--train", files["flat"], "--test", files["xte"], "--conv", "3"], "(n, H, W, C)"),
        (["--train", files["xtr"], "--test", files["xte"]], "add --conv"),
        (["--train", files["xtr"], "--test", files["xte"], "--conv", "7"], "filter_size 7"),
        (["--train", files["flat"], "--test", files["flat"], "--padding", "same"],
         "--padding needs --conv"),
    ]:
        code = main(base + argv)
        _, err = capsys.readouterr()
        assert code == 2 and word in err and len(err.strip().splitlines()) == 1, err
