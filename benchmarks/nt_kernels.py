"""neural-tangents' NNGP + NTK of every depth 1..L on given inputs: the comparison column of
``bench_kernels.py``.  Runs under an interpreter that has neural-tangents and jax (float64):

    python benchmarks/nt_kernels.py ACT SW2 SB2 L INPUTS.npy OUT.npz

Network: ``stax.Dense(parameterization="ntk")`` then (phi, Dense) L - 1 times, so its kernels
are Sigma^l and Theta^l of docs/theory.md at l = 1..L.  Prints one JSON line with the best of
three jitted runs (after a warm-up that compiles); writes the deepest layer's kernels to OUT.
"""

import json
import sys
import time

import numpy as np


def main():
    import jax

    jax.config.update("jax_enable_x64", True)
    from neural_tangents import stax

    act, sw2, sb2, L, src, dst = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), \
        int(sys.argv[4]), sys.argv[5], sys.argv[6]
    phis = {"erf": stax.Erf, "relu": stax.Relu, "gelu": lambda: stax.Gelu(approximate=False)}
    if act not in phis:
        print(json.dumps({"skipped": f"no closed-form {act} kernel in neural-tangents"}))
        return
    X = jax.numpy.asarray(np.load(src))

    def dense():
        return stax.Dense(1, W_std=float(np.sqrt(sw2)), b_std=float(np.sqrt(sb2)),
                          parameterization="ntk")

    first = jax.jit(lambda x: dense()[2](x, None))
    layer = jax.jit(stax.serial(phis[act](), dense())[2])

    def run():
        k = first(X)
        out = [(k.nngp, k.ntk)]
        for _ in range(L - 1):
            k = layer(k)
            out.append((k.nngp, k.ntk))
        jax.block_until_ready(out)
        return out

    run()
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        out = run()
        best = min(best, time.perf_counter() - t)
    np.savez(dst, nngp=np.asarray(out[-1][0]), ntk=np.asarray(out[-1][1]))
    print(json.dumps({"seconds": best, "version": __import__("neural_tangents").__version__}))


if __name__ == "__main__":
    main()
