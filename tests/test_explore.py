"""The explorer: its numbers against the library, its CLI, and the app in a real browser.

Browser tests drive Debian's chromium (``apt-get install chromium``) with playwright's Python
package; they skip with a message where either is absent.  Screenshots go to ``figures/``.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

import meanfield as mf
from meanfield.cli import main

ROOT = Path(__file__).resolve().parent.parent
FIGURES = ROOT / "figures"
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


def _compute():
    pytest.importorskip("bokeh", reason="the explorer needs `pip install meanfield[explore]`")
    from meanfield.explore import compute

    return compute


# --- numbers: the explorer shows what the library computes ------------------------------------

def test_point_and_grid_equal_analyze():
    C = _compute()
    ds = C.diagram("tanh", (0.5, 4.0), (0.0, 2.0), shape=(12, 8))
    for i, j in [(0, 0), (5, 3), (11, 7)]:
        r = mf.analyze("tanh", float(ds.sw2[i]), float(ds.sb2[j]))
        for f in C.POINT_FIELDS:
            np.testing.assert_array_equal(ds[f].values[i, j], getattr(r, f))
    assert C.point("erf", 1.5, 0.05) == mf.analyze("erf", 1.5, 0.05).to_dict()


def test_critical_curve_is_the_critical_line():
    C = _compute()
    got = C.critical_curve("tanh", (0.0, 2.0), n=5)
    want = mf.critical_line("tanh", np.linspace(0, 2, 5))
    np.testing.assert_array_equal(got.values, want.values)


def test_profiles_identities():
    C = _compute()
    r = mf.analyze("tanh", 1.5, 0.05)
    # Started on q*, the length stays there and the gradient norm is chi_1^(L - l) exactly.
    p = C.profiles("tanh", 1.5, 0.05, depth=30, q1=r.q_star, c1=0.3)
    np.testing.assert_allclose(p["q"].values, r.q_star, rtol=1e-12)
    L = p["depth"].values
    np.testing.assert_allclose(p["grad"].values, r.chi1 ** (L[-1] - L), rtol=1e-10)
    np.testing.assert_allclose(p["fit_grad"].values, r.chi1 ** (L[-1] - L), rtol=1e-10)
    # c^l approaches c* = 1 (ordered) like exp(-l / xi_c) = chi_c^l once close to it
    dc = 1 - C.profiles("tanh", 1.5, 0.05, depth=80, c1=0.3)["c"].values
    assert dc[-1] / dc[-2] == pytest.approx(math.exp(-1 / r.xi_c), rel=0.01)
    # the same depth profile as mf.two_point_kernels
    t = mf.two_point_kernels("tanh", 1.5, 0.05, 30, q1=3.0, q2=3.0, c=0.0)
    np.testing.assert_allclose(C.profiles("tanh", 1.5, 0.05, depth=30)["q"].values, t["q1"].values,
                               rtol=1e-13)


def test_maps_closed_forms():
    C = _compute()
    # ReLU: V(q) = sw2 q / 2 + sb2 exactly; C(1) = 1 and C(c*) = c* for any activation.
    lm = C.length_map("relu", 1.5, 0.2, q_star=1.0)
    np.testing.assert_allclose(lm["y"], 1.5 * lm["x"] / 2 + 0.2, rtol=1e-13)
    r = mf.analyze("tanh", 3.0, 0.05)
    cm = C.correlation_map("tanh", 3.0, 0.05, r.q_star)
    assert cm["y"][-1] == pytest.approx(1.0, abs=1e-13)
    assert np.interp(r.c_star, cm["x"], cm["y"]) == pytest.approx(r.c_star, abs=2e-3)
    assert C.cobweb([3.0, 2.0, 1.5])["y"].tolist() == [3.0, 2.0, 2.0, 1.5]


def test_kernel_metrics_and_uploads():
    C = _compute()
    data = C.digits(n_train=40, n_test=20)
    m = C.kernel_metrics(data, "relu", 2.0, 0.0, depth=5)
    want = mf.ntk_metrics(data[0], data[1], data[2], "relu", 2.0, 0.0, 5)
    np.testing.assert_array_equal(m["condition_number"].values, want["condition_number"].values)
    assert np.all((m["test_accuracy"].values >= 0) & (m["test_accuracy"].values <= 1))
    X, y, Xt, yt = C.read_table("a.csv", b"1,2,1\n3,4,-1\n5,6,1\n7,8,-1\n")
    assert X.shape == (3, 2) and Xt.shape == (1, 2)
    with pytest.raises(ValueError, match="cannot read"):
        C.read_table("a.csv", b"1,x,1\n")
    with pytest.raises(ValueError, match="depth must be a positive integer"):
        C.recommend_text("tanh", "ten")


# --- the command line ---------------------------------------------------------------------------

def test_cli_imports_without_panel():
    code = "import sys, meanfield.cli; sys.exit('panel' in sys.modules or 'bokeh' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


@pytest.mark.parametrize("argv,message", [
    (["explore", "nope"], "unknown activation 'nope'"),
    (["explore", "--port", "0"], "--port must be in 1..65535"),
    (["explore", "--static", "missing.zarr", "-o", "p.html"], "no such file or directory"),
    (["explore", "--static", "missing.zarr"], "--static needs -o"),
])
def test_cli_bad_input_is_one_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    pytest.importorskip("bokeh", reason="the explorer needs `pip install meanfield[explore]`")
    path = tmp_path_factory.mktemp("sweep") / "two.zarr"
    spec = {"name": "two", "activation": [{"name": "erf"}, {"name": "tanh"}],
            "axes": {"sw2": {"start": 0.5, "stop": 4.0, "count": 40},
                     "sb2": {"start": 0.0, "stop": 2.0, "count": 20}}}
    mf.sweep(spec, str(path), progress=False, workers=1)
    return path


def test_static_page_is_self_contained(store, tmp_path, capsys):
    page = tmp_path / "page.html"
    assert main(["explore", "--static", str(store), "-o", str(page)]) == 0
    text = page.read_text()
    assert not re.search(r"<(script|link)[^>]+(src|href)=[\"']?(https?:)?//", text)
    assert "critical_line" in text and "activation=tanh" in text
    # never replaced without --overwrite; replaced with it
    before = page.stat().st_mtime_ns
    assert main(["explore", "--static", str(store), "-o", str(page)]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert page.stat().st_mtime_ns == before
    assert main(["explore", "--static", str(store), "-o", str(page), "--overwrite"]) == 0
    assert not list(tmp_path.glob(".page.html.*"))


# --- in a real browser --------------------------------------------------------------------------

def _browser():
    if CHROMIUM is None:
        pytest.skip("chromium not installed: apt-get install chromium")
    sync = pytest.importorskip("playwright.sync_api",
                               reason="playwright not installed: pip install '.[test]'").sync_playwright
    pytest.importorskip("panel", reason="the explorer needs `pip install meanfield[explore]`")
    return sync


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SERVER_LOG = {}


def server_tracebacks():
    """Tracebacks the explorer's server has logged so far (callbacks that failed)."""
    text = Path(SERVER_LOG["path"]).read_text()
    return [part[:400] for part in text.split("Traceback")[1:]]


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    _browser()
    port = _free_port()
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    # the server's output goes to a file: an undrained pipe would block it once full
    log = open(tmp_path_factory.mktemp("server") / "server.log", "w+")
    SERVER_LOG["path"] = log.name
    proc = subprocess.Popen([sys.executable, "-m", "meanfield", "explore", "tanh", "--port", str(port),
                             "--no-browser"], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(url, timeout=60).read()
                break
            except OSError:
                if proc.poll() is not None:
                    log.seek(0)
                    pytest.fail(f"the server exited: {log.read()[-2000:]}")
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.seek(0)
        print("\nserver log (tail):", log.read()[-3000:])
        log.close()


class Page:
    """A chromium page that records console errors and every network request it makes."""

    def __init__(self, browser, viewport=(1500, 1300)):
        self.errors, self.requests = [], []
        self.page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", lambda r: self.requests.append(r.url))

    def js(self, code):
        return self.page.evaluate(code)

    def model_data(self, name, column):
        return self.js(f"() => Array.from(Bokeh.documents[0].get_model_by_name('{name}')"
                       f".data_source.data['{column}'])")

    def text(self, cls):
        return self.page.locator(f".{cls}").first.inner_text().strip()

    def wait(self, predicate, timeout=60.0):
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < timeout:
            try:
                if predicate():
                    return time.perf_counter() - t0
            except Exception:  # the page is still updating (a model not there yet)
                pass
            time.sleep(0.02)
        raise AssertionError("timed out waiting for the page")


@pytest.fixture(scope="module")
def browser():
    sync_playwright = _browser()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


def test_app_click_shows_analyze_values(app_url, browser):
    C = _compute()
    pg = Page(browser)
    pg.page.goto(app_url)
    pg.page.wait_for_selector(".mf-q_star", timeout=120_000)
    # the full grid has arrived once the critical line has its 40 points (the coarse pass has 12)
    # generous: a cold server compiles its Numba functions first (minutes on a loaded
    # two-core machine); this checks that the line arrives, not how fast
    pg.wait(lambda: len(pg.model_data("critical_line", "x")) == 40, timeout=400)
    FIGURES.mkdir(exist_ok=True)
    pg.page.screenshot(path=str(FIGURES / "explorer_app.png"))
    dq_before = pg.js("() => Bokeh.documents[0].get_model_by_name('profile_dev_source').data.dq[3]")
    box = pg.page.locator(".bk-Canvas").first.bounding_box()
    pg.page.mouse.click(box["x"] + 0.62 * box["width"], box["y"] + 0.3 * box["height"])
    t_point = pg.wait(lambda: pg.text("mf-sw2") != "1.5", timeout=30)
    t_profiles = pg.wait(lambda: pg.js("() => Bokeh.documents[0].get_model_by_name("
                                       "'profile_dev_source').data.dq[3]") != dq_before, timeout=30)
    sw2, sb2 = float(pg.text("mf-sw2")), float(pg.text("mf-sb2"))
    r = mf.analyze("tanh", sw2, sb2)
    for f in ("q_star", "c_star", "chi1", "xi_c", "max_depth"):
        assert pg.text(f"mf-{f}") == C.fmt(getattr(r, f)), f
    assert pg.text("mf-phase") == r.phase
    advice = pg.text("mf-recommend")
    try:
        assert advice == str(mf.recommend("tanh", 100, sb2=sb2))
    except ValueError as exc:      # no critical line at this sb2: the page says why
        assert advice == f"recommend: {exc}"
    pg.page.screenshot(path=str(FIGURES / "explorer_click.png"), full_page=True)
    print(f"\nclick -> point panel {t_point:.2f} s, click -> profiles and maps {t_profiles:.2f} s")
    assert t_point < 5 and t_profiles < 10   # generous: a loaded CI machine; measured ~0.1-0.4 s
    assert not pg.errors, pg.errors
    remote = [u for u in pg.requests if not (u.startswith(app_url) or u.startswith("data:")
                                             or u.startswith("blob:" + app_url)
                                             or u.startswith(app_url.replace("http", "ws")))]
    assert not remote, remote
    pg.page.close()


def test_app_activation_moves_critical_line_and_bad_input_is_shown(app_url, browser):
    pg = Page(browser)
    pg.page.goto(app_url)
    pg.page.wait_for_selector(".mf-q_star", timeout=120_000)
    # generous: a cold server compiles its Numba functions first (minutes on a loaded
    # two-core machine); this checks that the line arrives, not how fast
    pg.wait(lambda: len(pg.model_data("critical_line", "x")) == 40, timeout=400)
    tanh_x = pg.model_data("critical_line", "x")
    pg.page.locator("select").first.select_option("erf")
    pg.wait(lambda: pg.model_data("critical_line", "x") != tanh_x
            and len(pg.model_data("critical_line", "x")) == 40, timeout=60)
    x, y = pg.model_data("critical_line", "x"), pg.model_data("critical_line", "y")
    np.testing.assert_allclose(x, mf.critical_line("erf", y).values, rtol=1e-12)
    assert not np.allclose(x, tanh_x)
    # bad input in a field: a visible message, and the page keeps working
    field = pg.page.get_by_role("textbox").first
    field.fill("abc")
    field.press("Enter")
    pg.wait(lambda: "not a number" in pg.text("mf-error"), timeout=10)
    assert pg.text("mf-activation") == "erf"
    assert not pg.errors, pg.errors
    pg.page.close()


def test_app_recovers_after_bad_input(app_url, browser):
    pg = Page(browser)
    pg.page.goto(app_url)
    pg.page.wait_for_selector(".mf-q_star", timeout=120_000)
    field = pg.page.get_by_role("textbox").first
    field.fill("abc")
    field.press("Enter")
    pg.wait(lambda: "not a number" in pg.text("mf-error"), timeout=10)
    field.fill("2.5")
    field.press("Enter")
    try:
        pg.wait(lambda: pg.text("mf-sw2") == "2.5" and pg.page.locator(".mf-error").count() == 0,
                timeout=30)
    except AssertionError:
        raise AssertionError(f"sw2 shown {pg.text('mf-sw2')!r}, errors {pg.page.locator('.mf-error').count()}, "
                             f"field {field.input_value()!r}") from None
    # typing a value (not clicking) must update the point as well, with no failed callback
    sb2_field = pg.page.get_by_role("textbox").nth(1)
    sb2_field.fill("0.1")
    sb2_field.press("Enter")
    pg.wait(lambda: pg.text("mf-sb2") == "0.1", timeout=30)
    assert server_tracebacks() == []
    pg.page.close()


def test_static_page_in_browser(store, browser, tmp_path):
    page_file = tmp_path / "page.html"
    from meanfield.explore.static import write_page

    write_page(store, page_file)
    pg = Page(browser, viewport=(900, 760))
    pg.page.goto(page_file.as_uri())
    pg.wait(lambda: pg.js("() => Bokeh.documents.length") == 1, timeout=30)
    # five tabs (one per quantity) share one critical-line source, drawn from the stored chi_1
    lengths = pg.js("() => Array.from(Bokeh.documents[0]._all_models.values())"
                    ".filter(m => m.name === 'critical_source').map(m => m.data.x.length)")
    assert len(lengths) == 2 and min(lengths) > 5, lengths      # erf and tanh tabs
    pg.page.get_by_text("max trainable depth 6 xi_c", exact=True).first.click()
    pg.page.mouse.move(400, 380)
    pg.page.wait_for_timeout(400)
    pg.page.screenshot(path=str(FIGURES / "explorer_static.png"))
    # chromium asks file:// for a favicon the page does not have; nothing else may fail
    assert not [e for e in pg.errors if "ERR_FILE_NOT_FOUND" not in e], pg.errors
    assert all(u.startswith("file:") or u.startswith("data:") for u in pg.requests), pg.requests
    pg.page.close()
