"""Download buttons: every view's data as netCDF and CSV, and PNG figures drawn by
:mod:`meanfield.plot` (the Bokeh toolbar's save icon also saves any plot as PNG)."""

from __future__ import annotations

import io
import os
import tempfile

import panel as pn
import xarray as xr

from .. import plot


def netcdf_bytes(ds: xr.Dataset) -> bytes:
    """The dataset as a netCDF4 file's bytes (written to a temporary file, then read)."""
    fd, tmp = tempfile.mkstemp(suffix=".nc")
    os.close(fd)
    try:
        ds.to_netcdf(tmp)
        with open(tmp, "rb") as f:
            return f.read()
    finally:
        os.unlink(tmp)


def csv_bytes(ds: xr.Dataset) -> bytes:
    return ds.to_dataframe().to_csv().encode()


def png_bytes(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=130)
    plt.close(fig)
    return buf.getvalue()


def maps_dataset(maps: dict) -> xr.Dataset:
    """The two maps on their own grids, as one dataset (q_grid and c_grid coordinates)."""
    lm, cm = maps["length"], maps["correlation"]
    return xr.Dataset({"V": ("q", lm["y"], {"long_name": "length map V(q)", "units": "1"}),
                       "C": ("c", cm["y"], {"long_name": "correlation map C(c) at q*", "units": "1"})},
                      coords={"q": lm["x"], "c": cm["x"]})


def _need(obj, what):
    if obj is None:
        raise ValueError(f"nothing to export yet: {what}")
    return obj


def _file(label, name, make):
    def callback():
        try:
            return io.BytesIO(make())
        except ValueError:
            return io.BytesIO(b"")
    return pn.widgets.FileDownload(callback=callback, filename=name, label=label,
                                   button_type="light", width=220, embed=False)


def buttons(ex) -> list:
    """FileDownload widgets reading the explorer ``ex``'s current state when clicked."""
    ds = lambda: _need(ex.ds, "phase diagram")        # noqa: E731
    prof = lambda: _need(ex.prof, "click a point")    # noqa: E731
    met = lambda: _need(ex.metrics, "compute kernels")  # noqa: E731
    return [
        _file("phase diagram .nc", "phase_diagram.nc", lambda: netcdf_bytes(ds())),
        _file("phase diagram .csv", "phase_diagram.csv", lambda: csv_bytes(ds())),
        _file("phase diagram .png", "phase_diagram.png",
              lambda: png_bytes(plot.phase_diagram(ds(), ex.var.value))),
        _file("profiles .nc", "profiles.nc", lambda: netcdf_bytes(prof())),
        _file("profiles .csv", "profiles.csv", lambda: csv_bytes(prof())),
        _file("profiles .png", "profiles.png", lambda: png_bytes(plot.depth_profiles(
            ex.act.value, sw2=[prof().attrs["sw2"]], sb2=prof().attrs["sb2"],
            q1=prof().attrs["q1"], c1=prof().attrs["c1"]))),
        _file("maps .csv", "maps.csv", lambda: csv_bytes(maps_dataset(_need(ex.maps or None, "click")))),
        _file("kernels .nc", "kernels.nc", lambda: netcdf_bytes(met())),
        _file("kernels .csv", "kernels.csv",
              lambda: csv_bytes(met()[["condition_number", "lambda_max", "lambda_min",
                                       "test_accuracy"]])),
        _file("kernels .png", "kernels.png", lambda: png_bytes(plot.ntk_trainability(met()))),
    ]
