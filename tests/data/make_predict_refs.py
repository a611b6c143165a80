"""Reference predictions from neural-tangents for tests/test_predict.py.

Run with the separate environment that has neural-tangents 0.6.5 and jax (CPU, float64)::

    /work/ntvenv/bin/python tests/data/make_predict_refs.py

It writes ``predict_refs.npz``: the inputs (seeded), and for erf and relu, NNGP and NTK, t =
None and finite times, the mean and the diagonal of the covariance that
``neural_tangents.predict.gradient_descent_mse_ensemble`` returns for the network
``stax.serial(Dense, *[phi, Dense] * (L - 1))`` in the NTK parameterization (its output is the
layer-L pre-activation: depth L in meanfield's convention).  The tests never import
neural-tangents.
"""

import os

import numpy as np
import jax

jax.config.update("jax_enable_x64", True)
import neural_tangents as nt  # noqa: E402
from neural_tangents import stax  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
N_TRAIN, N_TEST, DIM, OUTPUTS = 24, 9, 6, 3
DEPTHS = (1, 2, 4, 7)
TIMES = np.array([0.0, 3.0, 40.0, 1e4])
CASES = {"erf": (stax.Erf(), 1.6, 0.05), "relu": (stax.Relu(), 1.8, 0.1)}
DIAG_REGS = (0.0, 1e-3)


def data():
    rng = np.random.default_rng(7)
    Xtr = rng.normal(size=(N_TRAIN, DIM)) * rng.uniform(0.7, 1.3, size=(N_TRAIN, 1))
    Xte = rng.normal(size=(N_TEST, DIM)) * rng.uniform(0.7, 1.3, size=(N_TEST, 1))
    Y = np.eye(OUTPUTS)[rng.integers(0, OUTPUTS, N_TRAIN)] - 1.0 / OUTPUTS
    return Xtr, Y, Xte


def network(phi, sw2, sb2, L):
    def dense():
        return stax.Dense(1, W_std=float(np.sqrt(sw2)), b_std=float(np.sqrt(sb2)),
                          parameterization="ntk")
    layers = [dense()]
    for _ in range(L - 1):
        layers += [phi, dense()]
    return stax.serial(*layers)[2]


def main():
    Xtr, Y, Xte = data()
    out = {"X_train": Xtr, "y_train": Y, "X_test": Xte, "depths": np.array(DEPTHS),
           "times": TIMES, "diag_regs": np.array(DIAG_REGS)}
    for name, (phi, sw2, sb2) in CASES.items():
        out[f"{name}_params"] = np.array([sw2, sb2])
        for L in DEPTHS:
            kfn = network(phi, sw2, sb2, L)
            for r, reg in enumerate(DIAG_REGS):
                fn = nt.predict.gradient_descent_mse_ensemble(kfn, Xtr, Y, diag_reg=reg)
                for get in ("nngp", "ntk"):
                    g_inf = fn(None, Xte, get, compute_cov=True)
                    g_t = fn(TIMES, Xte, get, compute_cov=True)
                    key = f"{name}_{get}_L{L}_r{r}"
                    out[key + "_inf_mean"] = np.asarray(g_inf.mean)
                    out[key + "_inf_var"] = np.diagonal(np.asarray(g_inf.covariance))
                    out[key + "_t_mean"] = np.asarray(g_t.mean)
                    out[key + "_t_var"] = np.diagonal(np.asarray(g_t.covariance), axis1=1, axis2=2)
    np.savez_compressed(os.path.join(HERE, "predict_refs.npz"), **out)
    print(f"wrote predict_refs.npz ({len(out)} arrays), neural-tangents {nt.__version__}")


if __name__ == "__main__":
    main()
