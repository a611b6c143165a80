"""``meanfield predict``: the dataset written equals the library's; one-line errors, exit 2."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import meanfield as mf
from meanfield.cli import main


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture()
def files(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 8))
    y = np.eye(3)[rng.integers(0, 3, 50)]
    paths = {}
    for name, arr in (("Xtr", X[:35]), ("ytr", y[:35]), ("Xte", X[35:]), ("yte", y[35:])):
        paths[name] = tmp_path / f"{name}.npy"
        np.save(paths[name], arr)
    return tmp_path, paths, (X[:35], y[:35], X[35:], y[35:])


def base(p):
    return ["predict", "erf", "--sw2", "1.5", "--sb2", "0.05", "--depth", "4", "--train", p["Xtr"],
            "--labels", p["ytr"], "--test", p["Xte"]]


def test_writes_the_library_dataset(capsys, files):
    tmp, p, (X, y, Xt, yt) = files
    out = tmp / "p.nc"
    code, text, err = run(capsys, *base(p), "--kernel", "nngp", "--time", "2,inf", "--depths", "2,4",
                          "--test-labels", p["yte"], "-o", out)
    assert code == 0 and err == "" and "wrote" in text and "accuracy" in text
    ref = mf.predict(X, y, Xt, "erf", 1.5, 0.05, 4, kernel="nngp", t=[2.0, np.inf], depths=[2, 4])
    with xr.open_dataset(out) as ds:
        np.testing.assert_array_equal(ds.prediction.values, ref.prediction.values)
        np.testing.assert_array_equal(ds.variance.values, ref.variance.values)
        assert list(ds.depth.values) == [2, 4] and ds.attrs["kernel"] == "nngp"
    acc = np.mean(np.argmax(ref.prediction.sel(depth=4).isel(time=1).values, -1) == np.argmax(yt, -1))
    # the row of depth 4 at t = inf ends with its accuracy and status
    row = [ln.split() for ln in text.splitlines() if ln.split()[:1] == ["4"] and "inf" in ln.split()]
    assert len(row) == 1 and float(row[0][-2]) == pytest.approx(acc, abs=5e-5)


def test_never_replaces_without_overwrite(capsys, files):
    tmp, p, _ = files
    out = tmp / "p.nc"
    out.write_text("not ours")
    code, _, err = run(capsys, *base(p), "-o", out)
    assert code == 2 and err.startswith("meanfield: error:") and len(err.strip().splitlines()) == 1
    assert out.read_text() == "not ours"
    code, _, _ = run(capsys, *base(p), "-o", out, "--overwrite")  # not a meanfield file
    assert code == 2 and out.read_text() == "not ours"


@pytest.mark.parametrize("extra, words", [
    (["--time", "-1"], "t must be >= 0"),
    (["--time", "1,,2"], "--time"),
    (["--depths", "0,2"], "depths"),
    (["--diag-reg", "-1"], "diag_reg"),
])
def test_bad_input_is_one_line(capsys, files, extra, words):
    _, p, _ = files
    code, out, err = run(capsys, *base(p), *extra)
    assert code == 2 and out == "" and words in err and len(err.strip().splitlines()) == 1


def test_mismatched_test_labels(capsys, files, tmp_path):
    _, p, _ = files
    np.save(tmp_path / "bad.npy", np.zeros(4))
    code, _, err = run(capsys, *base(p), "--test-labels", tmp_path / "bad.npy")
    assert code == 2 and "--test-labels" in err
