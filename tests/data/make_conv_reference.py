"""Reference CNN-GP/CNTK values from neural-tangents (float64) for tests/test_conv.py.

Run with an environment that has neural-tangents and jax (not a dependency of meanfield):

    python tests/data/make_conv_reference.py    # writes tests/data/conv_reference.json

For each case the network of depth l is
``stax.serial(*[Conv, phi] * (l - 1), Conv, Flatten() | GlobalAvgPool())`` with
``parameterization="ntk"``, stride 1, W_std = sqrt(sw2), b_std = sqrt(sb2).
The images are drawn from a fixed seed and stored with the values, so the test does not
depend on this script's random generator.
"""

import json
import os

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)
from neural_tangents import stax  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "conv_reference.json")
ACTS = {"erf": stax.Erf, "relu": stax.Relu}
# (activation, sw2, sb2): ordered, critical, chaotic for each
POINTS = [("erf", 0.8, 0.05), ("erf", 1.7, 0.1), ("erf", 4.0, 0.0),
          ("relu", 1.5, 0.2), ("relu", 2.0, 0.0), ("relu", 2.5, 0.1)]
DEPTH = 4


def network(act, sw2, sb2, k, padding, readout, depth):
    conv = stax.Conv(1, (k, k), strides=(1, 1), padding=padding, W_std=float(np.sqrt(sw2)),
                     b_std=float(np.sqrt(sb2)) if sb2 > 0 else None, parameterization="ntk")
    read = stax.Flatten() if readout == "flatten" else stax.GlobalAvgPool()
    layers = []
    for _ in range(depth - 1):
        layers += [conv, ACTS[act]()]
    return stax.serial(*layers, conv, read)


def main():
    rng = np.random.default_rng(20260415)
    X = rng.normal(size=(3, 5, 4, 2))
    X2 = rng.normal(size=(2, 5, 4, 2))
    cases = []
    for act, sw2, sb2 in POINTS:
        for padding in ("CIRCULAR", "SAME"):
            for readout in ("flatten", "gap"):
                nngp, ntk, nngp2, ntk2 = [], [], [], []
                for l in range(1, DEPTH + 1):
                    _, _, kfn = network(act, sw2, sb2, 3, padding, readout, l)
                    kk = kfn(X, None, ("nngp", "ntk"))
                    kx = kfn(X2, X, ("nngp", "ntk"))
                    nngp.append(np.asarray(kk.nngp).tolist())
                    ntk.append(np.asarray(kk.ntk).tolist())
                    nngp2.append(np.asarray(kx.nngp).tolist())
                    ntk2.append(np.asarray(kx.ntk).tolist())
                cases.append({"activation": act, "sw2": sw2, "sb2": sb2, "filter_size": 3,
                              "padding": padding.lower(), "readout": readout,
                              "nngp": nngp, "ntk": ntk, "nngp_cross": nngp2, "ntk_cross": ntk2})
    import neural_tangents
    with open(OUT, "w") as f:
        json.dump({"source": f"neural-tangents {neural_tangents.__version__}, jax "
                             f"{jax.__version__}, float64",
                   "X": X.tolist(), "X2": X2.tolist(), "depth": DEPTH, "cases": cases}, f)
    print(f"wrote {OUT}: {len(cases)} cases")


if __name__ == "__main__":
    main()
