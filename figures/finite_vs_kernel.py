"""The README table: a trained finite network beside its NNGP / NTK predictors on one split.

    python figures/finite_vs_kernel.py

tanh, sb2 = 0.05, at an ordered, the critical and a chaotic sw2, at depth 16 (or the depths
given as arguments); digits split 200 / 200 (seed 0) as in figures/generalization_tanh.png.
Prints a Markdown table.  Depth 16 takes ~3 CPU minutes, deeper networks proportionally more;
on a loaded machine set OPENBLAS_NUM_THREADS=1 (the matrices are small: threads only wait).
"""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import meanfield as mf  # noqa: E402
from meanfield.experiments.generalization import digits_split, finite_network  # noqa: E402

SB2, N_TRAIN, N_TEST, WIDTH, STEPS = 0.05, 200, 200, 128, 2000
DEPTHS = (16,)


def main():
    sc = mf.critical_sw2("tanh", SB2)
    points = {"ordered": 1.2, "critical": sc, "chaotic": 3.0}
    w = np.array(list(points.values()))
    Xtr, Ytr, Xte, yte, _ = digits_split(N_TRAIN, N_TEST, 0)
    print(f"| phase | sw2 | xi_c | depth | finite net (width {WIDTH}, {STEPS} SGD steps, MSE) "
          f"| NNGP | NTK |")
    print("|---|---|---|---|---|---|---|")
    for L in [int(a) for a in sys.argv[1:]] or DEPTHS:
        fin = finite_network("tanh", w, SB2, L, width=WIDTH, steps=STEPS, n_train=N_TRAIN,
                             n_test=N_TEST)
        for k, (phase, s) in enumerate(points.items()):
            out = mf.ntk.prediction.predictions(Xtr, Ytr, Xte, "tanh", s, SB2, L, depths=[L])
            acc = {g: float(np.mean(np.argmax(o.prediction.values[0], -1) == yte))
                   for g, o in out.items()}
            xi = mf.analyze("tanh", s, SB2).xi_c
            print(f"| {phase} | {s:.3g} | {xi:.3g} | {L} | {fin[k]:.3f} | {acc['nngp']:.3f} | "
                  f"{acc['ntk']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
