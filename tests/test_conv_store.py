"""Convolutional kernel stores (``kernels_to_store(..., architecture=Conv(...))``): blocks of
image pairs equal ``meanfield.kernels(..., architecture=...)`` bit for bit whatever the block
size, for both paddings and readouts, on the closed-form (erf, relu), Hermite (tanh, odd;
silu, not odd) and 2-D quadrature (elu) paths; square and cross (X2) stores; distributed,
resumed, refused when built from other inputs or another architecture; the CLI."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import meanfield as mf
from meanfield.cli import main
from meanfield.core import budget
from meanfield.sweeps import kernel_run

N, M, L = 11, 7, 4
SHAPE = (5, 6, 2)  # H != W: a transposed index would show
POINT = {"erf": (1.7, 0.05), "relu": (2.0, 0.05), "tanh": (2.0, 0.05), "silu": (2.0, 0.1),
         "elu": (1.5, 0.1)}


def images(n, seed):
    """Images whose pixel norms differ (a few dark pixels), as digits do."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n,) + SHAPE)
    X[:, 0, 0] *= 0.1
    return X


X, X2 = images(N, 0), images(M, 1)
_REF = {}


def reference(act, conv, X2=None, depths=None, X=X):
    key = (act, conv, None if X2 is None else X2.tobytes(), depths, X.tobytes())
    if key not in _REF:
        _REF[key] = mf.kernels(X, act, *POINT[act], L, architecture=conv, X2=X2, depths=depths)
    return _REF[key]


def store_run(act, store, conv, **kw):
    kw.setdefault("workers", 1)
    kw.setdefault("progress", False)
    Xs = kw.pop("X", X)
    return mf.kernels_to_store(Xs, act, *POINT[act], L, store, architecture=conv, **kw)


CONVS = [mf.Conv(3, p, r) for p in ("circular", "same") for r in ("flatten", "gap")]


# --------------------------------------------------------------------------- bit for bit
@pytest.mark.parametrize("conv", CONVS, ids=lambda c: f"{c.padding}-{c.readout}")
@pytest.mark.parametrize("act", ["erf", "relu", "tanh"])
def test_blocks_equal_kernels_bit_for_bit(tmp_path, act, conv):
    # 4 does not divide 11 (a last block of 3 images) nor 7 (of 3)
    ds = store_run(act, tmp_path / "k.zarr", conv, block=4)
    assert all(v.chunks is not None for v in ds.data_vars.values())  # lazy, dask-backed
    xr.testing.assert_identical(ds.load(), reference(act, conv))
    cross = store_run(act, tmp_path / "x.zarr", conv, X2=X2, block=4)
    ref = reference(act, conv, X2)
    assert cross.nngp.shape == (L, M, N)
    xr.testing.assert_identical(cross.load(), ref)
    st_ = mf.kernel_store_status(tmp_path / "x.zarr")
    assert st_.cross and st_.n_blocks == 2 * 3 and st_.complete


@pytest.mark.parametrize("act", ["silu", "elu"])
def test_other_expectation_paths(tmp_path, act):
    # silu: Hermite tables that are not odd; elu: the 2-D rule (no tables at all; flatten
    # on a few images: the rule per pixel pair is ~1e3 times slower)
    conv = mf.Conv(3, "same", "gap" if act == "silu" else "flatten")
    Xs = X if act == "silu" else X[:5]
    ref = reference(act, conv, X=Xs)
    assert ("Hermite" in ref.attrs["method"]) == (act == "silu")
    assert ("2-D quadrature" in ref.attrs["method"]) == (act == "elu")
    xr.testing.assert_identical(store_run(act, tmp_path / "k.zarr", conv, block=2,
                                          X=Xs).load(), ref)


def test_one_image_blocks(tmp_path):
    # every block a single pair of images (diagonal blocks: one image with itself)
    conv = mf.Conv(3, "same", "gap")
    n = 5
    ds = store_run("tanh", tmp_path / "k.zarr", conv, block=1, X=X[:n])
    xr.testing.assert_identical(ds.load(), reference("tanh", conv, X=X[:n]))
    assert mf.kernel_store_status(tmp_path / "k.zarr").n_blocks == n * (n + 1) // 2


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(block=st.integers(2, N + 2),
       depths=st.one_of(st.none(), st.sets(st.integers(1, L), min_size=1, max_size=2)),
       cross=st.booleans())
