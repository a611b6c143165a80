"""Generate tests/data/gelu_refs.json: mpmath (quadrature) reference values for the tests.

Usage: python tests/data/make_gelu_refs.py  (from the repository root; a few minutes;
imports only tests/gelu_reference.py, never meanfield).
"""
import json
import math
import sys
import time
from multiprocessing import Pool

import os  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from tests.gelu_reference import general_ref, equal_variance_ref, one_point_ref  # noqa: E402

QS = [1e-6, 0.01, 0.3, 1.0, 4.0, 30.0, 1e3, 1e6]
CS = [-1.0, -0.9, 0.0, 0.5, 0.99, 1 - 1e-5, 1 - 1e-8, 1.0]
EPS = [2.0, 1.9, 1.0, 0.5, 0.01, 1e-5, 1e-8, 1e-10, 1e-12, 0.0]
UNEQ = [(0.5, 2.0), (1e-3, 10.0), (100.0, 0.01)]


def general_points():
    pts = []
    for q in QS:
        for c in CS:
            pts.append((q, q, c * q))
    for a, b in UNEQ:
        for c in CS:
            pts.append((a, b, c * math.sqrt(a * b)))
    pts += [(0.0, 1.0, 0.0), (2.0, 0.0, 0.0), (0.0, 0.0, 0.0)]
    return pts


def _gen(p):
    return dict(s11=p[0], s22=p[1], s12=p[2], ref=list(general_ref(*p, dps=32)))


def _eqv(p):
    return dict(q=p[0], eps=p[1], ref=list(equal_variance_ref(p[0], p[1], dps=60)))


def _one(q):
    return dict(q=q, ref=one_point_ref(q, dps=32)[0])


if __name__ == "__main__":
    t0 = time.time()
    with Pool(2) as pool:
        gen = pool.map(_gen, general_points())
        eqv = pool.map(_eqv, [(q, e) for q in QS for e in EPS])
        one = pool.map(_one, QS)
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "gelu_refs.json"), "w") as f:
        json.dump(dict(general=gen, equal_variance=eqv, one_point=one), f, indent=1)
    print("done in %.1f s" % (time.time() - t0))
