"""Time per grid point of mf.phase_diagram against a plain numpy implementation.

Run:  python benchmarks/bench_phase_diagram.py [--n 1000] [--baseline-points 40] [--repeat 3]
      python benchmarks/bench_phase_diagram.py --activation erf
      python benchmarks/bench_phase_diagram.py --activation silu   (or gelu: no baseline)

The diagram is timed --repeat times in one process and the median reported; the first call
(Numba compile or cache load, and the activation's moment tables) is timed separately.

The baseline is what a user would write by hand.  tanh: Gauss-Hermite quadrature (100
nodes, 2-D tensor rule for the correlation map) and plain fixed-point iteration of the q-
and c-maps until the change is below 1e-12 (or 2000 layers), timed on a random subset of
the same grid and compared per point.  erf: the closed-form maps iterated on the whole
grid at once as numpy arrays (the vectorized approach of a JAX vmap), at most 2000 layers.
The baseline's accuracy against meanfield is printed too, because a fast wrong answer is
no baseline.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

# Benchmark this checkout, not whatever version is installed.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import meanfield as mf  # noqa: E402

GH_NODES = 100


def baseline_point(sw2, sb2, z, w):
    """q*, c*, chi1 by plain iteration with Gauss-Hermite (probabilists') quadrature."""
    q = 1.0
    for _ in range(2000):
        qn = sw2 * np.sum(w * np.tanh(np.sqrt(q) * z) ** 2) + sb2
        if abs(qn - q) < 1e-12 * max(q, 1e-300):
            q = qn
            break
        q = qn
    dphi2 = np.sum(w * (1 - np.tanh(np.sqrt(q) * z) ** 2) ** 2)
    chi1 = sw2 * dphi2
    if chi1 <= 1:
        return q, 1.0, chi1
    Z1, Z2 = np.meshgrid(z, z, indexing="ij")
    W = np.outer(w, w)
    u1 = np.sqrt(q) * Z1
    p1 = np.tanh(u1)
    c = 0.5
    for _ in range(2000):
        u2 = np.sqrt(q) * (c * Z1 + np.sqrt(1 - c * c) * Z2)
        cn = (sw2 * np.sum(W * p1 * np.tanh(u2)) + sb2) / q
        if abs(cn - c) < 1e-12:
            c = cn
            break
        c = cn
    return q, c, chi1


def erf_baseline(sw2, sb2, max_layers=2000, tol=1e-12):
    """q*, c*, chi1 on the whole grid by iterating the closed-form erf maps (docs/theory.md)."""
    W, B = np.meshgrid(sw2, sb2, indexing="ij")
    q = np.ones_like(W)
    for _ in range(max_layers):
        qn = W * (2 / np.pi) * np.arcsin(2 * q / (1 + 2 * q)) + B
        done = np.abs(qn - q) <= tol * np.maximum(q, 1e-300)
        q = qn
        if done.all():
            break
    chi1 = W * (4 / np.pi) / np.sqrt(1 + 4 * q)
    c = np.full_like(W, 0.5)
    c[chi1 <= 1] = 1.0
    for _ in range(max_layers):
        with np.errstate(invalid="ignore", divide="ignore"):
            cn = (W * (2 / np.pi) * np.arcsin(2 * q * c / (1 + 2 * q)) + B) / q
        cn = np.where(chi1 <= 1, 1.0, cn)
        done = np.abs(cn - c) <= tol
        c = cn
        if done.all():
            break
    return q, c, chi1


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="grid is n x n (default 1000, the target)")
    ap.add_argument("--baseline-points", type=int, default=40, help="tanh baseline sample size")
    ap.add_argument("--activation", choices=("tanh", "erf", "gelu", "silu"), default="tanh")
    ap.add_argument("--repeat", type=int, default=3, help="timed diagrams; the median is reported")
    args = ap.parse_args()
    if args.activation == "erf":
        return main_erf(args)
    sw2 = np.linspace(0.5, 4.0, args.n)
    sb2 = np.linspace(0.0, 2.0, args.n)

    t = time.perf_counter()
    mf.phase_diagram(args.activation, sw2[:2], sb2[:2])
    compile_s = time.perf_counter() - t
    times = []
    cpu = []
    for _ in range(max(args.repeat, 1)):
        t = time.perf_counter()
        c = time.process_time()
        ds = mf.phase_diagram(args.activation, sw2, sb2)
        cpu.append(time.process_time() - c)
        times.append(time.perf_counter() - t)
    ours = float(np.median(times))
    npts = args.n * args.n
    per_ours = ours / npts
    if args.activation != "tanh":
        print(f"{args.activation} phase diagram, {args.n} x {args.n} = {npts} points, every quantity")
        print(f"  first call (compile/cache load, tables): {compile_s:.2f} s")
        print(f"  meanfield.phase_diagram : {ours:8.2f} s median of {len(times)} "
              f"({', '.join(f'{x:.2f}' for x in times)}) = {per_ours * 1e6:.2f} us/point; "
              f"CPU {np.median(cpu):.2f} s")
        return 0

    x, wts = np.polynomial.hermite_e.hermegauss(GH_NODES)
    wts = wts / np.sqrt(2 * np.pi)
    rng = np.random.default_rng(0)
    idx = rng.choice(npts, size=args.baseline_points, replace=False)
    ii, jj = np.unravel_index(idx, (args.n, args.n))
    t = time.perf_counter()
    base = [baseline_point(sw2[i], sb2[j], x, wts) for i, j in zip(ii, jj)]
    per_base = (time.perf_counter() - t) / len(idx)
    err_q = max(abs(b[0] - float(ds.q_star[i, j])) / max(float(ds.q_star[i, j]), 1e-300)
                for b, i, j in zip(base, ii, jj))
    err_c = max(abs(b[1] - float(ds.c_star[i, j])) for b, i, j in zip(base, ii, jj))

    phases = {k: int((ds.phase == v).sum()) for k, v in (("ordered", 0), ("critical", 1),
                                                          ("chaotic", 2))}
    print(f"tanh phase diagram, {args.n} x {args.n} = {npts} points, every quantity")
    print(f"  phases: {phases}; converged: {int(ds.converged.sum())}/{npts}")
    print(f"  first call (compile/cache load, tables): {compile_s:.2f} s")
    print(f"  meanfield.phase_diagram : {ours:8.2f} s  = {per_ours * 1e6:9.2f} us/point "
          f"(median of {len(times)}: {', '.join(f'{x:.2f}' for x in times)}; "
          f"CPU {np.median(cpu):.2f} s)")
    print(f"  plain numpy (GH {GH_NODES}, iteration): {per_base * 1e6:9.0f} us/point "
          f"(on {len(idx)} random points of the grid)")
    print(f"  speed-up per point      : {per_base / per_ours:9.0f} x")
    print(f"  1000 x 1000 projected   : {per_ours * 1e6:8.1f} s")
    print("  for scale: --activation erf times the closed-form erf diagram and its numpy iteration")
    print(f"  baseline max rel. error in q*: {err_q:.1e}, max abs. error in c*: {err_c:.1e}")


