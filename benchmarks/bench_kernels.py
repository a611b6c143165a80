"""Benchmark: NNGP + NTK of every depth 1..50 for n = 1000 inputs of dimension 100.

Run as ``python benchmarks/bench_kernels.py`` (from the repository root, or with the
package importable).  For erf, relu and tanh it prints wall time and peak memory of
:func:`meanfield.kernels` beside a plain NumPy implementation of the same
recursion (docs/theory.md, "Kernels on a data set"), measured in this run:

* erf, relu: vectorized NumPy closed forms on the full n x n matrices.
* tanh: Gauss-Hermite tensor quadrature (``GH_NODES`` per axis, after a Cholesky
  factorization of each pair's 2x2 covariance) on a subsample of ``N_SUB`` inputs; its
  time is scaled by the number of pairs, n(n+1)/2 / (m(m+1)/2).

Accuracy: erf and relu are compared entrywise with the NumPy closed forms; tanh with a
2-D quadrature per pair (``_expect.moments2``, accurate to ~1e-15) on a subsample, which
checks the Chebyshev interpolant the fast path uses.

Inputs are Gaussian vectors scaled to |x|^2/d = 1 (points on a sphere), the setting of
the shared-norm fast path; ``--raw`` scales them by factors uniform in [0.85, 1.15] (norms
that differ, as real features do) and ``--both`` runs the two sets one after the other.

neural-tangents (``benchmarks/nt_kernels.py``: ``stax`` in the NTK parameterization, float64,
jitted, best of three after a compiling warm-up) is timed on the same inputs in the same run
when an interpreter with it is found: ``--nt-python PATH``, else ``$MEANFIELD_NT_PYTHON``,
else this interpreter if it imports neural_tangents; otherwise its column says "skipped"
and why.  It has closed forms for erf, relu and gelu only (tanh: skipped).  Each timed call is preceded by an identical warm-up call, so
the numbers exclude Numba compilation/cache loading and the first touch of fresh memory
pages (on a VM that first touch alone costs ~1.3 s per GB).  Peak memory is measured with
``tracemalloc`` in a separate call (tracing slows NumPy down), and counts Python/NumPy
allocations, which include the (L, n, n) outputs.
"""

from __future__ import annotations

import math
import os
import sys
import time
import tracemalloc

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from meanfield.ntk import blocks as KN  # noqa: E402
from meanfield.ntk import recursion as KM  # noqa: E402
from meanfield import kernels  # noqa: E402
from meanfield import get_activation  # noqa: E402

N, DIM, DEPTH = 1000, 100, 50
N_SUB = 40  # tanh Gauss-Hermite baseline: subsample size
GH_NODES = 100  # per axis; docs/theory.md: GH in z loses accuracy as q grows (here q < 1)
N_REF = 60  # tanh accuracy check: subsample for the per-pair quadrature reference
CASES = [  # (activation, sw2, sb2): phases from meanfield.analyze
    ("erf", 1.5, 0.05),   # chaotic, c* = 0.82
    ("relu", 2.0, 0.0),   # critical
    ("tanh", 2.0, 0.05),  # chaotic, q* = 0.72
]


# --------------------------------------------------------------------------- NumPy baselines
def numpy_erf(X, sw2, sb2, L):
    d = X.shape[1]
    S = sw2 * (X @ X.T) / d + sb2
    T = S.copy()
    outS, outT = [S], [T]
    for _ in range(L - 1):
        a1 = 1.0 + 2.0 * np.diag(S)
        big = np.outer(a1, a1)
        D = (2.0 / np.pi) * np.arcsin(np.clip(2.0 * S / np.sqrt(big), -1.0, 1.0))
        Dp = (4.0 / np.pi) / np.sqrt(big - 4.0 * S * S)
        S = sw2 * D + sb2
        T = S + sw2 * Dp * T
        outS.append(S)
        outT.append(T)
    return np.array(outS), np.array(outT)


