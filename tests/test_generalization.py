"""The generalization experiment: its dataset, the chance/singular depths, its figure and CLI."""

from __future__ import annotations

import numpy as np
import pytest

import meanfield as mf
from meanfield.cli import main
from meanfield.experiments.generalization import (chance_depths, chance_threshold, digits_split,
                                                  generalization)


@pytest.fixture(scope="module")
def small():
    return generalization("tanh", [1.2, 3.0], 0.05, depths=[1, 2, 6], n_train=80, n_test=60)


def test_dataset(small):
    ds = small
    assert ds.accuracy.dims == ("kernel", "sw2", "depth")
    assert list(ds.kernel.values) == ["ntk", "nngp"]
    # the critical sw2 of tanh at sb2 = 0.05 is added to the grid
    assert ds.sw2.size == 3 and abs(ds.attrs["critical_sw2"] - mf.critical_sw2("tanh", 0.05)) < 1e-12
    assert list(ds.phase.values) == ["ordered", "critical", "chaotic"]
    # depth 1: the linear kernel of 80 images in 64 dimensions has rank <= 65: singular
    assert np.all(ds.status.sel(depth=1) == 1) and np.all(np.isnan(ds.accuracy.sel(depth=1)))
    assert np.all(np.isnan(ds.singular_depth))  # depth 1 alone is not a singular tail
    acc = ds.accuracy.sel(depth=[2, 6]).values
    assert np.all((acc > 0.5) & (acc <= 1.0))  # shallow kernels classify digits well
    np.testing.assert_allclose(ds.max_depth, 6 * ds.xi_c)


def test_accuracy_is_the_predictors(small):
    """Recompute one cell from mf.predict directly."""
    Xtr, Ytr, Xte, yte, _ = digits_split(80, 60, 0)
    p = mf.predict(Xtr, Ytr, Xte, "tanh", 3.0, 0.05, 6, kernel="nngp", depths=[6])
    acc = np.mean(np.argmax(p.prediction.values[0], axis=-1) == yte)
    assert small.accuracy.sel(kernel="nngp", sw2=3.0, depth=6).item() == acc


def test_chance_depths():
    acc = np.array([[np.nan, 0.5, 0.12, 0.3], [0.9, 0.8, np.nan, np.nan], [np.nan] * 4])
    status = np.array([[1, 0, 0, 0], [0, 0, 1, 1], [1, 1, 1, 1]])
    first, sing = chance_depths(acc, status, np.array([1, 2, 4, 8]), 0.15)
    np.testing.assert_array_equal(first, [4.0, np.nan, np.nan])
    np.testing.assert_array_equal(sing, [np.nan, 4.0, 1.0])
    assert chance_threshold(900) == pytest.approx(0.1 + 3 * 0.01)


def test_figure(small):
    fig = mf.plot.plot_generalization(small)
    assert len(fig.axes) == 3  # two panels and the colour bar


def test_bad_split():
    with pytest.raises(ValueError, match="n_train"):
        digits_split(1500, 500)


def test_cli(tmp_path, capsys):
    out = tmp_path / "g.nc"
    code = main(["generalization", "relu", "--sw2", "1.5", "--depths", "2,3", "--n-train", "40",
                 "--n-test", "30", "-o", str(out)])
    text, err = capsys.readouterr()
    assert code == 0 and out.exists() and "critical sw2=2" in text
    code = main(["generalization", "relu", "--sw2", "1.5", "--depths", "2,x", "-o",
                 str(tmp_path / "h.nc")])
    _, err = capsys.readouterr()
    assert code == 2 and "--depths" in err and len(err.strip().splitlines()) == 1
    code = main(["generalization", "relu", "--sw2", "1.5", "-o", str(out)])  # exists
    _, err = capsys.readouterr()
    assert code == 2 and ("exists" in err or "overwrite" in err)


def test_finite_network_learns():
    from meanfield.experiments.generalization import finite_network

    acc = finite_network("tanh", [1.0, 1.5], 0.05, 2, width=32, steps=300, n_train=200,
                         n_test=100)
    assert acc.shape == (2,) and np.all(acc > 0.5)  # well above chance (0.1) after training
    untrained = finite_network("tanh", [1.0], 0.05, 2, width=32, steps=0, n_train=200, n_test=100)
    assert untrained[0] < 0.4