def main_erf(args):
    sw2 = np.linspace(0.5, 4.0, args.n)
    sb2 = np.linspace(0.0, 2.0, args.n)
    mf.phase_diagram("erf", sw2[:2], sb2[:2])  # compile / load the cache
    t = time.perf_counter()
    ds = mf.phase_diagram("erf", sw2, sb2)
    ours = time.perf_counter() - t
    t = time.perf_counter()
    q, c, chi1 = erf_baseline(sw2, sb2)
    base = time.perf_counter() - t
    npts = args.n * args.n
    # Compare where plain iteration can converge in 2000 layers: q* > 0 (q^l -> 0 only
    # geometrically) and |log chi_1| > 0.01 (near the critical line c^l creeps).
    qs = ds.q_star.values
    away = (qs > 1e-8) & (np.abs(np.log(ds.chi1.values)) > 0.01)
    err_q = np.max(np.abs(q - qs)[away] / qs[away])
    err_c = np.max(np.abs(c - ds.c_star.values)[away])
    print(f"erf phase diagram, {args.n} x {args.n} = {npts} points, every quantity")
    print(f"  converged: {int(ds.converged.sum())}/{npts}")
    print(f"  meanfield.phase_diagram        : {ours:8.2f} s = {ours / npts * 1e6:7.2f} us/point")
    print(f"  numpy closed-form iteration    : {base:8.2f} s = {base / npts * 1e6:7.2f} us/point")
    print(f"  speed-up                       : {base / ours:8.1f} x")
    print(f"  baseline max rel. error in q*: {err_q:.1e}, max abs. error in c*: {err_c:.1e} "
          f"(on the {away.mean():.0%} of points with q* > 1e-8, |log chi_1| > 0.01)")
    return 0


if __name__ == "__main__":
    main()
