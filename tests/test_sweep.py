"""The sweep engine: specs, chunked zarr stores, resume after SIGKILL, dask clusters, CLI."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr
from hypothesis import HealthCheck, given, settings, strategies as st

import meanfield as mf
from meanfield import sweeps as SW
from meanfield.cli.sweep import register as add_sweep_parsers
from meanfield.core.critical import critical_line_from_data
from meanfield.sweeps.spec import _normalize, _to_toml

ROOT = Path(__file__).resolve().parents[1]

SW2 = {"start": 0.1, "stop": 3.0, "count": 12}
SB2 = {"start": 0.0, "stop": 1.0, "count": 8}


def spec_dict(activation="relu", sw2=SW2, sb2=SB2, chunks=(5, 3), **extra):
    d = {"name": "t", "activation": activation, "axes": {"sw2": dict(sw2), "sb2": dict(sb2)},
         "chunks": {"sw2": chunks[0], "sb2": chunks[1]}}
    d.update(extra)
    return d


def run(spec, store, **kw):
    kw.setdefault("workers", 1)
    kw.setdefault("progress", False)
    return SW.sweep(spec, store, **kw).load()


def as_phase_diagram(ds, ref):
    """The sweep dataset with only the global attributes phase_diagram writes."""
    out = ds.copy()
    out.attrs = {k: ds.attrs[k] for k in ref.attrs}
    return out


def lin(ax):
    return np.linspace(ax["start"], ax["stop"], ax["count"])


# --------------------------------------------------------------------------- spec validation
GOOD = """\
name = "x"
activation = "erf"

[axes.sw2]
start = 0.1
stop = 3.0
count = 12

[axes.sb2]
values = [0.0, 0.5, 1.0]

