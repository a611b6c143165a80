"""Fault injection: kills, damaged stores, read-only and full disks, concurrent writers, huge
counts and bad input to every command.  Each test asserts that nothing is lost or silently
replaced and that the message is one line (no traceback)."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
import uuid
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

from meanfield import sweeps as SW
from meanfield.cli import main
from meanfield.sweeps.store import verify
from meanfield.sweeps.spec import _normalize, _to_toml

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
CLI = [sys.executable, "-m", "meanfield"]


def spec_file(path, activation="erf", count=(12, 8), chunks=(3, 2)):
    d = {"name": "f", "activation": activation,
         "axes": {"sw2": {"start": 0.5, "stop": 3.0, "count": count[0]},
                  "sb2": {"start": 0.0, "stop": 1.0, "count": count[1]}},
         "chunks": {"sw2": chunks[0], "sb2": chunks[1]}}
    path.write_text(_to_toml(_normalize(d, "", None)))
    return path


def one_line_error(code, err, needle=""):
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err and "error" in lines[0], err
    assert needle in lines[0], err


def cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def snapshot(directory):
    """Every file under ``directory`` with its bytes: to prove nothing changed."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*"))
            if p.is_file()}


def raw_arrays(store):
    g = zarr.open_group(str(store), mode="r", use_consolidated=False)
    return {name: g[name][...] for name in list(g.array_keys())}


# --------------------------------------------------------------------------- SIGKILL
SLOW_RUN = """
import sys, time
import meanfield.core.engine as E
from meanfield import sweep
original = E.compute_points

def slow(*args, **kwargs):
    time.sleep(float(sys.argv[3]))  # slow every chunk so the parent can kill part-way
    return original(*args, **kwargs)

E.compute_points = slow
sweep(sys.argv[1], sys.argv[2], workers=1, progress=False)
"""


