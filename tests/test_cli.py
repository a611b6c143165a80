"""The ``meanfield`` command: outputs, files, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import xarray as xr

import meanfield as mf
from meanfield.cli import main, parse_range


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_analyze_json_matches_library(capsys):
    code, out, err = run(capsys, "analyze", "tanh", "--sw2", "2.5", "--sb2", "0.1", "--json")
    assert code == 0 and err == ""
    data = json.loads(out)
    r = mf.analyze("tanh", 2.5, 0.1)
    assert data["q_star"] == r.q_star and data["c_star"] == r.c_star and data["phase"] == "chaotic"


def test_analyze_json_keeps_infinities_valid(capsys):
    code, out, _ = run(capsys, "analyze", "relu", "--sw2", "3", "--sb2", "0.3", "--json")
    assert code == 0
    data = json.loads(out)  # would raise on a bare Infinity/NaN token
    assert data["q_star"] == "inf" and data["converged"] is False


def test_critical_and_recommend(capsys):
    code, out, _ = run(capsys, "critical", "tanh", "--sb2", "0,0.05")
    assert code == 0 and "critical sw2 = 1   q* = 0\n" in out and "1.76095463" in out
    code, out, _ = run(capsys, "critical", "gelu", "--sb2", "0.01,0.3")
    assert code == 0 and "critical sw2 = nan" in out and "diverges" in out and "1.95615862832" in out
    code, out, _ = run(capsys, "recommend", "tanh", "--depth", "100")
    assert code == 0 and "sqrt(fan_in)" in out


def test_diagram_writes_netcdf_and_png(tmp_path, capsys):
    nc = tmp_path / "d.nc"
    png = tmp_path / "d.png"
    code, out, _ = run(capsys, "diagram", "erf", "--sw2", "0.5:3:6", "--sb2", "0:1:4", "-o", str(nc),
                       "--png", str(png))
    assert code == 0 and nc.exists() and png.stat().st_size > 10_000
    ds = xr.load_dataset(nc)
    ref = mf.phase_diagram("erf", ds.sw2.values, ds.sb2.values)
    xr.testing.assert_identical(ds, ref)


def test_outputs_get_the_permissions_of_new_files(tmp_path, capsys):
    # written under a private temporary name (0600/0700) and renamed: the result must not
    # stay private
    import os

    mask = os.umask(0o022)
    try:
        for name in ("p.nc", "p.zarr"):
            code, _, _ = run(capsys, "diagram", "erf", "--sw2", "0.5:3:4", "--sb2", "0:1:3",
                             "-o", str(tmp_path / name), *(["--png", str(tmp_path / "p.png")]
                                                           if name == "p.nc" else []))
            assert code == 0
    finally:
        os.umask(mask)
    assert (tmp_path / "p.nc").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "p.png").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "p.zarr").stat().st_mode & 0o777 == 0o755


@pytest.mark.parametrize("argv,needle", [
    (["analyze", "tanh", "--sw2", "-1", "--sb2", "0"], "sw2 must be >= 0"),
    (["analyze", "nope", "--sw2", "1", "--sb2", "0"], "unknown activation 'nope'"),
    (["analyze", "tanh", "--sw2", "x", "--sb2", "0"], "invalid float value"),
    (["analyze", "tanh", "--sw2", "1", "--sb2", "0", "--rho", "0"], "rho must be > 0"),
    (["diagram", "-o", "out.txt"], "must end in .nc"),
    (["diagram", "--sw2", "2:1:5", "-o", "x.nc"], "STOP must be greater than START"),
    (["diagram", "--sb2", "0:1", "-o", "x.nc"], "expected START:STOP:N"),
    (["recommend", "tanh", "--depth", "0"], "depth must be an integer >= 1"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_input_one_line_exit_2(capsys, argv, needle, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert needle in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # nothing written on bad input


def test_parse_range():
    assert list(parse_range("0:1:3", "x")) == [0.0, 0.5, 1.0]
    assert list(parse_range("0.5", "x")) == [0.5]
    with pytest.raises(ValueError, match="x:"):
        parse_range("a:b:c", "x")


def test_console_entry_point_runs_as_module():
    proc = subprocess.run([sys.executable, "-m", "meanfield", "analyze", "tanh", "--sw2", "-2",
                           "--sb2", "0"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "meanfield: error: sw2 must be >= 0, got -2"


def test_command_list_keeps_acronyms(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    out = capsys.readouterr().out
    assert exc.value.code == 0
    # The one-line helps are lower-cased for argparse's style, but not an acronym.
    assert "NTK condition number" in out and "nTK" not in out
    assert "list the built-in activations" in out