def test_any_block_and_depths(block, depths, cross):
    conv = mf.Conv(3, "circular", "flatten")
    depths = None if depths is None else tuple(sorted(depths))
    x2 = X2 if cross else None
    with tempfile.TemporaryDirectory() as tmp:
        ds = store_run("tanh", Path(tmp) / "k.zarr", conv, block=block, X2=x2,
                       depths=None if depths is None else list(depths))
        xr.testing.assert_identical(ds.load(), reference("tanh", conv, x2, depths))


def test_table_holds_every_image(tmp_path):
    # The Hermite tables are those of the whole set (ranges, lengths, parities): a block
    # of a few images reads its rows of them, it does not build its own.
    conv = CONVS[0]
    store_run("tanh", tmp_path / "k.zarr", conv, X2=X2, block=3)
    t = zarr.open_group(str(tmp_path / "k.zarr"), mode="r")["_kernels/table"]
    assert t["V"].shape == (N + M, L, SHAPE[0] * SHAPE[1])
    assert t["hermite_0"].shape[:2] == (N + M, SHAPE[0] * SHAPE[1])
    assert t["odd"][...].all()  # tanh: the pair sums skip the even terms
    assert t["V"].chunks[0] == 3


# --------------------------------------------------------------------------- distributed
def test_local_cluster(tmp_path):
    from dask.distributed import Client, LocalCluster

    conv = mf.Conv(3, "same", "gap")
    with LocalCluster(n_workers=2, processes=False, threads_per_worker=1,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        ds = store_run("tanh", tmp_path / "k.zarr", conv, block=4, client=client)
        st_ = mf.kernel_store_status(tmp_path / "k.zarr")
    assert st_.complete and st_.runs[-1]["blocks_computed"] == st_.n_blocks == 6
    xr.testing.assert_identical(ds.load(), reference("tanh", conv))


# --------------------------------------------------------------------------- resume
def test_interrupted_run_resumes(tmp_path, monkeypatch):
    conv = mf.Conv(3, "circular", "gap")
    store = tmp_path / "k.zarr"
    real = kernel_run.conv_block
    calls = []

    def failing(*args, **kw):
        calls.append(1)
        if len(calls) == 4:
            raise RuntimeError("worker lost")
        return real(*args, **kw)

    monkeypatch.setattr(kernel_run, "conv_block", failing)
    with pytest.raises(RuntimeError, match="worker lost"):
        store_run("tanh", store, conv, block=4)
    st_ = mf.kernel_store_status(store)
    assert st_.n_done == 3 and st_.runs[-1]["outcome"] == "interrupted"
    part = mf.open_kernels(store, partial=True)
    assert np.isnan(part.nngp.values).any() and not np.isnan(part.nngp.values).all()
    monkeypatch.setattr(kernel_run, "conv_block", real)
    # a flagged block keeps whatever it holds: a resume must not recompute it
    root = zarr.open_group(str(store), mode="r+", use_consolidated=False)
    done = root["_kernels/done"][...]
    I, J = np.argwhere(done)[0]
    root["ntk"][:, 4 * I:4 * I + 4, 4 * J:4 * J + 4] = -7.0
    ds = store_run("tanh", store, conv)  # the block size is the store's
    st_ = mf.kernel_store_status(store)
    assert st_.runs[-1]["blocks_computed"] == 3 and st_.runs[-1]["outcome"] == "complete"
    assert np.all(ds.ntk.values[:, 4 * I:4 * I + 4, 4 * J:4 * J + 4] == -7.0)
    ref = reference("tanh", conv)
    np.testing.assert_array_equal(ds.nngp.values, ref.nngp.values)
    root["ntk"][:, 4 * I:4 * I + 4, 4 * J:4 * J + 4] = ref.ntk.values[:, 4 * I:4 * I + 4,
                                                                     4 * J:4 * J + 4]
    xr.testing.assert_identical(mf.open_kernels(store).load(), ref)


# --------------------------------------------------------------------------- refusals
def test_other_kernels_are_refused(tmp_path):
    conv = mf.Conv(3, "circular", "flatten")
    store = tmp_path / "k.zarr"
    store_run("erf", store, conv, block=5)
    for other, match in [(mf.Conv(3, "circular", "gap"), "differs in readout"),
                         (mf.Conv(3, "same", "flatten"), "differs in padding"),
                         (mf.Conv(5, "circular", "flatten"), "differs in filter_size")]:
        with pytest.raises(ValueError, match=match + ".*overwrite=True"):
            store_run("erf", store, other)
    # the same numbers as images of another shape
    with pytest.raises(ValueError, match="differs in .*image_shape"):
        store_run("erf", store, conv, X=X.reshape(N, 6, 5, 2))
    with pytest.raises(ValueError, match="differs in inputs_blake2b"):
        store_run("erf", store, conv, X=X + 1e-12)
    with pytest.raises(ValueError, match="differs in"):  # the fully connected kernel
        mf.kernels_to_store(X.reshape(N, -1), "erf", *POINT["erf"], L, store, workers=1,
                            progress=False)
    xr.testing.assert_identical(mf.open_kernels(store).load(), reference("erf", conv))
    gap = mf.Conv(3, "circular", "gap")
    ds = store_run("erf", store, gap, overwrite=True)
    xr.testing.assert_identical(ds.load(), reference("erf", gap))


@pytest.mark.parametrize("kw, match", [
    ({"X": np.zeros((4, 5, 6))}, "X must be four-dimensional"),
    ({"X": X[:, :2, :2]}, "filter_size 3 is larger than the 2 x 2 images"),
    ({"X2": X2[:, :, :5]}, r"X2 has images of shape \(5, 5, 2\)"),
    ({"X2": np.full((2,) + SHAPE, np.nan)}, "X2 contains NaN"),
])
def test_bad_images_write_nothing(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        store_run("erf", tmp_path / "k.zarr", CONVS[0], **kw)
    assert not (tmp_path / "k.zarr").exists()


def test_memory_refusal_points_to_the_store(monkeypatch):
    monkeypatch.setattr(budget, "available_memory", lambda: 1000)
    with pytest.raises(budget.BudgetError, match=r"architecture=\.\.\.\).*--conv K --store"):
        mf.kernels(X, "erf", 2.0, 0.05, L, architecture=CONVS[0])


# --------------------------------------------------------------------------- CLI
def cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_conv_store(tmp_path, capsys):
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "XT.npy", X2)
    store = tmp_path / "k.zarr"
    base = ["kernel", "tanh", "--sw2", "2", "--sb2", "0.05", "--depth", L, "--data",
            tmp_path / "X.npy", "--store", store, "--workers", "1", "--conv", "3",
            "--padding", "same", "--readout", "gap"]
    code, out, err = cli(capsys, *base, "--block", "4", "--depths", "2,4")
    assert code == 0 and "6/6 blocks of 4 x 4 done; this run computed 6" in out, err
    conv = mf.Conv(3, "same", "gap")
    xr.testing.assert_identical(mf.open_kernels(store).load(), reference("tanh", conv,
                                                                         depths=(2, 4)))
    code, out, _ = cli(capsys, *base, "--depths", "2,4")
    assert code == 0 and "this run computed 0" in out
    code, _, err = cli(capsys, *base[:-2], "--readout", "flatten", "--depths", "2,4")
    assert code == 2 and "differs in readout" in err and "--overwrite" in err
    assert len(err.strip().splitlines()) == 1
    cross = tmp_path / "x.zarr"
    base[base.index(store)] = cross
    code, out, err = cli(capsys, *base, "--test", tmp_path / "XT.npy", "--block", "5")
    assert code == 0 and "over 7 x 11 inputs" in out, err
    xr.testing.assert_identical(mf.open_kernels(cross).load(), reference("tanh", conv, X2))


@pytest.mark.parametrize("data, extra, match", [
    ("flat", ["--conv", "3"], "--data: --conv needs images of shape (n, H, W, C), got shape "
                              "(11, 60)"),
    ("images", [], "--data: shape (11, 5, 6, 2) looks like images; add --conv K"),
    ("images", ["--conv", "7"], "--conv: filter_size 7 is larger than the 5 x 6 images"),
    ("images", ["--conv", "3", "--test", "T"], "--test: --conv needs images"),
    ("images", ["--conv", "3", "--test", "T6"], "--test: X2 has images of shape"),
    ("images", ["--padding", "same"], "--padding needs --conv K"),
])
def test_cli_conv_store_bad_shapes(tmp_path, capsys, data, extra, match):
    np.save(tmp_path / "images.npy", X)
    np.save(tmp_path / "flat.npy", X.reshape(N, -1))
    np.save(tmp_path / "T.npy", X2.reshape(M, -1))
    np.save(tmp_path / "T6.npy", X2[:, :, :5])
    extra = [str(tmp_path / f"{a}.npy") if a in ("T", "T6") else a for a in extra]
    code, out, err = cli(capsys, "kernel", "erf", "--sw2", "2", "--sb2", "0", "--depth", "3",
                         "--data", tmp_path / f"{data}.npy", "--store", tmp_path / "k.zarr",
                         "--workers", "1", *extra)
    assert code == 2 and match in err and not out
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "k.zarr").exists()
