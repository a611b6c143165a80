"""Bokeh figures of the explorer, built from the xarray objects of :mod:`.compute`.

Each view owns its figure and data sources and has an ``update`` that only replaces data,
so a live app, a notebook cell and the static page draw the same thing.  Models the tests
look up in the browser carry a ``name`` (``critical_line``, ``phase_image``, ...).
"""

from __future__ import annotations

import math

import numpy as np
from bokeh.models import (ColorBar, ColumnDataSource, HoverTool, Legend, LinearColorMapper,
                          LogColorMapper, Span)
from bokeh.palettes import Category10_10, Viridis256
from bokeh.plotting import figure
from bokeh.plotting.contour import contour_data

from .compute import DEPTH_LEVELS, POINT_FIELDS, QUANTITIES

PALETTE = Category10_10
TOOLS = "pan,wheel_zoom,box_zoom,reset,save"   # "save": the PNG export of every figure
# Colour of points with no finite value (no fixed point, infinite depth scale).
NAN_COLOR = "#d9d9d9"


def _pixel_frame(ds):
    """(x, y, dw, dh) of an image whose pixel centres sit on the dataset's grid."""
    w, b = ds["sw2"].values, ds["sb2"].values
    dx = (w[-1] - w[0]) / max(len(w) - 1, 1) or 1e-3
    dy = (b[-1] - b[0]) / max(len(b) - 1, 1) or 1e-3
    return w[0] - dx / 2, b[0] - dy / 2, w[-1] - w[0] + dx, b[-1] - b[0] + dy


def image_data(ds, var) -> dict:
    """Columns of the phase image: the coloured ``image`` and every quantity for the hover."""
    x, y, dw, dh = _pixel_frame(ds)
    log = QUANTITIES[var][1]
    shown = ds[var].transpose("sb2", "sw2").values.astype(float)    # rows = sb2, columns = sw2
    shown = np.where(np.isfinite(shown) & ((shown > 0) if log else True), shown, np.nan)
    data = {"image": [shown], "x": [x], "y": [y], "dw": [dw], "dh": [dh]}
    W, B = np.meshgrid(ds["sw2"].values, ds["sb2"].values)
    data["sw2"], data["sb2"] = [W], [B]
    for f in POINT_FIELDS:
        data[f] = [ds[f].transpose("sb2", "sw2").values.astype(float)]
    phase_names = dict(zip(ds["phase"].attrs["flag_values"], ds["phase"].attrs["flag_meanings"].split()))
    data["phase"] = [np.vectorize(lambda v: phase_names.get(v, "?"), otypes=[object])(
        ds["phase"].transpose("sb2", "sw2").values)]
    return data


def _mapper(values, log):
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        lo, hi = (1.0, 10.0) if log else (0.0, 1.0)
    else:
        lo, hi = float(finite.min()), float(finite.max())
        if log and not hi > lo:
            lo, hi = lo / 2, lo * 2
        elif not hi > lo:
            lo, hi = lo - 0.5, lo + 0.5
    cls = LogColorMapper if log else LinearColorMapper
    return cls(palette=Viridis256, low=lo, high=hi, nan_color=NAN_COLOR)