[options]
q0 = 1.0
"""


def test_spec_parses_and_builds_axes():
    spec = SW.parse_spec(GOOD)
    assert spec.dims == ("sw2", "sb2")
    assert spec.shape == (12, 3)
    np.testing.assert_array_equal(spec.axis("sw2"), np.linspace(0.1, 3.0, 12))
    np.testing.assert_array_equal(spec.axis("sb2"), [0.0, 0.5, 1.0])
    log = SW.parse_spec(GOOD.replace("count = 12", 'count = 12\nspacing = "log"'))
    np.testing.assert_array_equal(log.axis("sw2"), np.geomspace(0.1, 3.0, 12))


def test_unknown_key_is_named_with_its_line():
    text = GOOD.replace("count = 12", "count = 12\nstepp = 3")
    with pytest.raises(ValueError, match=r"axes\.sw2\.stepp \(line 8\).*unknown key 'stepp'"):
        SW.parse_spec(text)
    with pytest.raises(ValueError, match=r"unknown key 'colour'.*allowed keys"):
        SW.parse_spec("colour = 'red'\n" + GOOD)
    with pytest.raises(ValueError, match=r"options\.qq0"):
        SW.parse_spec(GOOD + "qq0 = 2\n")


@pytest.mark.parametrize("old, new, match", [
    ("start = 0.1\nstop = 3.0", "start = 3.0\nstop = 0.1", r"axes\.sw2\.stop \(line 6\): bad range"),
    ("count = 12", "count = 0", r"axes\.sw2\.count \(line 7\).*positive integer"),
    ("start = 0.1", "start = -1.0", r"axes\.sw2\.start \(line 5\).*>= 0"),
])
def test_bad_range_is_refused(old, new, match):
    with pytest.raises(ValueError, match=match):
        SW.parse_spec(GOOD.replace(old, new))


def test_log_spacing_from_zero_and_unsorted_values_are_refused():
    with pytest.raises(ValueError, match=r"axes\.sw2\.start.*log spacing"):
        SW.parse_spec(GOOD.replace("start = 0.1", "start = 0.0").replace(
            "count = 12", 'count = 12\nspacing = "log"'))
    with pytest.raises(ValueError, match=r"axes\.sb2\.values.*strictly increasing"):
        SW.parse_spec(GOOD.replace("[0.0, 0.5, 1.0]", "[0.5, 0.0]"))
    with pytest.raises(ValueError, match=r"axes\.rho\.values.*<= 1"):
        SW.parse_spec(GOOD + "\n[axes.rho]\nvalues = [0.5, 1.5]\n")


def test_unknown_activation_and_parameter_are_refused():
    with pytest.raises(ValueError, match=r"activation \(line 2\).*unknown activation 'tahn'"
                                         r".*tanh"):
        SW.parse_spec(GOOD.replace('"erf"', '"tahn"'))
    with pytest.raises(ValueError, match=r"activation\.params.*slop"):
        SW.parse_spec(GOOD.replace('activation = "erf"',
                                   'activation = {name = "leaky_relu", params = {slop = 1}}'))


def test_toml_syntax_error_reports_line():
    with pytest.raises(ValueError, match=r"invalid TOML.*line 5"):
        SW.parse_spec(GOOD.replace("start = 0.1", "start = = 0.1"))


def test_spec_file_errors_name_the_file(tmp_path):
    p = tmp_path / "mine.toml"
    p.write_text(GOOD.replace("q0 = 1.0", "q0 = -1.0"))
    with pytest.raises(ValueError, match=r"mine\.toml: options\.q0 \(line 13\)"):
        SW.load_spec(p)
    with pytest.raises(ValueError, match="cannot read sweep spec"):
        SW.load_spec(tmp_path / "missing.toml")


def test_standard_specs_are_valid():
    specs = {p.stem: SW.load_spec(p) for p in sorted((ROOT / "sweeps").glob("*.toml"))}
    for name in ("tanh", "relu", "erf", "gelu", "silu", "selu"):
        assert specs[name].activations[0]["name"] == name
        assert specs[name].dims == ("sw2", "sb2")
    assert specs["tanh_dropout"].dims == ("rho", "sw2", "sb2")
    assert specs["tanh_dropout"].activations[0]["name"] == "tanh"
    for spec in specs.values():
        assert np.prod(spec.shape) <= 200_000  # standard specs stay quick


# --------------------------------------------------------------------------- equality
@pytest.mark.parametrize("activation, chunks", [("relu", (5, 3)), ("erf", (12, 8)),
                                                ("tanh", (4, 4))])
def test_sweep_equals_phase_diagram(tmp_path, activation, chunks):
    sw2 = SW2 if activation != "tanh" else {"start": 0.5, "stop": 2.5, "count": 8}
    sb2 = SB2 if activation != "tanh" else {"start": 0.0, "stop": 0.5, "count": 6}
    ds = run(spec_dict(activation, sw2, sb2, chunks), tmp_path / "s.zarr")
    ref = mf.phase_diagram(activation, lin(sw2), lin(sb2))
    xr.testing.assert_identical(as_phase_diagram(ds, ref), ref)
    assert ds["converged"].dtype == bool
    assert ds.attrs["meanfield_version"] == mf.__version__
    assert SW.parse_spec(ds.attrs["sweep_spec"]).axes == SW.parse_spec(
        ds.attrs["sweep_spec"]).axes  # the recorded spec is valid TOML
    assert ds.attrs["sweep_dims"] == "sw2 sb2"


def test_spec_text_and_activation_parameters_are_recorded(tmp_path):
    p = tmp_path / "leaky.toml"
    p.write_text(textwrap.dedent("""\
        # a comment survives in the stored text
        activation = { name = "leaky_relu", params = { slope = 0.2 } }
        [axes.sw2]
        values = [0.5, 1.0, 2.0]
        [axes.sb2]
        values = [0.0, 0.1]
        """))
    ds = run(p, tmp_path / "s.zarr")
    assert ds.attrs["sweep_spec"] == p.read_text()
    assert ds.attrs["activation_slope"] == 0.2
    assert ds.attrs["sweep_name"] == "leaky"
    ref = mf.phase_diagram(mf.get_activation("leaky_relu", slope=0.2), [0.5, 1.0, 2.0], [0.0, 0.1])
    xr.testing.assert_identical(as_phase_diagram(ds, ref), ref)


def test_extra_axes_are_dimensions(tmp_path):
    acts = ["relu", "erf", {"name": "leaky_relu", "params": {"slope": 0.2}}]
    sb2 = {"start": 0.05, "stop": 1.0, "count": 8}
    spec = spec_dict(acts, sb2=sb2, axes=None)
    spec["axes"] = {"sw2": SW2, "sb2": sb2, "rho": {"values": [0.9, 1.0]}}
    ds = run(spec, tmp_path / "s.zarr")
    assert ds["chi1"].dims == ("activation", "rho", "sw2", "sb2")
    assert list(ds["activation"].values) == ["relu", "erf", "leaky_relu(slope=0.2)"]
    assert ds["activation_parameters"].values[2] == '{"slope": 0.2}'
    assert "rho" not in ds.attrs and ds["rho"].attrs["units"] == "1"
    for i, a in enumerate([mf.get_activation("relu"), mf.get_activation("erf"),
                           mf.get_activation("leaky_relu", slope=0.2)]):
        for rho in (0.9, 1.0):
            ref = mf.phase_diagram(a, lin(SW2), lin(sb2), rho=rho)
            got = ds.isel(activation=i).sel(rho=rho).reset_coords(drop=True)
            for name in ref.data_vars:
                xr.testing.assert_identical(got[name], ref[name])


def test_chunking_invariance(tmp_path):
    a = run(spec_dict("erf", chunks=(4, 3)), tmp_path / "a.zarr")
    b = run(spec_dict("erf", chunks=(12, 8)), tmp_path / "b.zarr")
    c = run(spec_dict("erf", chunks=(5, 3)), tmp_path / "c.zarr", chunks=(1, 8))
    for other in (b, c):
        other.attrs["sweep_spec"] = a.attrs["sweep_spec"]  # differs only in [chunks]
        xr.testing.assert_identical(a, other)
    assert SW.sweep_status(tmp_path / "c.zarr").chunk_shape == (1, 8)


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cw=st.integers(2, 13), cb=st.integers(2, 9))
def test_any_chunking_equals_phase_diagram(tmp_path_factory, cw, cb):
    store = tmp_path_factory.mktemp("h") / "s.zarr"
    ds = run(spec_dict("relu", chunks=(cw, cb)), store)
    ref = mf.phase_diagram("relu", lin(SW2), lin(SB2))
    xr.testing.assert_identical(as_phase_diagram(ds, ref), ref)


# --------------------------------------------------------------------------- resume
KILLED_RUN = """
import sys, time
import meanfield.core.engine as E
from meanfield import sweep
original = E.compute_points

