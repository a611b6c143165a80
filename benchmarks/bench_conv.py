"""Benchmark: CNN-GP and CNTK of every depth 1..10 on scikit-learn's digits.

Run as ``python benchmarks/bench_conv.py [--n 200] [--depth 10] [--skip-numpy]`` from the
repository root.  Digits are 8 x 8 x 1 images (``sklearn.datasets.load_digits``;
scikit-learn is a dependency of meanfield), the first n of them, scaled so that the mean
of x^2 over images and pixels is 1.  Filter 3 x 3, circular padding, stride 1, both
readouts, erf / relu / tanh at the (sw2, sb2) of ``CASES``.

Beside :func:`meanfield.kernels` (all depths in one call) it runs, in the same run:

* neural-tangents (float64, ``jax.jit`` on the kernel function, its own ``nt.batch``
  batching of ``NT_BATCH`` images), when an interpreter with it is found: this one, or
  the one in ``$NT_PYTHON`` (default /work/ntvenv/bin/python), in a subprocess.  A network
  has one depth, so depths 1..L are L networks; the time of the depth-L network alone is
  printed too.  tanh has no closed form there: ``stax.ElementwiseNumerical(tanh, deg)``
  (Gauss-Hermite of degree ``NT_DEG``), whose own quadrature error shows in the difference.
  Without neural-tangents a message says so and the columns stay empty.
* a plain NumPy implementation of the same recursion (erf, relu closed forms; vectorized
  over all pairs for flatten, over blocks of image rows for GAP), written here.

Times: wall clock and the process CPU time (all threads).  meanfield after a warm-up call
on 8 images (which compiles or loads the Numba cache), neural-tangents after an identical
warm-up call (jax compiles there), NumPy without one (it compiles nothing).  The
machine is shared, so wall times vary with the other load; CPU time is the steadier
measure.  Differences: max |meanfield - other| over depths and pairs, for nngp and ntk,
relative to max |kernel|.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import meanfield as mf  # noqa: E402

CASES = [("erf", 1.7, 0.05), ("relu", 2.0, 0.05), ("tanh", 2.0, 0.05)]
READOUTS = ("flatten", "gap")
NT_BATCH = 25
NT_DEG = 25  # Gauss-Hermite degree per axis of ElementwiseNumerical (deg^2 nodes per entry)
NT_PYTHON = os.environ.get("NT_PYTHON", "/work/ntvenv/bin/python")


def digits(n):
    from sklearn.datasets import load_digits

    X = load_digits().images[:n].astype(np.float64)[..., None]
    return X / np.sqrt(np.mean(X ** 2))


def timed(fn, warm=None):
    """(result, wall seconds, process CPU seconds) of fn(), after the call warm() if given."""
    if warm is not None:
        warm()
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


# --------------------------------------------------------------------------- plain NumPy
def _erf(a, b, s):
    a1, a2 = 1 + 2 * a, 1 + 2 * b
    return 2 / np.pi * np.arcsin(np.clip(2 * s / np.sqrt(a1 * a2), -1, 1)), \
        4 / np.pi / np.sqrt(a1 * a2 - 4 * s * s)


def _relu(a, b, s):
    r = np.sqrt(a * b)
    c = np.clip(s / r, -1, 1)
    th = np.arccos(c)
    return r * (np.sin(th) + (np.pi - th) * c) / (2 * np.pi), (np.pi - th) / (2 * np.pi)


def _shift(M, H, W, diag=False):
    """sum over the 3 x 3 offsets d of M[..., p + d, p' + d] (circular), M (..., H, W, H, W),
    or of M[..., p + d] for the pixel-diagonal form (..., H, W) when ``diag``."""
    out = np.zeros_like(M)
    axes = (-2, -1) if diag else (-4, -3, -2, -1)
    for a in (-1, 0, 1):
        for b in (-1, 0, 1):
            out += np.roll(M, (-a, -b) if diag else (-a, -b, -a, -b), axis=axes)
    return out


def numpy_kernels(X, act, sw2, sb2, L, readout, block=8):
    expect = {"erf": _erf, "relu": _relu}[act]
    n, H, W, C = X.shape
    S_out = np.empty((L, n, n))
    T_out = np.empty((L, n, n))
    if readout == "flatten":
        S = sw2 / (9 * C) * _shift(np.einsum("ihwc,jhwc->ijhw", X, X), H, W, True) + sb2
        T = S.copy()
        for l in range(L):
            S_out[l], T_out[l] = S.mean(axis=(2, 3)), T.mean(axis=(2, 3))
            if l == L - 1:
                break
            v = np.einsum("iihw->ihw", S)
            K, Kd = expect(v[:, None], v[None, :], S)
            S = sw2 / 9 * _shift(K, H, W, True) + sb2
            T = S + sw2 / 9 * _shift(Kd * T, H, W, True)
        return S_out, T_out
    # GAP: blocks of rows i, all j; the variances come from the diagonal recursion
    _, _, v_all = _numpy_diag(X, expect, sw2, sb2, L)
    for i0 in range(0, n, block):
        Xi = X[i0:i0 + block]
        S = sw2 / (9 * C) * _shift(np.einsum("ihwc,jgvc->ijhwgv", Xi, X), H, W) + sb2
        T = S.copy()
        for l in range(L):
            S_out[l, i0:i0 + block] = S.mean(axis=(2, 3, 4, 5))
            T_out[l, i0:i0 + block] = T.mean(axis=(2, 3, 4, 5))
            if l == L - 1:
                break
            vi = v_all[l][i0:i0 + block][:, None, :, :, None, None]
            vj = v_all[l][None, :, None, None, :, :]
            K, Kd = expect(vi, vj, S)
            S = sw2 / 9 * _shift(K, H, W) + sb2
            T = S + sw2 / 9 * _shift(Kd * T, H, W)
    return S_out, T_out


def _numpy_diag(X, expect, sw2, sb2, L):
    """Sigma^l_pp(x, x) per image (the length map per pixel), l = 1..L."""
    C = X.shape[3]
    H, W = X.shape[1:3]
    v = sw2 / (9 * C) * _shift(np.einsum("ihwc,ihwc->ihw", X, X), H, W, True) + sb2
    out = [v]
    for _ in range(L - 1):
        K, _ = expect(v, v, v)
        v = sw2 / 9 * _shift(K, H, W, True) + sb2
        out.append(v)
    return None, None, out


# --------------------------------------------------------------------------- neural-tangents
NT_SCRIPT = r"""
import json, sys, time
import numpy as np
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
import neural_tangents as nt
from neural_tangents import stax
X = np.load(sys.argv[1]); spec = json.loads(sys.argv[2]); out = sys.argv[3]
act, sw2, sb2, L, readout, batch, deg = (spec[k] for k in
    ("act", "sw2", "sb2", "depth", "readout", "batch", "deg"))
phi = {"erf": stax.Erf, "relu": stax.Relu,
       "tanh": lambda: stax.ElementwiseNumerical(jnp.tanh, deg)}[act]
def net(l):
    conv = stax.Conv(1, (3, 3), strides=(1, 1), padding="CIRCULAR", W_std=sw2 ** 0.5,
                     b_std=sb2 ** 0.5, parameterization="ntk")
    layers = []
    for _ in range(l - 1):
        layers += [conv, phi()]
    read = stax.Flatten() if readout == "flatten" else stax.GlobalAvgPool()
    kfn = stax.serial(*layers, conv, read)[2]
    return nt.batch(jax.jit(kfn, static_argnames="get"), batch_size=batch, store_on_device=False)
fns = [net(l) for l in range(1, L + 1)]
def run(ls):
    res = []
    for l in ls:
        k = fns[l - 1](X, None, ("nngp", "ntk"))
        res.append((np.asarray(k.nngp), np.asarray(k.ntk)))
    return res
run(range(1, L + 1))  # warm-up: jit compilation
w, c = time.perf_counter(), time.process_time()
res = run(range(1, L + 1))
t_all = (time.perf_counter() - w, time.process_time() - c)
w, c = time.perf_counter(), time.process_time()
run([L])
t_last = (time.perf_counter() - w, time.process_time() - c)
np.savez(out, nngp=np.array([r[0] for r in res]), ntk=np.array([r[1] for r in res]),
         t_all=np.array(t_all), t_last=np.array(t_last))
"""


def neural_tangents(X, act, sw2, sb2, L, readout, tmp):
    """(nngp, ntk, (wall, cpu) for depths 1..L, (wall, cpu) for depth L) or None."""
    try:
        import neural_tangents  # noqa: F401
        py = sys.executable
    except ImportError:
        if not os.path.exists(NT_PYTHON):
            return None
        py = NT_PYTHON
    data = os.path.join(tmp, "x.npy")
    np.save(data, X)
    out = os.path.join(tmp, "nt.npz")
    n = X.shape[0]
    batch = max(b for b in range(1, NT_BATCH + 1) if n % b == 0)  # nt.batch needs a divisor
    spec = dict(act=act, sw2=sw2, sb2=sb2, depth=L, readout=readout, batch=batch, deg=NT_DEG)
    r = subprocess.run([py, "-c", NT_SCRIPT, data, json.dumps(spec), out],
                       capture_output=True, text=True)
    if r.returncode != 0:
        print("neural-tangents failed:", r.stderr.strip().splitlines()[-1])
        return None
    z = np.load(out)
    return z["nngp"], z["ntk"], tuple(z["t_all"]), tuple(z["t_last"])


def rel(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--depth", type=int, default=10)
    ap.add_argument("--skip-numpy", action="store_true")
    ap.add_argument("--skip-nt", action="store_true")
    ap.add_argument("--only", help="comma-separated activations")
    ap.add_argument("--readouts", default="flatten,gap")
    ap.add_argument("--nt-tanh-gap", action="store_true")
    ap.add_argument("--nt-acts", default="erf,relu,tanh",
                    help="activations to run neural-tangents on (tanh's quadrature is slow)")
    args = ap.parse_args()
    X = digits(args.n)
    L = args.depth
    print(f"digits: {X.shape} images, filter 3x3 circular, depths 1..{L}; "
          f"times: wall / process CPU seconds (all threads), after a warm-up call")
    have_nt = not args.skip_nt and neural_tangents(X[:2], "erf", 1.0, 0.0, 1, "flatten",
                                                   tempfile.mkdtemp()) is not None
    if not have_nt and not args.skip_nt:
        print("neural-tangents not found (set NT_PYTHON to an interpreter that has it): "
              "its columns are empty")
    head = (f"{'act':5} {'readout':8} {'meanfield':>15} {'neural-tangents 1..L':>21} "
            f"{'NT depth L':>15} {'numpy':>15}  max rel diff nngp/ntk vs NT, vs numpy")
    print(head)
    acts = args.only.split(",") if args.only else [c[0] for c in CASES]
    for act, sw2, sb2 in CASES:
        if act not in acts:
            continue
        for readout in args.readouts.split(","):
            arch = mf.Conv(3, "circular", readout)
            ds, w, c = timed(lambda: mf.kernels(X, act, sw2, sb2, L, architecture=arch),
                             lambda: mf.kernels(X[:8], act, sw2, sb2, L, architecture=arch))
            S, T = ds.nngp.values, ds.ntk.values
            row = f"{act:5} {readout:8} {w:7.2f}/{c:7.2f}"
            notes = []
            if have_nt and act == "tanh" and readout == "gap" and not args.nt_tanh_gap:
                row += f" {'skipped':>21} {'':>15}"
                notes.append("NT tanh GAP skipped (ElementwiseNumerical: deg^2 evaluations per "
                             "pixel pair; --nt-tanh-gap runs it)")
            elif have_nt and act not in args.nt_acts.split(","):
                row += f" {'not run':>21} {'':>15}"
            elif have_nt:
                with tempfile.TemporaryDirectory() as tmp:
                    r = neural_tangents(X, act, sw2, sb2, L, readout, tmp)
                if r is None:
                    row += f" {'failed':>21} {'':>15}"
                else:
                    ns, nk, ta, tl = r
                    row += f" {ta[0]:10.2f}/{ta[1]:10.2f} {tl[0]:7.2f}/{tl[1]:7.2f}"
                    notes.append(f"NT {rel(S, ns):.1e}/{rel(T, nk):.1e}")
            else:
                row += f" {'-':>21} {'-':>15}"
            if act in ("erf", "relu") and not args.skip_numpy:
                (ps, pt), w2, c2 = timed(lambda: numpy_kernels(X, act, sw2, sb2, L, readout))
                row += f" {w2:7.2f}/{c2:7.2f}"
                notes.append(f"numpy {rel(S, ps):.1e}/{rel(T, pt):.1e}")
            else:
                row += f" {'-':>15}"
            print(row + "  " + ", ".join(notes) + f"  [{ds.attrs['method']}]", flush=True)


if __name__ == "__main__":
    main()