def numpy_relu(X, sw2, sb2, L):
    d = X.shape[1]
    S = sw2 * (X @ X.T) / d + sb2
    T = S.copy()
    outS, outT = [S], [T]
    for _ in range(L - 1):
        r = np.sqrt(np.outer(np.diag(S), np.diag(S)))
        c = np.clip(S / r, -1.0, 1.0)
        th = np.arccos(c)
        D = r * (np.sin(th) + (np.pi - th) * c) / (2.0 * np.pi)
        Dp = (np.pi - th) / (2.0 * np.pi)
        S = sw2 * D + sb2
        T = S + sw2 * Dp * T
        outS.append(S)
        outT.append(T)
    return np.array(outS), np.array(outT)


def numpy_gh(X, sw2, sb2, L, phi, dphi, nodes=GH_NODES):
    """Gauss-Hermite tensor rule per unique pair (upper triangle), vectorized over pairs."""
    z, w = np.polynomial.hermite_e.hermegauss(nodes)
    w = w / math.sqrt(2.0 * math.pi)
    W = np.outer(w, w)
    d = X.shape[1]
    S = sw2 * (X @ X.T) / d + sb2
    T = S.copy()
    iu, ju = np.triu_indices(X.shape[0])
    outS, outT = [S], [T]
    for _ in range(L - 1):
        s11, s22, s12 = S[iu, iu], S[ju, ju], S[iu, ju]
        l11 = np.sqrt(s11)
        l21 = s12 / l11
        l22 = np.sqrt(np.maximum(s22 - l21 * l21, 0.0))
        u = l11[:, None, None] * z[None, :, None]
        v = l21[:, None, None] * z[None, :, None] + l22[:, None, None] * z[None, None, :]
        D = np.einsum("pij,ij->p", phi(u) * phi(v), W)
        Dp = np.einsum("pij,ij->p", dphi(u) * dphi(v), W)
        Sn = np.empty_like(S)
        Dpm = np.empty_like(S)
        Sn[iu, ju] = Sn[ju, iu] = sw2 * D + sb2
        Dpm[iu, ju] = Dpm[ju, iu] = sw2 * Dp
        S, T = Sn, Sn + Dpm * T
        outS.append(S)
        outT.append(T)
    return np.array(outS), np.array(outT)


def tanh_baseline(X, sw2, sb2, L):
    return numpy_gh(X, sw2, sb2, L, np.tanh, lambda x: 1.0 / np.cosh(x) ** 2)


# --------------------------------------------------------------------------- helpers
REPEATS = 3  # best of: this shared 2-core machine varies by +-30% from run to run


def timed(f, *args):
    f(*args)  # warm-up: compilation/cache load and first touch of memory
    best = math.inf
    for _ in range(REPEATS):
        t = time.perf_counter()
        out = f(*args)
        best = min(best, time.perf_counter() - t)
    return best, out


def peak_mb(f, *args):
    tracemalloc.start()
    f(*args)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2**20


def ours(X, act, sw2, sb2, L):
    ds = kernels(X, act, sw2, sb2, L)
    return ds.nngp.values, ds.ntk.values


def rel_err(a, b):
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))