def slow(*args, **kwargs):
    # Slow every chunk down so the parent can kill the run part-way.
    time.sleep(0.15)
    return original(*args, **kwargs)

E.compute_points = slow
sweep(sys.argv[1], sys.argv[2], workers=1, progress=False)
"""


def test_resume_after_sigkill(tmp_path):
    spec_path = tmp_path / "erf.toml"
    spec_path.write_text(_to_toml(_normalize(spec_dict("erf", chunks=(2, 2)), "", None)))
    store = tmp_path / "s.zarr"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(spec_path), str(store)], env=env)
    total = 6 * 4
    done_before = 0
    deadline = time.time() + 60
    try:
        while time.time() < deadline and proc.poll() is None:
            if (store / "_sweep").exists():
                done_before = SW.sweep_status(store).n_done
                if done_before >= total // 3:
                    break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done_before = SW.sweep_status(store).n_done
    assert 0 < done_before < total

    resumed = run(spec_path, store)
    status = SW.sweep_status(store)
    assert status.complete
    last = status.runs[-1]
    assert last["chunks_done_before"] == done_before
    assert last["chunks_computed"] <= total - done_before
    assert last["chunks_computed"] + done_before == total

    fresh = run(spec_path, tmp_path / "fresh.zarr")
    xr.testing.assert_identical(resumed, fresh)
    # A third run has nothing left to do.
    run(spec_path, store)
    assert SW.sweep_status(store).runs[-1]["chunks_computed"] == 0


def test_chunk_without_flag_is_recomputed(tmp_path):
    store = tmp_path / "s.zarr"
    good = run(spec_dict("relu"), store)
    # Simulate a chunk killed mid-write: garbage in the data, flag unset.
    ds = xr.open_zarr(store, consolidated=False)
    bad = ds.isel(sw2=slice(0, 5), sb2=slice(0, 3)).drop_vars(list(ds.coords)).load()
    for name in bad.data_vars:
        bad[name].attrs = {}
    bad["chi1"][:] = -7.0
    bad.attrs = {}
    bad.to_zarr(store, region={"sw2": slice(0, 5), "sb2": slice(0, 3)}, mode="r+",
                consolidated=False)
    zarr.open_array(store, path="_sweep/done", mode="r+")[0, 0] = False
    again = run(spec_dict("relu"), store)
    assert SW.sweep_status(store).runs[-1]["chunks_computed"] == 1
    xr.testing.assert_identical(again, good)


# --------------------------------------------------------------------------- store safety
def test_store_from_another_spec_is_refused(tmp_path):
    store = tmp_path / "s.zarr"
    first = run(spec_dict("relu"), store)
    other = spec_dict("relu", sw2={"start": 0.1, "stop": 4.0, "count": 12})
    with pytest.raises(ValueError, match=r"different spec.*axes\.sw2\.stop"):
        run(other, store)
    with pytest.raises(ValueError, match=r"different spec.*activation"):
        run(spec_dict("erf"), store)
    with pytest.raises(ValueError, match="already exists"):
        run(spec_dict("relu"), store, resume=False)
    with pytest.raises(ValueError, match="chunked as sw2=5, sb2=3"):
        run(spec_dict("relu"), store, chunks=(4, 4))
    xr.testing.assert_identical(SW.open_sweep(store).load(), first)  # untouched

    replaced = run(other, store, overwrite=True)
    ref = mf.phase_diagram("relu", lin(other["axes"]["sw2"]), lin(SB2))
    xr.testing.assert_identical(as_phase_diagram(replaced, ref), ref)
    assert [p.name for p in tmp_path.iterdir()] == ["s.zarr"]  # no temporary left behind


def test_overwrite_never_removes_foreign_data(tmp_path):
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("precious")
    for kw in ({}, {"overwrite": True}):
        with pytest.raises(ValueError, match="not a meanfield sweep store"):
            run(spec_dict("relu"), foreign, **kw)
    assert (foreign / "keep.txt").read_text() == "precious"
    with pytest.raises(ValueError, match="unknown activation"):
        run(spec_dict("nope"), tmp_path / "new.zarr")
    assert not (tmp_path / "new.zarr").exists()


# --------------------------------------------------------------------------- distributed
def test_local_cluster_two_processes_identical(tmp_path):
    from dask.distributed import Client, LocalCluster

    spec = spec_dict("tanh", {"start": 0.5, "stop": 2.5, "count": 8},
                     {"start": 0.0, "stop": 0.5, "count": 6}, chunks=(3, 2))
    serial = run(spec, tmp_path / "serial.zarr")
    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        client.run(sys.path.insert, 0, str(ROOT))
        pids = set(client.run(os.getpid).values())
        assert len(pids) == 2 and os.getpid() not in pids
        dist = run(spec, tmp_path / "dist.zarr", client=client)
    xr.testing.assert_identical(dist, serial)


# --------------------------------------------------------------------------- CLI
def cli(*argv):
    parser = argparse.ArgumentParser(prog="meanfield")
    add_sweep_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args([str(a) for a in argv])
    return args.func(args)


def test_cli_sweep_info_export(tmp_path, capsys):
    spec_path = tmp_path / "erf.toml"
    spec_path.write_text(_to_toml(_normalize(spec_dict("erf"), "", None)))
    store = tmp_path / "s.zarr"
    assert cli("sweep", spec_path, "-o", store, "--workers", "1", "--no-progress",
               "--chunks", "6,4") == 0
    assert "4/4 chunks done" in capsys.readouterr().out

    assert cli("info", store) == 0
    text = capsys.readouterr().out
    assert "100.0%" in text and "96/96 points" in text
    ds = SW.open_sweep(store).load()
    for code, name in ((int(p), p.flag) for p in mf.Phase):
        n = int((ds["phase"] == code).sum())
        assert (f"{name} {n} " in text) == (n > 0)
    # The critical line read off the grid agrees with the root finder to grid resolution.
    line = critical_line_from_data(ds)
    dw = np.diff(ds["sw2"].values).max()
    for sb2, w in zip(ds["sb2"].values, line.values):
        if np.isfinite(w):
            assert abs(w - mf.critical_sw2("erf", sb2)) < dw
            assert f"{w:>12.6g}" in text
    assert np.isfinite(line.values).sum() >= 4

    nc = tmp_path / "out.nc"
    assert cli("export", store, "-o", nc) == 0
    back = xr.open_dataset(nc).load()
    assert back["converged"].dtype == bool and back["phase"].dtype == np.int8
    xr.testing.assert_identical(back, ds)
    with pytest.raises(ValueError, match="exists"):
        cli("export", store, "-o", nc)


def test_cli_bad_input_leaves_store_alone(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text(_to_toml(_normalize(spec_dict("relu"), "", None)))
    store = tmp_path / "s.zarr"
    cli("sweep", good, "-o", store, "--workers", "1", "--no-progress")
    before = SW.open_sweep(store).load()
    bad = tmp_path / "bad.toml"
    bad.write_text(good.read_text().replace("[options]", "[options]\nbogus = 1"))
    with pytest.raises(ValueError, match=r"options\.bogus"):
        cli("sweep", bad, "-o", store, "--overwrite", "--no-progress")
    other = tmp_path / "other.toml"
    other.write_text(good.read_text().replace('"relu"', '"erf"'))
    with pytest.raises(ValueError, match="different spec"):
        cli("sweep", other, "-o", store, "--no-progress")
    xr.testing.assert_identical(SW.open_sweep(store).load(), before)


def test_cli_export_refuses_incomplete_store(tmp_path):
    store = tmp_path / "s.zarr"
    run(spec_dict("relu"), store)
    zarr.open_array(store, path="_sweep/done", mode="r+")[1, 1] = False
    with pytest.raises(ValueError, match=r"88\.9% complete"):
        cli("export", store, "-o", tmp_path / "x.nc")
    assert not (tmp_path / "x.nc").exists()
    assert cli("export", store, "-o", tmp_path / "x.nc", "--partial") == 0
    with pytest.raises(ValueError, match="not a meanfield sweep store"):
        cli("info", tmp_path)
