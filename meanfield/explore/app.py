"""The live explorer: Panel widgets around the Bokeh views, computing in a worker thread.

``Explorer(activation).layout`` is one Panel object; ``serve`` puts it on a local Bokeh
server (one Explorer per browser session) and a notebook cell displays the same object.
Every computation runs on one worker thread shared by the sessions (two cores: parallel
requests would only slow each other); a request carries a generation number and a result
that is no longer the latest is dropped, which debounces sliders and repeated clicks.
Bad input never raises into the page: it becomes a red message under the controls.
"""

from __future__ import annotations

import html
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import panel as pn
from bokeh.events import Tap

from . import compute as C
from . import export, views

LOG = logging.getLogger("meanfield.explore")
_POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="meanfield-explore")
# A coarse diagram is shown first, then the full grid: a slow activation (gelu, selu:
# quadrature, ~1 ms per point on two cores) answers within a second and refines after.
COARSE = (40, 27)
COARSE_CRITICAL = 12


class Explorer:
    """Controls, phase diagram, point panel, profiles, maps and kernels of one session."""

    def __init__(self, activation="tanh", sw2=C.DEFAULT_SW2, sb2=C.DEFAULT_SB2, threaded=True):
        self.threaded = threaded
        self.doc = pn.state.curdoc if threaded else None
        self._gen = {"diagram": 0, "point": 0, "kernels": 0}
        self._lock = threading.Lock()
        self.ds = self.crit = self.prof = self.metrics = None
        self.maps = {}
        self.data = None
        self.timings = {}
        names = C.activation_names()
        if activation not in names:
            raise ValueError(f"unknown activation {activation!r}; choose from {', '.join(names)}")
        self.act = pn.widgets.Select(name="Activation", options=names, value=activation, width=220)
        self.var = pn.widgets.Select(name="Colour by", value="chi1", width=220,
                                     options={label: k for k, (label, _) in C.QUANTITIES.items()})
        self.sw2_range = pn.widgets.RangeSlider(name="σ_w² range", start=0.0, end=10.0, step=0.05,
                                                value=tuple(sw2), width=220)
        self.sb2_range = pn.widgets.RangeSlider(name="σ_b² range", start=0.0, end=5.0, step=0.05,
                                                value=tuple(sb2), width=220)
        self.sw2_in = pn.widgets.TextInput(name="σ_w² of the point (or click the diagram)",
                                           value="1.5", width=220)
        self.sb2_in = pn.widgets.TextInput(name="σ_b² of the point", value="0.05", width=220)
        self.depth_in = pn.widgets.TextInput(name="Depth L for the recommendation", value="100",
                                             width=220)
        self.message = pn.pane.HTML("", width=220, css_classes=["mf-message"])
        self.busy = pn.pane.HTML("", width=220, css_classes=["mf-busy"])
        self.point_pane = pn.pane.HTML("<i>click the diagram</i>", width=300,
                                       css_classes=["mf-point"])
        self.advice = pn.pane.HTML("", width=520, css_classes=["mf-advice"])
        self._build_views()
        self._build_kernel_tab()
        self.act.param.watch(lambda e: self.request_diagram(), "value")
        self.sw2_range.param.watch(lambda e: self.request_diagram(), "value_throttled")
        self.sb2_range.param.watch(lambda e: self.request_diagram(), "value_throttled")
        # Bokeh models are changed only on the session's next tick: a Panel widget's watcher
        # may run while the document is unlocked, where a direct change raises.
        self.var.param.watch(lambda e: self._on_page(self._recolour), "value")
        for w in (self.sw2_in, self.sb2_in, self.depth_in):
            w.param.watch(lambda e: self.request_point(), "value")
        self.layout = self._layout()
        if threaded:
            # Changes made between the page's first render and its websocket connection are
            # lost (Bokeh sends the document with the page, then only later patches), so a
            # result that arrives in that window never shows: start the work once loaded.
            pn.state.onload(self._start)
        else:
            self._start()

    def _start(self):
        self.request_diagram()
        self.request_point()

    # --- layout ----------------------------------------------------------------------------
    def _build_views(self):
        ds = C.diagram(self.act.value, self.sw2_range.value, self.sb2_range.value, COARSE)
        self.ds = ds
        self.phase = views.PhaseView(ds, self.var.value, title=self._title())
        self.phase.figure.on_event(Tap, self._on_tap)
        self.profile = views.profile_views()
        self.mapviews = views.map_views()

    def _build_kernel_tab(self):
        self.kdata = pn.widgets.Select(name="Data set", options=["digits (scikit-learn)", "upload"],
                                       width=220)
        self.kfile = pn.widgets.FileInput(accept=".csv,.npz", width=220)
        self.kdepth = pn.widgets.TextInput(name="Depth L", value="20", width=120)
        self.kbutton = pn.widgets.Button(name="Compute kernels at the point", button_type="primary")
        self.kinfo = pn.pane.HTML("", width=600, css_classes=["mf-kernel-info"])
        self.kviews = views.kernel_views()
        self.kbutton.on_click(lambda e: self.request_kernels())

    def _title(self):
        return f"{self.act.value}: {C.QUANTITIES[self.var.value][0]} over (σ_w², σ_b²)"

    def _layout(self):
        side = pn.Column(
            pn.pane.HTML("<h2 style='margin:0'>meanfield explorer</h2>"), self.act, self.var,
            self.sw2_range, self.sb2_range, self.sw2_in, self.sb2_in, self.depth_in, self.busy,
            self.message, pn.pane.HTML("<b>Export</b> (PNG of any plot: its toolbar's save icon)"),
            *export.buttons(self), width=250)
        q, c, dev = self.profile
        lm, cm = self.mapviews
        phase_tab = pn.Column(
            pn.Row(self.phase.figure, pn.Column(self.point_pane)),
            self.advice,
            pn.Row(q.figure, c.figure), pn.Row(dev.figure), pn.Row(lm.figure, cm.figure))
        kappa, acc, pred = self.kviews
        kernel_tab = pn.Column(
            pn.pane.HTML("NNGP/NTK per depth at the selected point (mf.ntk_metrics); inputs are "
                         "put on the sphere |x|² = d. Upload: CSV with the label in the last "
                         "column, or .npz with arrays X and y (at most 300 rows; last third = test)."),
            pn.Row(self.kdata, self.kfile, self.kdepth, self.kbutton), self.kinfo,
            pn.Row(kappa.figure, acc.figure), pred.figure)
        self.tabs = pn.Tabs(("Phase diagram", phase_tab), ("Kernels", kernel_tab), dynamic=False)
        return pn.Row(side, self.tabs)

    # --- running work off the event loop ---------------------------------------------------
    def _run(self, kind, work, apply):
        """``work()`` on the worker thread, then ``apply(result)`` on the page's thread;
        dropped if a newer request of the same kind came meanwhile.  ValueError -> message."""
        if self.threaded and (self.doc is None or self.doc.session_context is None):
            self.doc = pn.state.curdoc      # set once the server has attached the session
        with self._lock:
            self._gen[kind] += 1
            gen = self._gen[kind]
        self._set_busy(kind, True)

        def job():
            if gen != self._gen[kind]:
                return
            t0 = time.perf_counter()
            try:
                out, err = work(), None
            except ValueError as exc:
                out, err = None, str(exc).splitlines()[0]
            except Exception as exc:  # a bug must not kill the page: say so, log the traceback
                LOG.exception("explorer: %s computation failed", kind)
                out, err = None, f"internal error in the {kind} computation ({type(exc).__name__}: {exc})"
            self.timings[kind] = time.perf_counter() - t0
            self._on_page(lambda: self._finish(kind, gen, apply, out, err))

        if self.threaded:
            _POOL.submit(job)
        else:
            job()

    def _on_page(self, fn):
        """Run ``fn`` where the page's models may be changed: the session's event loop."""
        if self.threaded and self.doc is not None and self.doc.session_context is not None:
            if getattr(self.doc.session_context, "destroyed", False):
                return                      # the browser tab is gone: nothing to show
            try:
                self.doc.add_next_tick_callback(fn)
            except Exception:               # the session closed meanwhile
                LOG.debug("explorer: session closed; result dropped")
        else:
            fn()

    def _finish(self, kind, gen, apply, out, err):
        if gen != self._gen[kind]:
            return
        self._set_busy(kind, False)
        if err is not None:
            self.show_error(err)
            return
        try:
            apply(out)
        except ValueError as exc:
            self.show_error(str(exc).splitlines()[0])
        except Exception as exc:  # a bug must not kill the page: say so, log the traceback
            LOG.exception("explorer: %s update failed", kind)
            self.show_error(f"internal error while showing the {kind} ({type(exc).__name__}: {exc})")

    def _set_busy(self, kind, on):
        busy = getattr(self, "_busy_kinds", set())
        (busy.add if on else busy.discard)(kind)
        self._busy_kinds = busy
        self.busy.object = ("<span style='color:#666'>computing " + ", ".join(sorted(busy))
                            + " …</span>") if busy else ""

    def show_error(self, text):
        self.message.object = f"<div class='mf-error' style='color:#b00020'><b>Error:</b> {html.escape(text)}</div>"

    def clear_error(self):
        self.message.object = "<div class='mf-ok'></div>"

    # --- the phase diagram -----------------------------------------------------------------
    def request_diagram(self):
        act, sw2, sb2 = self.act.value, self.sw2_range.value, self.sb2_range.value
        self.clear_error()

        def work():
            coarse = (C.diagram(act, sw2, sb2, COARSE), C.critical_curve(act, sb2, COARSE_CRITICAL))
            self._on_page(lambda: self._show_diagram(act, *coarse, final=False))
            return C.diagram(act, sw2, sb2), C.critical_curve(act, sb2)

        self._run("diagram", work, lambda out: self._show_diagram(act, *out, final=True))
        self.request_point()

    def _show_diagram(self, act, ds, crit, final):
        if act != self.act.value:
            return
        self.ds, self.crit = ds, crit
        self.phase.update(ds, self.var.value, crit, title=self._title()
                          + ("" if final else "  (coarse; refining…)"))

    def _recolour(self):
        self.phase.update(self.ds, self.var.value, title=self._title())

    def _on_tap(self, event):
        if event.x is None or event.y is None:
            return
        with pn.io.hold():
            self._quiet = True
            self.sw2_in.value = f"{C.snap(max(event.x, 0.0)):.{C.COORD_DECIMALS}f}"
            self.sb2_in.value = f"{C.snap(max(event.y, 0.0)):.{C.COORD_DECIMALS}f}"
            self._quiet = False
        self.request_point()

    # --- the selected point ----------------------------------------------------------------
    def _parse_point(self):
        out = []
        for name, w in (("σ_w²", self.sw2_in), ("σ_b²", self.sb2_in)):
            try:
                v = float(w.value)
            except ValueError:
                raise ValueError(f"{name}: not a number: {w.value!r}") from None
            if not (v >= 0 and v < float("inf")):
                raise ValueError(f"{name} must be a finite number >= 0, got {w.value!r}")
            out.append(v)
        return out

    def request_point(self):
        if getattr(self, "_quiet", False):
            return
        try:
            sw2, sb2 = self._parse_point()
        except ValueError as exc:
            self.show_error(str(exc))
            return
        self.clear_error()
        act, depth_text = self.act.value, self.depth_in.value
        self._on_page(lambda: self.phase.mark(sw2, sb2))
        t_click = time.perf_counter()

        def work():
            res = C.point(act, sw2, sb2)
            self._on_page(lambda: self._show_point(res))
            try:
                advice = C.recommend_text(act, depth_text, sb2=sb2)
            except ValueError as exc:
                advice = f"recommend: {str(exc).splitlines()[0]}"
            self._on_page(lambda: setattr(self.advice, "object",
                                          f"<pre class='mf-recommend'>{html.escape(advice)}</pre>"))
            prof = C.profiles(act, sw2, sb2)
            qs = prof.attrs["q_star"]
            maps = {"length": C.length_map(act, sw2, sb2, qs, q1=prof.attrs["q1"]),
                    "correlation": C.correlation_map(act, sw2, sb2, qs)}
            return prof, maps

        def apply(out):
            self.prof, self.maps = out
            views.update_profiles(self.profile, self.prof)
            views.update_maps(self.mapviews, self.maps["length"], self.maps["correlation"],
                              self.prof["q"].values, self.prof["c"].values, C.cobweb)
            self.timings["click_to_profiles"] = time.perf_counter() - t_click

        self._run("point", work, apply)
        if getattr(self, "tabs", None) is not None and self.tabs.active == 1:
            self.request_kernels()   # the kernel tab is open: keep it at the selected point

    def _show_point(self, res):
        self.point = res
        rows = [("activation", res["activation"]), ("σ_w²", res["sw2"]), ("σ_b²", res["sb2"]),
                ("phase", res["phase"])]
        labels = {"q_star": "q*", "c_star": "c*", "chi1": "χ₁", "chi_c": "χ_c", "xi_q": "ξ_q",
                  "xi_c": "ξ_c", "xi_grad": "ξ_∇", "max_depth": "max depth 6ξ_c"}
        rows += [(labels[f], res[f]) for f in C.POINT_FIELDS] + [("status", res["status"])]
        keys = ["activation", "sw2", "sb2", "phase", *C.POINT_FIELDS, "status"]
        body = "".join(f"<tr><td>{html.escape(lab)}</td><td class='mf-{k}' style='font-family:"
                       f"monospace'>{html.escape(C.fmt(v) if k not in ('sw2', 'sb2') else repr(v))}"
                       "</td></tr>" for (lab, v), k in zip(rows, keys))
        self.point_pane.object = f"<table class='mf-point-table'>{body}</table>"

    # --- kernels ---------------------------------------------------------------------------
    def _kernel_data(self):
        if self.kdata.value == "upload":
            if not self.kfile.value:
                raise ValueError("kernels: choose a .csv or .npz file to upload first")
            return C.read_table(self.kfile.filename, self.kfile.value)
        if self.data is None:
            self.data = C.digits()
        return self.data

    def request_kernels(self):
        try:
            sw2, sb2 = self._parse_point()
            depth = int(self.kdepth.value)
            if not 1 <= depth <= 200:
                raise ValueError(f"kernels: depth must be an integer in 1..200, got {depth}")
            data = self._kernel_data()
        except ValueError as exc:
            msg = str(exc)
            self.show_error(msg if "depth" not in msg or "kernels" in msg
                            else f"kernels: depth must be an integer, got {self.kdepth.value!r}")
            return
        act = self.act.value

        def apply(m):
            self.metrics = m
            views.update_kernels(self.kviews, m)
            n, d = data[0].shape
            self.kinfo.object = (f"{act} at σ_w² = {sw2:g}, σ_b² = {sb2:g}: {n} training and "
                                 f"{len(data[2])} test inputs of dimension {d}; "
                                 f"κ^L = {C.fmt(float(m['condition_number'][-1]))}, test accuracy "
                                 f"at L: {C.fmt(float(m['test_accuracy'][-1]), 3)}")

        self._run("kernels", lambda: C.kernel_metrics(data, act, sw2, sb2, depth), apply)


def serve(activation="tanh", port=5006, show=True, **kwargs):
    """Serve the explorer on http://127.0.0.1:PORT, bound to the loopback interface only.

    One :class:`Explorer` per browser session.  Blocks until stopped; extra keyword arguments
    go to :func:`panel.serve` (``threaded=True`` returns a server running on a thread).
    """
    origins = [f"127.0.0.1:{port}", f"localhost:{port}"]
    return pn.serve({"/": lambda: Explorer(activation).layout}, port=port, address="127.0.0.1",
                    show=show, title="meanfield explorer", allow_websocket_origin=origins,
                    **kwargs)