def scaled_err(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def per_pair_reference(X, act, sw2, sb2, L):
    """Same recursion with the 2-D quadrature evaluated for every pair (no interpolant)."""
    n = X.shape[0]
    rec = KM.setup(get_activation(act), sw2, sb2, X, [(np.arange(n), np.arange(n), True)])
    assert rec.shared
    rec.mode = KN.MODE_SHARED_QUAD
    S = np.empty((L, n, n))
    T = np.empty((L, n, n))
    rec.compute(L, [(S, T)])
    return S, T


NT_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nt_kernels.py")


def nt_python(given):
    """The interpreter that runs neural-tangents, or (None, why not)."""
    import subprocess

    for cand in (given, os.environ.get("MEANFIELD_NT_PYTHON")):
        if cand:
            return (cand, None) if os.path.exists(cand) else (None, f"{cand} does not exist")
    ok = subprocess.run([sys.executable, "-c", "import neural_tangents"],
                        capture_output=True).returncode == 0
    return (sys.executable, None) if ok else (None, "neural-tangents is not installed "
                                              "(--nt-python or $MEANFIELD_NT_PYTHON)")


def neural_tangents(py, X, act, sw2, sb2, L):
    """(seconds, last-layer nngp, ntk) from nt_kernels.py, or (None, reason, None)."""
    import json
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = os.path.join(tmp, "x.npy"), os.path.join(tmp, "k.npz")
        np.save(src, X)
        env = {**os.environ, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3"}
        r = subprocess.run([py, NT_SCRIPT, act, repr(sw2), repr(sb2), str(L), src, dst],
                           capture_output=True, text=True, env=env)
        lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
        if r.returncode != 0 or not lines:
            tail = (r.stderr.strip().splitlines() or ["failed"])[-1]
            return None, f"failed: {tail}", None
        out = json.loads(lines[-1])
        if "skipped" in out:
            return None, out["skipped"], None
        k = np.load(dst)
        return out["seconds"], k["nngp"], k["ntk"]


def run_cases(X, cases, nt):
    """Time every case on inputs X; one table row each, plus the neural-tangents line."""
    print(f"{'activation':<10} {'meanfield s':>12} {'peak MB':>8} {'numpy s':>12} {'peak MB':>8} "
          f"{'speed-up':>8}  accuracy")
    for act, sw2, sb2 in cases:
        run_case(X, act, sw2, sb2, nt)


def run_case(X, act, sw2, sb2, nt):
    t_ours, (S, T) = timed(ours, X, act, sw2, sb2, DEPTH)
    m_ours = peak_mb(ours, X, act, sw2, sb2, DEPTH)
    if act == "gelu":
        print(f"{act:<10} {t_ours:>12.3f} {m_ours:>8.0f} {'-':>12} {'-':>8} {'-':>8}  "
              f"(no plain numpy GELU kernel; tests/test_closed_gelu.py checks the closed form)")
    else:
        compare_numpy(X, act, sw2, sb2, t_ours, m_ours, S, T)
    py, why = nt
    if py is None:
        print(f"{'':<10} neural-tangents: skipped ({why})")
        return
    t_nt, Snt, Tnt = neural_tangents(py, X, act, sw2, sb2, DEPTH)
    if t_nt is None:
        print(f"{'':<10} neural-tangents: skipped ({Snt})")
        return
    print(f"{'':<10} neural-tangents {t_nt:.3f} s (meanfield {t_nt / t_ours:.2f}x its speed); "
          f"depth {DEPTH} max rel. diff: nngp {rel_err(S[-1], Snt):.1e}, ntk {rel_err(T[-1], Tnt):.1e}")


def compare_numpy(X, act, sw2, sb2, t_ours, m_ours, S, T):
    if act in ("tanh", "silu", "softplus", "elu", "selu") and not KM.setup(get_activation(act), sw2, sb2, X[:2],
                                                [(np.arange(2), np.arange(2), True)]).shared:
        # Raw inputs without a closed form: the per-input Hermite series (exact 2-D rule
        # where its bound fails), checked against the 2-D quadrature for every pair.
        Sr, Tr = raw_exact_reference(X[:N_REF], act, sw2, sb2, DEPTH)
        print(f"{act:<10} {t_ours:>12.3f} {m_ours:>8.0f} {'-':>12} {'-':>8} {'-':>8}  "
              f"vs per-pair 2-D quadrature (n={N_REF}): nngp "
              f"{scaled_err(S[:, :N_REF, :N_REF], Sr):.1e}, ntk "
              f"{scaled_err(T[:, :N_REF, :N_REF], Tr):.1e} (max abs / max)")
        return
    if act == "tanh":
        Xs = X[:N_SUB]
        t_sub, (Sb, Tb) = timed(tanh_baseline, Xs, sw2, sb2, DEPTH)
        scale = (N * (N + 1) / 2) / (N_SUB * (N_SUB + 1) / 2)
        t_np = t_sub * scale
        m_np = peak_mb(tanh_baseline, Xs, sw2, sb2, DEPTH)
        np_note = f" (GH {GH_NODES}^2 on n={N_SUB}, x{scale:.0f})"
        Sr, Tr = per_pair_reference(X[:N_REF], act, sw2, sb2, DEPTH)
        acc = (f"vs per-pair 2-D quadrature (n={N_REF}): nngp {scaled_err(S[:, :N_REF, :N_REF], Sr):.1e}, "
               f"ntk {scaled_err(T[:, :N_REF, :N_REF], Tr):.1e} (max abs / max); "
               f"GH baseline vs ours: nngp {scaled_err(Sb, S[:, :N_SUB, :N_SUB]):.1e}")
    else:
        base = numpy_erf if act == "erf" else numpy_relu
        t_np, (Sb, Tb) = timed(base, X, sw2, sb2, DEPTH)
        m_np = peak_mb(base, X, sw2, sb2, DEPTH)
        np_note = ""
        acc = (f"max rel. diff vs numpy closed form: nngp {rel_err(S, Sb):.1e}, "
               f"ntk {rel_err(T, Tb):.1e}")
    print(f"{act:<10} {t_ours:>12.3f} {m_ours:>8.0f} {t_np:>12.3f} {m_np:>8.0f} "
          f"{t_np / t_ours:>8.1f}  {acc}{np_note}")


def raw_exact_reference(X, act, sw2, sb2, L):
    """Raw inputs with the 2-D quadrature for every pair (no Hermite series)."""
    n = X.shape[0]
    rec = KM.setup(get_activation(act), sw2, sb2, X, [(np.arange(n), np.arange(n), True)])
    assert not rec.shared
    rec.mode = KN.MODE_GENERAL
    S = np.empty((L, n, n))
    T = np.empty((L, n, n))
    rec.compute(L, [(S, T)])
    return S, T


def main():
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--raw", action="store_true",
                    help="raw inputs whose norms differ by up to +-15%% (as real features do) "
                         "instead of inputs on a sphere; runs erf, relu, gelu (closed forms), "
                         "tanh, silu and softplus (per-input series, exact rule as fallback)")
    ap.add_argument("--both", action="store_true",
                    help="inputs on a sphere, then raw inputs, in one run")
    ap.add_argument("--only", metavar="ACT[,ACT]",
                    help="run only these activations (e.g. --only erf,relu,tanh)")
    ap.add_argument("--nt-python", help="interpreter with neural-tangents and jax for the "
                                        "comparison column (default $MEANFIELD_NT_PYTHON)")
    args = ap.parse_args()
    rng = np.random.default_rng(2024)
    X = rng.standard_normal((N, DIM))
    X *= np.sqrt(DIM) / np.linalg.norm(X, axis=1, keepdims=True)
    Xraw = X * rng.uniform(0.85, 1.15, size=(N, 1))
    # Raw inputs without a closed form take the per-input Hermite series with the exact
    # 2-D rule as fallback (meanfield.core.gaussian.hermite).  softplus at (2, 0.05) is in
    # its unbounded phase (q^l grows ~0.5 per layer, c^l -> 1): past depth ~8 its pairs
    # take the Taylor series about c = 1 (meanfield.ntk.taylor); the pairs of elu and selu
    # near c = +-1, the angular table (meanfield.ntk.angular).
    raw_cases = [c for c in CASES if c[0] != "tanh"] + [("gelu", 2.0, 0.05), ("tanh", 2.0, 0.05),
                                                        ("silu", 2.0, 0.05),
                                                        ("softplus", 2.0, 0.05),
                                                        ("elu", 2.0, 0.05), ("selu", 1.0, 0.05)]
    nt = nt_python(args.nt_python)
    runs = ([("inputs on a sphere", X, CASES)] if not args.raw or args.both else [])
    if args.raw or args.both:
        runs.append(("raw inputs (norms +-15%)", Xraw, raw_cases))
    if args.only:
        wanted = set(args.only.split(","))
        runs = [(lb, Xs, [c for c in cs if c[0] in wanted]) for lb, Xs, cs in runs]
    for label, Xs, cases in runs:
        print(f"NNGP + NTK, n = {N}, d = {DIM}, depths 1..{DEPTH}, {label}; "
              f"{os.cpu_count()} cores, numba threads = {KN.nb.get_num_threads()}")
        run_cases(Xs, cases, nt)


if __name__ == "__main__":
    main()
