"""Figures of meanfield.plot and the ``meanfield plot`` command (Agg backend, small grids)."""

import argparse

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import xarray as xr  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

import meanfield as mf  # noqa: E402
from meanfield import plot  # noqa: E402
from meanfield.cli.plot import register as add_parsers  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def tanh_grid():
    # sb2 = 0 is on the grid so the critical line's end point (sw2 = 1, docs/theory.md) is drawn.
    return mf.phase_diagram("tanh", np.linspace(0.5, 2.0, 31), np.linspace(0.0, 0.5, 11))


def _roundtrip(ds, tmp_path, name="ds.nc"):
    path = tmp_path / name
    ds.to_netcdf(path)
    return xr.load_dataset(path)


def _assert_labelled(fig):
    assert isinstance(fig, Figure)
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.get_label() != "<colorbar>"]
    assert panels
    for ax in panels:
        assert ax.get_xlabel().strip() and ax.get_ylabel().strip(), ax.get_title()


def _critical_contour_vertices(fig):
    """Vertices of the black chi_1 = 1 contour in the first panel."""
    from matplotlib.contour import ContourSet

    for coll in fig.axes[0].collections:
        if isinstance(coll, ContourSet) and list(coll.levels) == [0.0]:
            return np.concatenate([p.vertices for p in coll.get_paths() if len(p.vertices)])
    raise AssertionError("no chi_1 = 1 contour drawn")


def test_phase_diagram_critical_line_near_one_at_sb2_zero(tanh_grid, tmp_path):
    ds = _roundtrip(tanh_grid, tmp_path)
    fig = plot.phase_diagram(ds)
    _assert_labelled(fig)
    v = _critical_contour_vertices(fig)
    low = v[np.argmin(v[:, 1])]
    # tanh with sb2 = 0 is critical at sw2 = 1 (docs/theory.md); grid step in sw2 is 0.05.
    assert low[1] == pytest.approx(0.0, abs=1e-12)
    assert low[0] == pytest.approx(1.0, abs=0.05)
    texts = " ".join(t.get_text() for t in fig.axes[0].texts)
    assert "ordered" in texts and "chaotic" in texts


def test_phase_labels_on_their_sides(tanh_grid):
    fig = plot.phase_diagram(tanh_grid)
    pos = {t.get_text().split()[0]: t.get_position() for t in fig.axes[0].texts}
    sw2c = mf.critical_sw2("tanh", pos["ordered"][1])
    assert pos["ordered"][0] < sw2c
    assert pos["chaotic"][0] > mf.critical_sw2("tanh", pos["chaotic"][1])


@pytest.mark.parametrize("var", ["chi1", "max_depth", "phase", "q_star", "chi_c"])
def test_phase_diagram_vars(tanh_grid, var):
    _assert_labelled(plot.phase_diagram(tanh_grid, var))


def test_phase_diagram_into_given_axes(tanh_grid):
    fig, ax = plt.subplots()
    assert plot.phase_diagram(tanh_grid, ax=ax) is fig


def test_phase_diagram_bad_var(tanh_grid):
    with pytest.raises(ValueError, match="not in the dataset"):
        plot.phase_diagram(tanh_grid, "nope")
    three = xr.concat([tanh_grid, tanh_grid], dim="rho")
    with pytest.raises(ValueError, match="2-D"):
        plot.phase_diagram(three)


def test_facets_over_activation(tmp_path):
    sw2, sb2 = np.linspace(0.5, 3, 12), np.linspace(0, 1, 6)
    parts = [mf.phase_diagram(a, sw2, sb2) for a in ("relu", "erf")]
    ds = xr.concat(parts, dim=xr.DataArray(["relu", "erf"], dims="activation", name="activation"),
                   combine_attrs="drop_conflicts")
    fig = plot.phase_diagram_facets(_roundtrip(ds, tmp_path))
    _assert_labelled(fig)
    assert [ax.get_title() for ax in fig.axes if ax.get_label() != "<colorbar>"] == \
        ["activation = relu", "activation = erf"]