class PhaseView:
    """The phase diagram: a quantity as colour, the critical line, 6 xi_c = L contours, hover.

    ``figure`` has a tap tool; the caller attaches what a click does.
    """

    def __init__(self, ds, var="chi1", critical=None, title="", width=620, height=440,
                 source=None, crit_source=None):
        # ``source``/``crit_source`` given: share them (the static page draws one figure per
        # quantity from one source, column ``shown_<var>``, so the data is written once).
        self.var = var
        column = "image" if source is None else f"shown_{var}"
        self.source = source or ColumnDataSource(image_data(ds, var), name="phase_source")
        self.crit_source = crit_source or ColumnDataSource({"x": [], "y": []}, name="critical_source")
        self.point_source = ColumnDataSource({"x": [], "y": []}, name="point_source")
        p = figure(width=width, height=height, tools=TOOLS + ",tap", title=title,
                   x_axis_label="σ_w² (weight variance)", y_axis_label="σ_b² (bias variance)",
                   match_aspect=False, name="phase_figure")
        p.x_range.range_padding = p.y_range.range_padding = 0
        mapper = _mapper(self.source.data[column][0], QUANTITIES[var][1])
        self.image = p.image(image=column, x="x", y="y", dw="dw", dh="dh", source=self.source,
                             color_mapper=mapper, name="phase_image")
        self.colorbar = ColorBar(color_mapper=mapper, title=QUANTITIES[var][0], width=12)
        p.add_layout(self.colorbar, "right")
        self.contours = p.contour(*self._contour_args(ds), line_color="white", line_dash="dashed",
                                  line_width=1.2)
        self.contours.fill_renderer.visible = False     # lines only: the colour is the quantity
        self.contours.name = "depth_contours"
        self.critical = p.line("x", "y", source=self.crit_source, line_color="red", line_width=2.5,
                               name="critical_line", legend_label="critical line χ₁ = 1")
        p.line([], [], line_color="white", line_dash="dashed", legend_label="6 ξ_c = "
               + ", ".join(map(str, DEPTH_LEVELS)) + " layers")
        p.scatter("x", "y", source=self.point_source, size=11, marker="circle_cross",
                  fill_color=None, line_color="black", line_width=2, name="clicked_point")
        p.legend.location = "top_left"
        p.legend.background_fill_alpha = 0.7
        p.legend.label_text_font_size = "9pt"
        tips = [("σ_w²", "@sw2{0.0000}"), ("σ_b²", "@sb2{0.0000}"), ("phase", "@phase")]
        tips += [(f, f"@{f}{{0.00000g}}") for f in POINT_FIELDS]
        p.add_tools(HoverTool(renderers=[self.image], tooltips=tips))
        self.figure = p
        if critical is not None:
            self.set_critical(critical)

    @staticmethod
    def _contour_args(ds):
        depth = ds["max_depth"].transpose("sb2", "sw2").values.astype(float)
        depth = np.where(np.isfinite(depth), depth, 1e12)   # infinite depth: inside every contour
        return ds["sw2"].values, ds["sb2"].values, depth, list(DEPTH_LEVELS)

    def update(self, ds, var=None, critical=None, title=None):
        var = var or self.var
        self.var = var
        self.source.data = image_data(ds, var)
        mapper = _mapper(self.source.data["image"][0], QUANTITIES[var][1])
        self.image.glyph.color_mapper = mapper
        self.colorbar.color_mapper = mapper
        self.colorbar.title = QUANTITIES[var][0]
        x, y, z, levels = self._contour_args(ds)
        self.contours.set_data(contour_data(x, y, z, levels))
        if critical is not None:
            self.set_critical(critical)
        if title is not None:
            self.figure.title.text = title

    def set_critical(self, crit):
        """The critical line from mf.critical_line (a DataArray of sw2 over sb2)."""
        keep = np.isfinite(crit.values)
        self.crit_source.data = {"x": crit.values[keep], "y": crit["sb2"].values[keep]}

    def mark(self, sw2, sb2):
        self.point_source.data = {"x": [sw2], "y": [sb2]}


class LinesView:
    """A figure of named lines over one x column; ``update`` takes a dict of arrays."""

    def __init__(self, title, x_label, y_label, series, y_log=False, name="", width=420, height=300):
        self.series = series
        cols = {"x": []} | {s[0]: [] for s in series}
        self.source = ColumnDataSource(cols, name=f"{name}_source" if name else None)
        p = figure(width=width, height=height, tools=TOOLS, title=title, x_axis_label=x_label,
                   y_axis_label=y_label, y_axis_type="log" if y_log else "linear",
                   name=name or None)
        items = []
        for key, label, colour, dash in series:
            r = p.line("x", key, source=self.source, line_color=colour, line_dash=dash, line_width=2)
            items.append((label, [r]))
        legend = Legend(items=items, label_text_font_size="8pt", background_fill_alpha=0.7)
        p.add_layout(legend, "center")
        legend.location = "top_right"
        self.hlines = []
        self.figure = p

    def update(self, x, columns, hlines=()):
        data = {"x": np.asarray(x, float)}
        for key, *_ in self.series:
            v = np.asarray(columns[key], float)
            data[key] = np.where(np.isfinite(v), v, np.nan)
        self.source.data = data
        for span in self.hlines:
            span.visible = False
        for k, (value, colour) in enumerate(hlines):
            if k == len(self.hlines):
                span = Span(dimension="width", line_dash="dotted", line_width=1.2)
                self.figure.add_layout(span)
                self.hlines.append(span)
            span = self.hlines[k]
            span.location, span.line_color = float(value) if math.isfinite(value) else 0.0, colour
            span.visible = math.isfinite(value)