def slow_sweep(spec, store, pause=0.1):
    return subprocess.Popen([sys.executable, "-c", SLOW_RUN, str(spec), str(store), str(pause)],
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_sigkill_at_random_points_then_resume_is_bit_identical(tmp_path):
    spec = spec_file(tmp_path / "s.toml")
    store = tmp_path / "s.zarr"
    rng = random.Random(17)
    for _ in range(3):  # three kills at random moments (initialization included)
        proc = slow_sweep(spec, store)
        time.sleep(rng.uniform(0.5, 3.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    resumed = SW.sweep(spec, store, workers=1, progress=False).load()
    fresh_store = tmp_path / "fresh.zarr"
    fresh = SW.sweep(spec, fresh_store, workers=1, progress=False).load()
    xr.testing.assert_identical(resumed, fresh)
    a, b = raw_arrays(store), raw_arrays(fresh_store)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])  # bit for bit, NaNs included
    assert verify(store).ok
    # No half-made store or temporary directory is left beside it.
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


# --------------------------------------------------------------------------- damaged stores
@pytest.fixture
def finished_store(tmp_path):
    spec = spec_file(tmp_path / "s.toml")
    store = tmp_path / "s.zarr"
    SW.sweep(spec, store, workers=1, progress=False)
    return spec, store


def test_deleted_and_corrupted_chunks_are_found_refused_and_recomputed(finished_store, tmp_path,
                                                                       capsys):
    spec, store = finished_store
    good = SW.open_sweep(store).load()
    (store / "chi1" / "c" / "1" / "1").unlink()                          # deleted
    (store / "q_star" / "c" / "0" / "0").write_bytes(b"\x00garbage" * 8)  # undecodable
    # A valid chunk in the wrong place decodes fine: only the checksum can tell.
    shutil.copy(store / "xi_c" / "c" / "2" / "3", store / "xi_c" / "c" / "3" / "2")
    check = verify(store)
    assert check.missing == ((1, 1),)
    assert set(check.damaged) == {(0, 0), (3, 2)}

    code, out, err = cli(capsys, "info", store)
    assert code == 0 and "1 missing" in out and "2 damaged" in out and "Traceback" not in err
    code, _, err = cli(capsys, "export", store, "-o", tmp_path / "x.nc")
    one_line_error(code, err, "--partial")
    assert not (tmp_path / "x.nc").exists()
    code, _, err = cli(capsys, "plot", store, "-o", tmp_path / "x.png")
    one_line_error(code, err, "damaged")
    assert not (tmp_path / "x.png").exists()

    code, out, err = cli(capsys, "export", store, "-o", tmp_path / "p.nc", "--partial")
    assert code == 0, err
    part = xr.load_dataset(tmp_path / "p.nc")
    assert "sweep_incomplete" in part.attrs and int((~part["computed"].astype(bool)).sum()) == 3 * 6
    assert np.isnan(part["chi1"].values[3:6, 2:4]).all()

    SW.sweep(spec, store, workers=1, progress=False)
    assert SW.sweep_status(store).runs[-1]["chunks_computed"] == 3
    xr.testing.assert_identical(SW.open_sweep(store).load(), good)
    code, out, err = cli(capsys, "export", store, "-o", tmp_path / "y.nc")
    assert code == 0, err


def test_damaged_bookkeeping_is_one_line(finished_store, capsys):
    _, store = finished_store
    (store / "_sweep" / "done" / "c" / "0" / "0").write_bytes(b"not zstd")
    for argv in (("info", store), ("export", store, "-o", store.parent / "z.nc")):
        code, _, err = cli(capsys, *argv)
        one_line_error(code, err, "damaged")


def test_cli_stores_open_without_warnings(finished_store, tmp_path, capsys):
    _, store = finished_store
    assert cli(capsys, "diagram", "erf", "--sw2", "0.5:3:5", "--sb2", "0:1:3", "-o",
               tmp_path / "d.zarr")[0] == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for s in (store, tmp_path / "d.zarr"):
            xr.open_zarr(s).load()


# --------------------------------------------------------------------------- concurrency
def test_second_writer_is_refused(tmp_path, capsys):
    spec = spec_file(tmp_path / "s.toml")
    store = tmp_path / "s.zarr"
    proc = slow_sweep(spec, store, pause=0.3)
    try:
        deadline = time.time() + 60
        while not (store / "_sweep").exists() and time.time() < deadline:
            time.sleep(0.05)
        code, _, err = cli(capsys, "sweep", spec, "-o", store, "--workers", "1", "--no-progress")
        one_line_error(code, err, "being written by another")
        code, _, err = cli(capsys, "sweep", spec, "-o", store, "--overwrite", "--workers", "1")
        one_line_error(code, err, "being written by another")
    finally:
        proc.kill()
        proc.wait()
    # The lock died with the process: the store resumes.
    assert cli(capsys, "sweep", spec, "-o", store, "--workers", "1", "--no-progress")[0] == 0
    assert SW.sweep_status(store).complete


# --------------------------------------------------------------------------- disks
def mount_tmpfs(path, options):
    path.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip() or 'not permitted'})")


@pytest.fixture
def full_disk(tmp_path):
    path = tmp_path / f"full-{uuid.uuid4().hex[:6]}"
    mount_tmpfs(path, "size=128k")
    yield path
    subprocess.run(["umount", str(path)], check=False)


def test_full_disk_leaves_nothing_half_written(full_disk, capsys):
    code, _, err = cli(capsys, "diagram", "erf", "--sw2", "0.5:4:400", "-o", full_disk / "x.nc")
    one_line_error(code, err, "no space left")
    code, _, err = cli(capsys, "diagram", "erf", "--sw2", "0.5:4:400", "-o", full_disk / "x.zarr")
    one_line_error(code, err, "no space left")
    assert list(full_disk.iterdir()) == []  # no temporary file left behind either
    spec = spec_file(full_disk.parent / "big.toml", count=(1600, 200), chunks=(100, 100))
    code, _, err = cli(capsys, "sweep", spec, "-o", full_disk / "s.zarr")
    one_line_error(code, err, "on disk")