def test_length_and_correlation_maps():
    fig = plot.length_map("tanh", sw2=(1.0, 4.0), sb2=0.09, n_steps=3)
    _assert_labelled(fig)
    fig = plot.correlation_map("erf", sw2=(1.0, 4.0), sb2=0.09, n_steps=3)
    _assert_labelled(fig)


def test_length_map_curve_is_the_length_map():
    # The drawn curve must pass through the fixed point q* = V(q*) reported by analyze.
    r = mf.analyze("erf", 4.0, 0.09)
    fig = plot.length_map("erf", sw2=4.0, sb2=0.09, n_steps=0)
    x, y = fig.axes[0].lines[1].get_data()
    assert np.interp(r.q_star, x, y) == pytest.approx(r.q_star, rel=1e-3)


def test_correlation_map_needs_positive_q_star():
    with pytest.raises(ValueError, match="q\\*"):
        plot.correlation_map("tanh", sw2=0.5, sb2=0.0)


def test_depth_profiles():
    _assert_labelled(plot.depth_profiles("erf", sw2=(1.0, 3.0), sb2=0.05, depth=12))


def test_depth_scales_peak_at_critical_point(tmp_path):
    ds = _roundtrip(mf.phase_diagram("tanh", np.linspace(0.5, 1.5, 41), [0.0]), tmp_path)
    fig = plot.depth_scales(ds)
    _assert_labelled(fig)
    x, y = fig.axes[0].lines[0].get_data()  # xi_c
    assert x[np.nanargmax(y)] == pytest.approx(1.0, abs=0.03)
    with pytest.raises(ValueError, match="sb2"):
        plot.depth_scales(mf.phase_diagram("tanh", [1.0, 2.0], [0.0, 0.1]))


def test_ntk_trainability(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((6, 12))
    Xt = rng.standard_normal((3, 12))
    y = np.sign(X[:, 0])
    metrics = []
    for i, sw2 in enumerate((1.0, 2.0, 3.0)):
        m = mf.ntk_metrics(X, y, Xt, "relu", sw2, 0.1, 8)
        m["singular"] = m["singular"].astype(np.int8)  # netCDF has no bool
        metrics.append(_roundtrip(m, tmp_path, f"m{i}.nc"))
    fig = plot.ntk_trainability(metrics)
    _assert_labelled(fig)
    assert len(fig.axes[0].get_legend().get_texts()) == 3
    with pytest.raises(ValueError):
        plot.ntk_trainability([])


def test_critical_lines():
    fig = plot.critical_lines(["relu", "erf"], sb2=np.linspace(0, 1, 5))
    _assert_labelled(fig)
    x, _ = fig.axes[0].lines[0].get_data()
    np.testing.assert_allclose(x, 2.0, rtol=1e-12)  # ReLU: chi_1 = sw2/2 (docs/theory.md)


def _cli(argv):
    parser = argparse.ArgumentParser()
    add_parsers(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_plot_writes_png(tanh_grid, tmp_path, capsys):
    nc = tmp_path / "tanh.nc"
    tanh_grid.to_netcdf(nc)
    out = tmp_path / "tanh.png"
    assert _cli(["plot", str(nc), "-o", str(out), "--var", "xi_c"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    store = tmp_path / "tanh.zarr"
    tanh_grid.to_zarr(store, consolidated=False)
    out2 = tmp_path / "z.png"
    assert _cli(["plot", str(store), "-o", str(out2)]) == 0
    assert out2.stat().st_size > 0


def test_cli_plot_bad_input(tanh_grid, tmp_path):
    nc = tmp_path / "tanh.nc"
    tanh_grid.to_netcdf(nc)
    with pytest.raises(ValueError, match="--var"):
        _cli(["plot", str(nc), "-o", str(tmp_path / "a.png"), "--var", "bogus"])
    with pytest.raises(ValueError, match="no such file"):
        _cli(["plot", str(tmp_path / "missing.nc"), "-o", str(tmp_path / "a.png")])
    with pytest.raises(ValueError, match=".png"):
        _cli(["plot", str(nc), "-o", str(tmp_path / "a.pdf")])
    bad = tmp_path / "bad.nc"
    bad.write_text("not netcdf")
    with pytest.raises(ValueError, match="cannot read"):
        _cli(["plot", str(bad), "-o", str(tmp_path / "a.png")])
