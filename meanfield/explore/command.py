"""``meanfield explore``: the phase-diagram explorer in the browser, or a static page.

    meanfield explore [ACT] [--port N] [--no-browser]
    meanfield explore --static STORE -o page.html [--overwrite]

The live app listens on 127.0.0.1 only.  Panel and Bokeh are an optional extra
(``pip install "meanfield[explore]"``); they are imported when the command runs, so the
rest of the CLI works without them.
"""

from __future__ import annotations

import importlib.util

NEEDS = "the explorer needs `pip install meanfield[explore]`"


def register(subparsers):
    p = subparsers.add_parser(
        "explore", help="interactive phase-diagram explorer in the browser (or --static page)",
        description="Start a local web app (http://127.0.0.1:PORT) to explore the phase diagram "
                    "of an activation: hover for values, click for depth profiles and maps, "
                    "kernels per depth.  With --static, write one self-contained HTML page of a "
                    "stored sweep instead.")
    p.add_argument("activation", nargs="?", default="tanh", help="activation (default tanh)")
    p.add_argument("--port", type=int, default=5006, help="port on 127.0.0.1 (default 5006)")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser tab")
    p.add_argument("--static", metavar="STORE",
                   help="write a self-contained HTML page of a sweep store / .nc diagram")
    p.add_argument("-o", "--output", metavar="PAGE.html", help="the HTML file of --static")
    p.add_argument("--overwrite", action="store_true", help="replace an existing PAGE.html")
    p.set_defaults(func=run_explore)
    return p


def _require(*modules):
    if any(importlib.util.find_spec(m) is None for m in modules):
        raise ValueError(NEEDS)


def run_explore(args) -> int:
    from .. import api as mf

    if args.static is not None:
        if not args.output:
            raise ValueError("--static needs -o PAGE.html")
        _require("bokeh")
        from .static import write_page

        out = write_page(args.static, args.output, overwrite=args.overwrite)
        print(f"wrote {out}")
        return 0
    if args.output:
        raise ValueError("-o is for --static; the live explorer writes no file")
    if not 1 <= args.port <= 65535:
        raise ValueError(f"--port must be in 1..65535, got {args.port}")
    mf.get_activation(args.activation)      # unknown name -> ValueError listing the choices
    _require("panel", "bokeh")
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", args.port))
        except OSError:
            raise ValueError(f"--port: 127.0.0.1:{args.port} is in use; pick another") from None
    from .app import serve

    print(f"meanfield explorer on http://127.0.0.1:{args.port}  (Ctrl-C stops it)")
    serve(args.activation, port=args.port, show=not args.no_browser)
    return 0
