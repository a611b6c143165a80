"""``meanfield explore --static STORE -o page.html``: one self-contained HTML file.

The page holds the phase views of a stored diagram (a sweep store or a netCDF file from
``meanfield diagram``): every quantity as the colour (one tab each), hover values of every
quantity, the critical line chi_1 = 1 and the 6 xi_c = L contours, both drawn from the
stored grid, one tab per value of an extra dimension (activation, rho).  Bokeh's JavaScript
is inlined: the file needs no server and no network.
"""

from __future__ import annotations

import itertools
import os
import tempfile
from pathlib import Path

import numpy as np
from bokeh.embed import file_html
from bokeh.layouts import column
from bokeh.models import Div, TabPanel, Tabs
from bokeh.plotting.contour import contour_data
from bokeh.resources import INLINE

from .. import api as mf
from ..sweeps.output import publish_mode
from .compute import QUANTITIES
from .views import PhaseView, image_data

# Larger grids are thinned to at most this many points per axis: the page stays a few MB.
MAX_POINTS = 240


def open_store(path):
    """A sweep store (mf.open_sweep) or a netCDF file, loaded; ValueError if unreadable."""
    import xarray as xr

    path = Path(path)
    if not path.exists():
        raise ValueError(f"--static: no such file or directory: {str(path)!r}")
    try:
        ds = mf.open_sweep(path) if path.is_dir() else xr.open_dataset(path)
    except ValueError:
        raise
    except Exception as exc:  # xarray raises many types for a file it cannot read
        raise ValueError(f"--static: cannot read {str(path)!r} ({type(exc).__name__})") from None
    missing = [v for v in ("sw2", "sb2", *QUANTITIES, "phase") if v not in ds.variables]
    if missing:
        raise ValueError(f"--static: {str(path)!r} is not a phase diagram (missing {', '.join(missing)})")
    return ds.load()


def _thin(ds):
    step = {d: max(1, -(-ds.sizes[d] // MAX_POINTS)) for d in ("sw2", "sb2")}
    return ds.isel({d: slice(None, None, s) for d, s in step.items()}), step


def _panels(ds):
    """(label, 2-D dataset) for every combination of the extra dimensions."""
    extra = [d for d in ds["chi1"].dims if d not in ("sw2", "sb2")]
    if not extra:
        yield ds.attrs.get("activation", "diagram"), ds
        return
    for values in itertools.product(*(range(ds.sizes[d]) for d in extra)):
        sel = dict(zip(extra, values))
        label = ", ".join(f"{d}={ds[d].values[i]}" for d, i in sel.items())
        yield label, ds.isel(sel)


def _panel(ds, title):
    """Tabs, one per quantity, of phase views sharing one data source and critical line."""
    first = PhaseView(ds, "chi1", title=f"{title}: {QUANTITIES['chi1'][0]}", width=760, height=520)
    for var in QUANTITIES:
        first.source.data[f"shown_{var}"] = image_data(ds, var)["image"]
    chi = ds["chi1"].transpose("sb2", "sw2").values.astype(float)
    lchi = np.log(np.where(np.isfinite(chi) & (chi > 0), chi, np.nan))
    if np.nanmin(lchi, initial=np.inf) < 0 < np.nanmax(lchi, initial=-np.inf):
        line = contour_data(ds["sw2"].values, ds["sb2"].values, np.nan_to_num(lchi, nan=1e3), [0.0])
        # One line glyph: the pieces of the contour joined by NaN, where Bokeh breaks a line.
        gap = lambda parts: np.concatenate([np.append(np.asarray(a, float), np.nan) for a in parts])  # noqa: E731
        xs, ys = line.line_data.xs, line.line_data.ys
        first.crit_source.data = {"x": gap(xs), "y": gap(ys)} if len(xs) else {"x": [], "y": []}
    tabs = [TabPanel(child=first.figure, title=QUANTITIES["chi1"][0])]
    for var in list(QUANTITIES)[1:]:
        v = PhaseView(ds, var, title=f"{title}: {QUANTITIES[var][0]}", width=760, height=520,
                      source=first.source, crit_source=first.crit_source)
        tabs.append(TabPanel(child=v.figure, title=QUANTITIES[var][0].split(" (")[0]))
    return Tabs(tabs=tabs)


def build_page(ds, source_name="") -> str:
    """The HTML text of the static page for a loaded phase-diagram dataset."""
    ds, step = _thin(ds)
    note = "" if all(s == 1 for s in step.values()) else (
        f" Shown every {step['sw2']}th σ_w² and {step['sb2']}th σ_b² point of the stored grid.")
    head = Div(text=f"<h2>meanfield phase diagram{': ' + source_name if source_name else ''}</h2>"
               "<p>Hover for the values at a point; red: critical line χ₁ = 1 (from the grid); "
               f"white dashed: 6 ξ_c = 10, 50, 200 layers.{note}</p>", width=760)
    panels = [(label, _panel(sub, label)) for label, sub in _panels(ds)]
    body = panels[0][1] if len(panels) == 1 else Tabs(
        tabs=[TabPanel(child=p, title=label) for label, p in panels])
    return file_html(column(head, body), INLINE, title="meanfield phase diagram")


def write_page(store, output, overwrite=False) -> Path:
    """Write the static page of ``store`` to ``output`` (temp file + rename; never replaces an
    existing file unless ``overwrite``)."""
    out = Path(output)
    if out.exists() and not overwrite:
        raise ValueError(f"-o: {str(out)!r} exists; pass --overwrite to replace it")
    if not out.parent.exists():
        raise ValueError(f"-o: no such directory: {str(out.parent)!r}")
    text = build_page(open_store(store), Path(store).name)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        publish_mode(tmp)     # mkstemp makes 0600; a page is for sharing
        os.replace(tmp, out)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return out