def test_read_only_locations(tmp_path, capsys):
    ro = tmp_path / "ro"
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(ro)],
                             capture_output=True).returncode == 0 if ro.mkdir() is None else False
    targets = [(Path("/dev/null/x"), "is a file, not a directory"),
               (tmp_path / "missing" / "x", "does not exist")]
    if mounted:
        targets.append((ro / "x", "read-only file system"))
    elif os.geteuid() != 0:
        ro.chmod(0o555)
        targets.append((ro / "x", "not writable"))
    try:
        spec = spec_file(tmp_path / "s.toml")
        for base, needle in targets:
            for argv in (["diagram", "erf", "--sw2", "1,2", "--sb2", "0,1", "-o", f"{base}.nc"],
                         ["diagram", "erf", "--sw2", "1,2", "--sb2", "0,1", "-o", f"{base}.zarr"],
                         ["sweep", spec, "-o", f"{base}.zarr"],
                         ["trainability", "--sw2", "1,2", "--depths", "2", "-o", f"{base}.nc"],
                         ["simulate", "tanh", "--sw2", "1", "--sb2", "0", "--depth", "2",
                          "--width", "4", "--png", f"{base}.png"]):
                code, _, err = cli(capsys, *argv)
                one_line_error(code, err, needle)
    finally:
        if mounted:
            subprocess.run(["umount", str(ro)], check=False)
    if not mounted and os.geteuid() == 0:
        pytest.skip("running as root without mount: chmod cannot make a directory read-only; "
                    "tested missing and file-as-directory parents only")


