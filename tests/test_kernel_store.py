"""Kernel stores (``meanfield.kernels_to_store``): the blocked, resumable, distributed path
equals ``meanfield.kernels`` bit for bit whatever the block size; an interrupted run
recomputes only the blocks not flagged done; a store is replaced only with overwrite and
only if it is a kernel store."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import meanfield as mf
from meanfield.cli import main
from meanfield.core import budget
from meanfield.sweeps import kernel_run, kernel_store

N, D, L = 37, 6, 7
POINT = {"erf": (2.0, 0.05), "relu": (2.0, 0.05), "tanh": (1.5, 0.05)}  # chaotic erf/tanh


def raw_inputs(n=N, d=D, seed=0):
    """Gaussian inputs whose norms differ by up to +-20 %, as real features do."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) * (1.0 + 0.2 * rng.uniform(-1, 1, size=(n, 1)))


X_RAW = raw_inputs()
_REF = {}


def reference(act, depths=None, X=X_RAW):
    key = (act, None if depths is None else tuple(depths), X.tobytes())
    if key not in _REF:
        _REF[key] = mf.kernels(X, act, *POINT[act], L, depths=depths)
    return _REF[key]


def store_run(X, act, store, **kw):
    kw.setdefault("workers", 1)
    kw.setdefault("progress", False)
    return mf.kernels_to_store(X, act, *POINT[act], L, store, **kw)


# --------------------------------------------------------------------------- chunked equals plain
@pytest.mark.parametrize("act", ["erf", "relu", "tanh"])
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(block=st.integers(4, N + 3),
       depths=st.one_of(st.none(), st.sets(st.integers(1, L), min_size=1, max_size=3)))
# found by hypothesis: only depth 1 kept, where the store's layer table used to run to L
# and its attributes (hermite_terms_max) described layers kernels() never computes
@example(block=4, depths={1})
def test_equals_kernels_bit_for_bit(act, block, depths):
    depths = None if depths is None else sorted(depths)
    with tempfile.TemporaryDirectory() as tmp:
        ds = store_run(X_RAW, act, Path(tmp) / "k.zarr", block=block, depths=depths)
        assert all(v.chunks is not None for v in ds.data_vars.values())  # lazy, dask-backed
        # variables, coordinates and every attribute, values bit for bit
        xr.testing.assert_identical(ds.load(), reference(act, depths))


@pytest.mark.parametrize("n, block", [(9, 1), (N, 4), (N, 12)])
def test_one_row_and_one_column_blocks(tmp_path, n, block):
    # n % block == 1: the last block column is a single input (block 1: every block is
    # one row by one column); BLAS must still round layer 1 as for the whole kernel.
    X = X_RAW[:n]
    ds = store_run(X, "tanh", tmp_path / "k.zarr", block=block)
    xr.testing.assert_identical(ds.load(), reference("tanh", X=X))


@pytest.mark.parametrize("act", ["erf", "tanh"])
def test_shared_norm_inputs_equal_kernels(tmp_path, act):
    # All norms equal: the Chebyshev (tanh) and closed-form (erf) paths carrying 1 - c.
    X = raw_inputs(seed=3)
    X = X / np.linalg.norm(X, axis=1, keepdims=True) * np.sqrt(D)
    ref = reference(act, X=X)
    assert ref.attrs["shared_norm"] == 1
    ds = store_run(X, act, tmp_path / "k.zarr", block=10)
    xr.testing.assert_identical(ds.load(), ref)


def test_hermite_fallback_count_matches(tmp_path):
    # Nearly equal inputs at a large variance: the Hermite bound fails for some pairs,
    # which take the exact rule; the store's count is the sum over its blocks.
    rng = np.random.default_rng(5)
    base = rng.normal(size=(1, D))
    X = np.vstack([base * (1.0 + 0.3 * k / N) + 1e-3 * rng.normal(size=(1, D))
                   for k in range(N)]) * 2.0
    ref = mf.kernels(X, "tanh", 3.0, 0.5, 4)
    assert ref.attrs["pairs_exact_fallback"] > 0
    ds = mf.kernels_to_store(X, "tanh", 3.0, 0.5, 4, tmp_path / "k.zarr", block=8, workers=1,
                             progress=False)
    xr.testing.assert_identical(ds.load(), ref)