def profile_views():
    """q^l, c^l and the deviations/gradient norm with their exp(-l/xi) fits."""
    q = LinesView("length q^l (dotted: q*)", "depth l", "q^l", [("q", "q^l", PALETTE[0], "solid")],
                  name="profile_q")
    c = LinesView("correlation c^l at q* (dotted: c*)", "depth l", "c^l",
                  [("c", "c^l", PALETTE[1], "solid")], name="profile_c")
    dev = LinesView("approach to the fixed point; gradient norm", "depth l", "deviation / ratio",
                    [("dq", "|q^l − q*|/q*", PALETTE[0], "solid"),
                     ("fit_q", "∝ exp(−l/ξ_q)", PALETTE[0], "dashed"),
                     ("dc", "|c^l − c*|", PALETTE[1], "solid"),
                     ("fit_c", "∝ exp(−l/ξ_c)", PALETTE[1], "dashed"),
                     ("grad", "E[δ_l²]/E[δ_L²]", PALETTE[2], "solid"),
                     ("fit_grad", "exp(−(L−l)/ξ_∇)", PALETTE[2], "dashed")],
                    y_log=True, name="profile_dev", width=520, height=360)
    return q, c, dev


def update_profiles(views, prof):
    q, c, dev = views
    l = prof["depth"].values
    cols = {k: prof[k].values for k in prof.data_vars}
    q.update(l, cols, [(prof.attrs["q_star"], PALETTE[0])])
    c.update(l, cols, [(prof.attrs["c_star"], PALETTE[1])])
    dev.update(l, cols)


def map_views():
    """The length map V(q) and correlation map C(c), each with the identity and a cobweb."""
    lm = LinesView("length map q^{l+1} = V(q^l)", "q^l", "q^{l+1}",
                   [("map", "V(q)", PALETTE[0], "solid"), ("id", "identity", "gray", "dotted")],
                   name="length_map")
    cm = LinesView("correlation map c^{l+1} = C(c^l) at q*", "c^l", "c^{l+1}",
                   [("map", "C(c)", PALETTE[1], "solid"), ("id", "identity", "gray", "dotted")],
                   name="correlation_map")
    for v, colour in ((lm, PALETTE[3]), (cm, PALETTE[3])):
        v.cobweb = ColumnDataSource({"x": [], "y": []})
        v.figure.line("x", "y", source=v.cobweb, line_color=colour, line_width=1, alpha=0.9)
    return lm, cm


def update_maps(views, lmap, cmap, q_iter, c_iter, cobweb):
    lm, cm = views
    lm.update(lmap["x"], {"map": lmap["y"], "id": lmap["x"]})
    cm.update(cmap["x"], {"map": cmap["y"], "id": cmap["x"]})
    lm.cobweb.data = cobweb(q_iter[:12])
    cm.cobweb.data = cobweb(c_iter[:12])


def kernel_views():
    kappa = LinesView("NTK condition number κ^l", "depth l", "κ^l",
                      [("condition_number", "κ^l", PALETTE[0], "solid")], y_log=True,
                      name="kernel_kappa")
    acc = LinesView("test accuracy of sign(mean predictor)", "depth l", "accuracy",
                    [("test_accuracy", "accuracy", PALETTE[2], "solid")], name="kernel_accuracy")
    pred = LinesView("mean predictor P(Θ^l)Y on 6 test points", "depth l", "prediction",
                     [(f"p{k}", f"test {k}", PALETTE[k], "solid") for k in range(6)],
                     name="kernel_prediction")
    return kappa, acc, pred


def update_kernels(views, m):
    kappa, acc, pred = views
    l = m["depth"].values
    kappa.update(l, {"condition_number": m["condition_number"].values})
    acc.update(l, {"test_accuracy": m["test_accuracy"].values})
    P = m["prediction"].values.reshape(len(l), -1)
    pred.update(l, {f"p{k}": P[:, k] if k < P.shape[1] else np.full(len(l), np.nan) for k in range(6)})