# --------------------------------------------------------------------------- output policy
def test_outputs_are_never_lost(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    small = ["--sw2", "1,2", "--sb2", "0,1"]
    foreign = {"a.nc": b"my thesis", "a.png": b"my photo"}
    for name, data in foreign.items():
        Path(name).write_bytes(data)
    proj = Path("proj.zarr")
    (proj / "src").mkdir(parents=True)
    (proj / "src" / "main.py").write_text("precious")
    before = snapshot(tmp_path)
    for argv in (["diagram", "erf", *small, "-o", "a.nc"],
                 ["diagram", "erf", *small, "-o", "b.nc", "--png", "a.png"],
                 ["diagram", "erf", *small, "-o", "proj.zarr"]):
        for extra in ([], ["--overwrite"]):
            code, _, err = cli(capsys, *argv, *extra)
            one_line_error(code, err, "exists")
    spec = spec_file(tmp_path / "s.toml")
    code, _, err = cli(capsys, "sweep", spec, "-o", "proj.zarr", "--overwrite")
    one_line_error(code, err, "not a meanfield sweep store")
    assert snapshot(tmp_path) == {**before, "s.toml": spec.read_bytes()}

    # What meanfield wrote is replaced with --overwrite, and only then.
    assert cli(capsys, "diagram", "erf", *small, "-o", "m.nc", "--png", "m.png")[0] == 0
    first = snapshot(tmp_path)
    code, _, err = cli(capsys, "diagram", "erf", *small, "-o", "m.nc")
    one_line_error(code, err, "--overwrite")
    assert cli(capsys, "diagram", "tanh", *small, "-o", "m.nc", "--png", "m.png",
               "--overwrite")[0] == 0
    assert xr.load_dataset("m.nc").attrs["activation"] == "tanh"
    assert snapshot(tmp_path).keys() == first.keys()  # no temporary file left behind
    code, _, err = cli(capsys, "plot", "m.nc", "-o", "m.png")
    one_line_error(code, err, "exists")
    assert cli(capsys, "plot", "m.nc", "-o", "m.png", "--overwrite")[0] == 0


# --------------------------------------------------------------------------- huge counts
@pytest.mark.parametrize("call", [
    lambda mf: mf.phase_diagram("tanh", np.linspace(0.5, 4, 100_000), np.linspace(0, 1, 100_000)),
    lambda mf: mf.kernels(np.ones((200_000, 3)), "relu", 2.0, 0.1, depth=5),
    lambda mf: mf.kernels(np.ones((10, 3)), "relu", 2.0, 0.1, depth=10**9),
    lambda mf: mf.two_point_kernels("relu", 2.0, 0.1, depth=10**9),
])
def test_library_refuses_huge_work_before_allocating(call):
    import meanfield as mf

    t0 = time.time()
    with pytest.raises(ValueError, match=r"needs about .* of memory; this machine has .* available"):
        call(mf)
    assert time.time() - t0 < 5


@pytest.mark.parametrize("argv", [
    ["diagram", "--sw2", "0.5:4:1000000000", "-o", "x.nc"],
    ["diagram", "--sw2", "0.5:4:100000", "--sb2", "0:2:100000", "-o", "x.nc"],
    ["simulate", "tanh", "--sw2", "1", "--sb2", "0", "--depth", "1000000000", "--width", "10"],
    ["simulate", "tanh", "--sw2", "1", "--sb2", "0", "--depth", "10", "--width", "1000000000"],
    ["simulate", "tanh", "--sw2", "1", "--sb2", "0", "--depth", "10", "--width", "10",
     "--networks", "1000000000000"],
    ["trainability", "--width", "1000000000", "-o", "x.nc"],
    ["trainability", "--depths", "1000000000", "-o", "x.nc"],
    ["critical", "tanh", "--sb2", "0:1:100000000000"],
    ["plot", "STORE", "-o", "x.png", "--dpi", "100000"],
    ["sweep", "HUGE", "-o", "x.zarr"],
    ["kernel", "tanh", "--sw2", "1", "--sb2", "0", "--depth", "1000000000", "--data", "X.npy"],
])
def test_huge_work_is_refused_with_an_estimate(argv, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec_file(tmp_path / "huge.toml", count=(1_000_000_000, 10))
    np.save("X.npy", np.ones((50, 3)))
    assert cli(capsys, "diagram", "erf", "--sw2", "1,2", "--sb2", "0,1", "-o", "d.nc")[0] == 0
    argv = [{"STORE": "d.nc", "HUGE": "huge.toml"}.get(a, a) for a in argv]
    before = snapshot(tmp_path)
    t0 = time.time()
    code, _, err = cli(capsys, *argv)
    one_line_error(code, err, "needs")
    assert "available" in err or "free" in err
    assert time.time() - t0 < 10
    assert snapshot(tmp_path) == before


# --------------------------------------------------------------------------- bad input
BAD = [
    (["analyze", "tanh", "--sw2", "nan", "--sb2", "0"], "sw2"),
    (["analyze", "tanh", "--sw2", "1", "--sb2", "0", "--rho", "2"], "rho"),
    (["critical", "tanh", "--sb2", ""], "--sb2"),
    (["critical", "tanh", "--sb2", "3,1,2"], "increasing"),
    (["critical", "tanh", "--sb2", "1,1"], "twice"),
    (["critical", "tanh", "--sb2", "0:1:x"], "--sb2"),
    (["critical", "nope"], "unknown activation"),
    (["recommend", "tanh", "--depth", "-3"], "depth"),
    (["diagram", "--sw2", "3,1,2", "-o", "x.nc"], "increasing"),
    (["diagram", "--sw2", "1,2,2", "-o", "x.nc"], "twice"),
    (["diagram", "--sb2", "", "-o", "x.nc"], "--sb2"),
    (["diagram", "--sw2", "0:inf:3", "-o", "x.nc"], "finite"),
    (["diagram", "-o", "adir.nc"], "is a directory"),
    (["diagram", "-o", "nodir/x.nc"], "does not exist"),
    (["diagram", "-o", "afile.txt/x.nc"], "is a file, not a directory"),
    (["diagram", "-o", "afile.txt.zarr"], "not a zarr store"),
    (["diagram", "-o", "x.nc", "--png", "adir.nc"], "--png"),
    (["diagram", "-o", "x.nc", "--png", "x.png", "--var", "nope"], "--var"),
    (["kernel", "tanh", "--sw2", "1", "--sb2", "0", "--depth", "2", "--data", "afile.txt"],
     "not a .npy file"),
    (["kernel", "tanh", "--sw2", "1", "--sb2", "0", "--depth", "2", "--data", "C.npy"], "complex"),
    (["kernel", "tanh", "--sw2", "1", "--sb2", "0", "--depth", "2", "--data", "O.npy"],
     "Python objects"),
    (["kernel", "tanh", "--sw2", "1", "--sb2", "0", "--depth", "2", "--data", "adir.nc"],
     "directory"),
    (["kernel", "tanh", "--sw2", "1", "--sb2", "0", "--depth", "2", "--data", "R.npy",
      "-o", "adir.nc"], "is a directory"),
    (["simulate", "tanh", "--sw2", "1", "--sb2", "0", "--depth", "2", "--width", "4",
      "-o", "nodir/x.nc"], "does not exist"),
    (["trainability", "--sw2", "2,1", "-o", "x.nc"], "increasing"),
    (["trainability", "--depths", "a", "-o", "x.nc"], "--depths"),
    (["sweep", "latin1.toml", "-o", "s.zarr"], "latin1.toml"),
    (["sweep", "adir.nc", "-o", "s.zarr"], "is a directory"),
    (["sweep", "missing.toml", "-o", "s.zarr"], "missing.toml"),
    (["sweep", "good.toml", "-o", "afile.txt"], "not a zarr store"),
    (["sweep", "good.toml", "-o", "nodir/s.zarr"], "does not exist"),
    (["info", "afile.txt"], "not a meanfield sweep store"),
    (["info", "nodir"], "not a meanfield sweep store"),
    (["export", "adir.nc", "-o", "y.nc"], "not a meanfield sweep store"),
    (["plot", "afile.txt", "-o", "y.png"], "cannot read"),
    (["plot", "missing.nc", "-o", "y.png"], "no such file"),
    (["plot", "R.npy", "-o", "y.png", "--dpi", "0"], "--dpi"),
]


@pytest.fixture
def playground(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("adir.nc").mkdir()
    Path("afile.txt").write_text("1 2 3\n4 5 6\n")
    Path("afile.txt.zarr").write_text("not a store")
    np.save("C.npy", np.ones((4, 3)) + 1j)
    np.save("O.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    np.save("R.npy", np.ones((4, 3)))
    Path("latin1.toml").write_bytes('name = "caf\u00e9"\n'.encode("latin-1"))
    spec_file(tmp_path / "good.toml")
    return tmp_path


@pytest.mark.parametrize("argv,needle", BAD, ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_bad_input_is_one_line_and_writes_nothing(argv, needle, playground, capsys):
    before = snapshot(playground)
    code, out, err = cli(capsys, *argv)
    one_line_error(code, err, needle)
    assert snapshot(playground) == before
    assert sorted(p.name for p in playground.iterdir()) == sorted(
        ["adir.nc", "afile.txt", "afile.txt.zarr", "C.npy", "O.npy", "R.npy", "latin1.toml",
         "good.toml"])


# --------------------------------------------------------------------------- signals, pipes
def test_broken_pipe_is_a_quiet_exit():
    for argv in (["critical", "tanh", "--sb2", "0:2:40"], ["activations"]):
        proc = subprocess.Popen(CLI + argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=ENV)
        proc.stdout.readline()
        proc.stdout.close()  # `| head -1`
        err = proc.stderr.read().decode()
        proc.wait(timeout=120)
        assert proc.returncode in (0, 141) and err == "", err


def test_ctrl_c_on_a_cluster_sweep_is_one_line(tmp_path):
    spec = spec_file(tmp_path / "s.toml", activation="tanh", count=(1600, 200), chunks=(50, 50))
    store = tmp_path / "s.zarr"
    proc = subprocess.Popen(CLI + ["sweep", str(spec), "-o", str(store), "--workers", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV,
                            start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 90
    while time.time() < deadline and proc.poll() is None:
        if (store / "_sweep").exists() and SW.sweep_status(store).n_done >= 2:
            break
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does: the whole foreground group
    out, err = proc.communicate(timeout=90)
    err = err.decode()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "distributed" not in err, err
    assert err.rstrip("\n").split("\n")[-1].split("\r")[-1] == "meanfield: interrupted"
    assert len([ln for ln in err.split("\n") if ln.strip() and "\r" not in ln]) == 1, err
    # and the interrupted store resumes
    SW.sweep(spec, store, workers=1, progress=False)
    assert SW.sweep_status(store).complete