def test_depth_one(tmp_path):
    ds = mf.kernels_to_store(X_RAW, "erf", 2.0, 0.05, 1, tmp_path / "k.zarr", block=9,
                             workers=1, progress=False)
    xr.testing.assert_identical(ds.load(), mf.kernels(X_RAW, "erf", 2.0, 0.05, 1))


# --------------------------------------------------------------------------- distributed
def test_local_cluster(tmp_path):
    from dask.distributed import Client, LocalCluster

    # dashboard on a free port: the default 8787 may be taken (a warning, an error here)
    with LocalCluster(n_workers=2, processes=False, threads_per_worker=1,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        ds = store_run(X_RAW, "tanh", tmp_path / "k.zarr", block=10, client=client)
        st = mf.kernel_store_status(tmp_path / "k.zarr")
    assert st.complete and st.runs[-1]["blocks_computed"] == st.n_blocks == 10
    xr.testing.assert_identical(ds.load(), reference("tanh"))


# --------------------------------------------------------------------------- resume
def test_resume_recomputes_only_unflagged_blocks(tmp_path):
    store = tmp_path / "k.zarr"
    store_run(X_RAW, "erf", store, block=10)  # 4 x 4 blocks, 10 in the upper triangle
    root = zarr.open_group(str(store), mode="r+", use_consolidated=False)
    done = root["_kernels/done"]
    # Block (0, 2) loses its flag and its data; block (1, 3) keeps its flag but its data are
    # replaced by a sentinel: a resume must recompute the first and must not touch the second.
    done[0, 2] = False
    root["nngp"][:, 0:10, 20:30] = np.nan
    root["nngp"][:, 20:30, 0:10] = np.nan
    root["ntk"][:, 10:20, 30:37] = -7.0
    ds = store_run(X_RAW, "erf", store)
    st = mf.kernel_store_status(store)
    assert st.runs[-1]["blocks_computed"] == 1 and st.runs[-1]["blocks_done_before"] == 9
    ref = reference("erf")
    np.testing.assert_array_equal(ds.nngp.values, ref.nngp.values)
    assert np.all(ds.ntk.values[:, 10:20, 30:37] == -7.0)  # flagged: not recomputed


def test_interrupted_run_resumes(tmp_path, monkeypatch):
    store = tmp_path / "k.zarr"
    real = kernel_run.run_block
    calls = []

    def failing(*args, **kw):
        calls.append(1)
        if len(calls) == 4:
            raise RuntimeError("worker lost")
        return real(*args, **kw)

    monkeypatch.setattr(kernel_run, "run_block", failing)
    with pytest.raises(RuntimeError, match="worker lost"):
        store_run(X_RAW, "tanh", store, block=10)
    st = mf.kernel_store_status(store)
    assert st.n_done == 3 and st.runs[-1]["outcome"] == "interrupted"
    assert st.runs[-1]["blocks_computed"] == 3
    with pytest.raises(ValueError, match="unfinished .3 of 10 blocks"):
        mf.open_kernels(store)
    part = mf.open_kernels(store, partial=True)
    assert np.isnan(part.nngp.values).any() and not np.isnan(part.nngp.values).all()
    monkeypatch.setattr(kernel_run, "run_block", real)
    ds = store_run(X_RAW, "tanh", store)  # the block size is the store's
    st = mf.kernel_store_status(store)
    assert st.runs[-1]["blocks_computed"] == 7 and st.runs[-1]["outcome"] == "complete"
    xr.testing.assert_identical(ds.load(), reference("tanh"))


# --------------------------------------------------------------------------- overwrite rules
def test_other_kernels_need_overwrite(tmp_path):
    store = tmp_path / "k.zarr"
    store_run(X_RAW, "erf", store, block=20)
    with pytest.raises(ValueError, match=r"differs in sw2.*overwrite=True"):
        mf.kernels_to_store(X_RAW, "erf", 1.0, 0.05, L, store, workers=1, progress=False)
    with pytest.raises(ValueError, match="differs in inputs_blake2b"):
        store_run(X_RAW + 1e-12, "erf", store)
    with pytest.raises(ValueError, match="already exists"):
        store_run(X_RAW, "erf", store, resume=False)
    with pytest.raises(ValueError, match="blocked by 20, not 10"):
        store_run(X_RAW, "erf", store, block=10)
    # the refused calls left the store as it was
    xr.testing.assert_identical(mf.open_kernels(store).load(), reference("erf"))
    ds = mf.kernels_to_store(X_RAW, "erf", 1.0, 0.05, L, store, block=10, workers=1,
                             progress=False, overwrite=True)
    xr.testing.assert_identical(ds.load(), mf.kernels(X_RAW, "erf", 1.0, 0.05, L))
    assert mf.kernel_store_status(store).block == 10


def test_never_replaces_what_it_did_not_write(tmp_path):
    foreign = tmp_path / "data"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    for overwrite in (False, True):
        with pytest.raises(ValueError, match="not a meanfield kernel store"):
            store_run(X_RAW, "erf", foreign, overwrite=overwrite)
    assert (foreign / "keep.txt").read_text() == "mine"
    afile = tmp_path / "k.zarr"
    afile.write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        store_run(X_RAW, "erf", afile, overwrite=True)
    empty = tmp_path / "empty.zarr"
    empty.mkdir()
    xr.testing.assert_identical(store_run(X_RAW, "erf", empty).load(), reference("erf"))


# --------------------------------------------------------------------------- validation
@pytest.mark.parametrize("kw, match", [
    ({"block": 0}, "block must be >= 1"),
    ({"block": 2.5}, "block must be a positive integer"),
    ({"block": True}, "block must be a positive integer"),
    ({"depths": [0, 3]}, "depths must lie in 1..7"),
    ({"workers": -1}, "workers must be a non-negative integer"),
])
def test_bad_arguments_write_nothing(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        store_run(X_RAW, "erf", tmp_path / "k.zarr", **kw)
    assert not (tmp_path / "k.zarr").exists()


@pytest.mark.parametrize("X, match", [
    (np.full((4, 3), np.nan), "NaN"),
    (np.zeros((2, 3, 4)), "two-dimensional"),
    (np.zeros((0, 3)), "empty"),
])
def test_bad_inputs(tmp_path, X, match):
    with pytest.raises(ValueError, match=match):
        store_run(X, "erf", tmp_path / "k.zarr")
    assert not (tmp_path / "k.zarr").exists()


def test_disk_budget_refuses_before_writing(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(1, 1, 1000))
    with pytest.raises(budget.BudgetError, match="kernels of 37 inputs at 7 depths"):
        store_run(X_RAW, "erf", tmp_path / "k.zarr")
    assert not (tmp_path / "k.zarr").exists()


def test_memory_refusal_points_to_the_store(monkeypatch):
    monkeypatch.setattr(budget, "available_memory", lambda: 1000)
    with pytest.raises(budget.BudgetError, match=r"kernels_to_store\(X, \.\.\., store="):
        mf.kernels(X_RAW, "erf", 2.0, 0.05, L)


def test_open_kernels_refuses_other_directories(tmp_path):
    with pytest.raises(ValueError, match="not a meanfield kernel store"):
        mf.open_kernels(tmp_path)
    with pytest.raises(ValueError, match="not a meanfield kernel store"):
        kernel_store.kernel_store_status(tmp_path / "nothing")


# --------------------------------------------------------------------------- CLI
def cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_store_resume_and_overwrite(tmp_path, capsys):
    np.save(tmp_path / "X.npy", X_RAW)
    store = tmp_path / "k.zarr"
    base = ["kernel", "tanh", "--sw2", "1.5", "--sb2", "0.05", "--depth", L,
            "--data", tmp_path / "X.npy", "--store", store, "--workers", "1"]
    code, out, err = cli(capsys, *base, "--block", "16", "--depths", "2,7")
    assert code == 0 and "6/6 blocks of 16 x 16 done; this run computed 6" in out, err
    xr.testing.assert_identical(mf.open_kernels(store).load(), reference("tanh", [2, 7]))
    code, out, _ = cli(capsys, *base, "--depths", "2,7")
    assert code == 0 and "this run computed 0" in out
    code, _, err = cli(capsys, *base)  # other depths: refused, one line, exit 2
    assert code == 2 and "differs in depths" in err and "--overwrite" in err
    assert len(err.strip().splitlines()) == 1
    code, out, _ = cli(capsys, *base, "--overwrite")
    assert code == 0 and "nngp, ntk at depths 1,2,3,4,5,6,7 over 37 x 37 inputs" in out
    xr.testing.assert_identical(mf.open_kernels(store).load(), reference("tanh"))


@pytest.mark.parametrize("extra, match", [
    (["--block", "4"], "--block needs --store"),
    (["--store", "S", "--labels", "y.npy"], "--labels cannot be combined with --store"),
    (["--store", "S", "--block", "0"], "--block: block must be >= 1"),
    (["--store", "S", "--depths", "1,x"], "--depths: expected a comma-separated list of integers"),
])
def test_cli_store_errors(tmp_path, capsys, extra, match):
    np.save(tmp_path / "X.npy", X_RAW)
    extra = [str(tmp_path / "k.zarr") if a == "S" else a for a in extra]
    code, _, err = cli(capsys, "kernel", "erf", "--sw2", "2", "--sb2", "0", "--depth", "3",
                       "--data", tmp_path / "X.npy", *extra)
    assert code == 2 and match in err
    assert not (tmp_path / "k.zarr").exists()


# --------------------------------------------------------------------------- a second set X2
X2_RAW = raw_inputs(n=23, seed=7)


def cross_reference(act, X2, X=X_RAW, depths=None):
    return mf.kernels(X, act, *POINT[act], L, X2=X2, depths=depths)


@pytest.mark.parametrize("act", ["erf", "relu", "tanh"])
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(block=st.integers(4, N + 3),
       depths=st.one_of(st.none(), st.sets(st.integers(1, L), min_size=1, max_size=3)))
def test_x2_equals_kernels_bit_for_bit(act, block, depths):
    # The cross-kernel (depth, m, n), i over X2 and j over X: every block, none mirrored.
    depths = None if depths is None else sorted(depths)
    with tempfile.TemporaryDirectory() as tmp:
        ds = store_run(X_RAW, act, Path(tmp) / "k.zarr", X2=X2_RAW, block=block, depths=depths)
        ref = cross_reference(act, X2_RAW, depths=depths)
        assert ds.nngp.shape == (ref.sizes["depth"], 23, N)
        xr.testing.assert_identical(ds.load(), ref)
        st_ = mf.kernel_store_status(Path(tmp) / "k.zarr")
        b = min(block, N)
        assert st_.cross and st_.m == 23 and st_.n_blocks == -(-23 // b) * -(-N // b)


@pytest.mark.parametrize("m, n, block", [(1, N, 8), (9, 1, 4), (1, 1, 3), (9, N, 4),
                                         (N, 9, 4), (5, 6, 1)])
def test_x2_one_row_and_one_column_blocks(tmp_path, m, n, block):
    # Single-row/column blocks (and sets of one input, whose whole product is a gemv):
    # layer 1 must round as in the whole cross-kernel.
    X, X2 = X_RAW[:n], X2_RAW[:m] if m <= 23 else raw_inputs(n=m, seed=8)
    ds = store_run(X, "tanh", tmp_path / "k.zarr", X2=X2, block=block)
    xr.testing.assert_identical(ds.load(), cross_reference("tanh", X2, X=X))


@pytest.mark.parametrize("act", ["erf", "tanh"])
def test_x2_shared_norm_equals_kernels(tmp_path, act):
    # X and X2 on one sphere: the shared-norm paths (tanh: the Chebyshev interpolant, whose
    # node cap is set by the m n pairs of the cross block).
    X = raw_inputs(seed=3)
    X = X / np.linalg.norm(X, axis=1, keepdims=True) * np.sqrt(D)
    X2 = raw_inputs(n=11, seed=4)
    X2 = X2 / np.linalg.norm(X2, axis=1, keepdims=True) * np.sqrt(D)
    ref = cross_reference(act, X2, X=X)
    assert ref.attrs["shared_norm"] == 1
    xr.testing.assert_identical(store_run(X, act, tmp_path / "k.zarr", X2=X2, block=6).load(),
                                ref)


def test_x2_hermite_fallback_and_cluster(tmp_path):
    from dask.distributed import Client, LocalCluster

    rng = np.random.default_rng(5)
    base = rng.normal(size=(1, D))
    Z = np.vstack([base * (1.0 + 0.3 * k / N) + 1e-3 * rng.normal(size=(1, D))
                   for k in range(N)]) * 2.0
    X, X2 = Z[::2], Z[1::2]
    ref = mf.kernels(X, "tanh", 3.0, 0.5, 4, X2=X2)
    assert ref.attrs["pairs_exact_fallback"] > 0
    with LocalCluster(n_workers=2, processes=False, threads_per_worker=1,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        ds = mf.kernels_to_store(X, "tanh", 3.0, 0.5, 4, tmp_path / "k.zarr", X2=X2, block=5,
                                 client=client, progress=False)
    xr.testing.assert_identical(ds.load(), ref)


def test_x2_resume_and_fingerprint(tmp_path):
    store = tmp_path / "k.zarr"
    store_run(X_RAW, "erf", store, X2=X2_RAW, block=10)  # 3 x 4 blocks, all computed
    st_ = mf.kernel_store_status(store)
    assert st_.n_blocks == 12 and st_.complete
    root = zarr.open_group(str(store), mode="r+", use_consolidated=False)
    done = root["_kernels/done"]
    # A lower block (I > J) is a task of its own here: unflag it and wipe it; flag-kept
    # block (0, 3) gets a sentinel that a resume must not touch.
    done[2, 0] = False
    root["nngp"][:, 20:23, 0:10] = np.nan
    root["ntk"][:, 0:10, 30:37] = -7.0
    ds = store_run(X_RAW, "erf", store, X2=X2_RAW)
    st_ = mf.kernel_store_status(store)
    assert st_.runs[-1]["blocks_computed"] == 1 and st_.runs[-1]["blocks_done_before"] == 11
    ref = cross_reference("erf", X2_RAW)
    np.testing.assert_array_equal(ds.nngp.values, ref.nngp.values)
    assert np.all(ds.ntk.values[:, 0:10, 30:37] == -7.0)
    # X2 is part of what the store holds: another X2, or none, is refused
    with pytest.raises(ValueError, match="differs in inputs2_blake2b"):
        store_run(X_RAW, "erf", store, X2=X2_RAW + 1e-12)
    with pytest.raises(ValueError, match="differs in .*m"):
        store_run(X_RAW, "erf", store, X2=X2_RAW[:5])
    with pytest.raises(ValueError, match="differs in"):
        store_run(X_RAW, "erf", store)
    ds = store_run(X_RAW, "erf", store, overwrite=True)  # the square kernel replaces it
    xr.testing.assert_identical(ds.load(), reference("erf"))
    assert not mf.kernel_store_status(store).cross


@pytest.mark.parametrize("X2, match", [
    (np.zeros((3, D + 1)), "X2 has 7 features but X has 6"),
    (np.full((3, D), np.inf), "X2 contains NaN"),
    (np.zeros(D), "X2 must be two-dimensional"),
])
def test_x2_bad_inputs_write_nothing(tmp_path, X2, match):
    with pytest.raises(ValueError, match=match):
        store_run(X_RAW, "erf", tmp_path / "k.zarr", X2=X2)
    assert not (tmp_path / "k.zarr").exists()


def test_x2_memory_refusal_points_to_the_store(monkeypatch):
    monkeypatch.setattr(budget, "available_memory", lambda: 1000)
    with pytest.raises(budget.BudgetError, match=r"store='k.zarr', X2=X2\).*--test X2.npy"):
        mf.kernels(X_RAW, "erf", 2.0, 0.05, L, X2=X2_RAW)


def test_cli_store_with_test_set(tmp_path, capsys):
    np.save(tmp_path / "X.npy", X_RAW)
    np.save(tmp_path / "XT.npy", X2_RAW)
    store = tmp_path / "k.zarr"
    base = ["kernel", "tanh", "--sw2", "1.5", "--sb2", "0.05", "--depth", L,
            "--data", tmp_path / "X.npy", "--test", tmp_path / "XT.npy", "--store", store,
            "--workers", "1", "--block", "16"]
    code, out, err = cli(capsys, *base)
    assert code == 0 and "6/6 blocks of 16 x 16 done" in out, err
    assert "over 23 x 37 inputs" in out
    xr.testing.assert_identical(mf.open_kernels(store).load(), cross_reference("tanh", X2_RAW))
    code, out, _ = cli(capsys, *base)
    assert code == 0 and "this run computed 0" in out


# --------------------------------------------------------------------------- layer 1 at scale
def test_gram_blocks_equal_the_whole_product():
    # BLAS gemm splits a large product among threads by size, and the rows at the end of a
    # thread's share round differently: its sub-blocks are not the whole product's blocks
    # (measured: 2760 entries of a 3000 x 3000 product blocked by 700).  The kernels' x.x'
    # is summed in one order per entry instead.
    from meanfield.ntk.gram import gram

    rng = np.random.default_rng(1)
    A = rng.normal(size=(701, 53))
    B = rng.normal(size=(517, 53))
    full = np.empty((701, 517))
    gram(A, np.ascontiguousarray(B.T), full)
    np.testing.assert_allclose(full, A @ B.T, rtol=1e-13, atol=1e-12)
    for r0, r1, c0, c1 in [(0, 1, 0, 517), (61, 183, 7, 8), (300, 701, 200, 517), (5, 9, 3, 250)]:
        part = np.empty((r1 - r0, c1 - c0))
        gram(A[r0:r1], np.ascontiguousarray(B[c0:c1].T), part)
        np.testing.assert_array_equal(part, full[r0:r1, c0:c1])
    sym = np.empty((701, 701))
    gram(A, np.ascontiguousarray(A.T), sym)
    np.testing.assert_array_equal(sym, sym.T)


def test_large_cross_store_equals_kernels(tmp_path):
    # Sizes at which BLAS's thread split made a block of the product differ from the whole.
    rng = np.random.default_rng(0)
    X = rng.standard_normal((1500, 50)) * rng.uniform(0.85, 1.15, (1500, 1))
    X2 = rng.standard_normal((500, 50)) * rng.uniform(0.85, 1.15, (500, 1))
    ds = mf.kernels_to_store(X, "erf", 2.0, 0.05, 2, tmp_path / "k.zarr", X2=X2, block=256,
                             workers=1, progress=False)
    xr.testing.assert_identical(ds.load(), mf.kernels(X, "erf", 2.0, 0.05, 2, X2=X2))
