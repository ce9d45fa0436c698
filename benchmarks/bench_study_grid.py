"""Benchmark: the original study's 96-run grid on the 80-lesion table, vectorised vs a per-example loop.

    python benchmarks/bench_study_grid.py [--table ../shared/data/sdmet31/train.csv] [--cv]

Grid: networks 31-6-1 and 31-7-3-1 x modes batch / stochastic / mini-batch (16) x the study's learning
rates 0.001, 0.005, 0.0075, 0.01 x its iterations 5,000, 10,000, 20,000, 50,000 (an iteration is an
epoch: stochastic at 50,000 iterations is 80 x 50,000 = 4 million updates). ``--recipe study`` times
the original recipe (float64, its start, shuffles and L2 normalisation) instead of SpineAI's.

- vectorised: ``spineai.models.study.train_grid_all`` (compiled loop, runs batched over a run axis,
  shorter iteration counts as snapshots of the longer run; numba when installed). ``--cv`` also times
  the 5-fold cross-validated grid (480 trainings) that ``spineai study`` scores.
- baseline: the study's style, a plain per-example numpy loop, one run at a time. Running it for the
  whole grid would take hours, so it is run for a short sample of epochs per network and mode and
  EXTRAPOLATED linearly to the grid's epoch counts (the per-epoch cost of such a loop is constant);
  the printout says so.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from spineai.models import gridtrain  # noqa: E402
from spineai.models.study import ITERATIONS, LEARNING_RATES, NETWORKS, STUDY_MODES, run_grid, train_grid_all  # noqa: E402
from spineai.models.training import load_dataset  # noqa: E402


def baseline_epochs(X, y, sizes, mode, lr, epochs, seed=0):
    """Per-example numpy loop: forward, backward, and (per mode) update, one sample at a time."""
    rng = np.random.default_rng(seed)
    Ws, bs = [], []
    for fi, fo in zip(sizes[:-1], sizes[1:]):
        lim = np.sqrt(6 / (fi + fo))
        Ws.append(rng.uniform(-lim, lim, (fo, fi)))
        bs.append(np.zeros(fo))
    n = len(y)
    batch = {"stochastic": 1, "minibatch": 16, "batch": n}[mode]
    for _ in range(epochs):
        gW = [np.zeros_like(W) for W in Ws]
        gb = [np.zeros_like(b) for b in bs]
        cnt = 0
        for t, s in enumerate(rng.permutation(n)):
            acts = [X[s]]
            for li, (W, b) in enumerate(zip(Ws, bs)):
                z = W @ acts[-1] + b
                acts.append(np.tanh(z) if li < len(Ws) - 1 else 1 / (1 + np.exp(-z)))
            delta = acts[-1] - y[s]
            for li in range(len(Ws) - 1, -1, -1):
                gW[li] += np.outer(delta, acts[li])
                gb[li] += delta
                if li:
                    delta = (Ws[li].T @ delta) * (1 - acts[li] ** 2)
            cnt += 1
            if cnt == batch or t == n - 1:
                for li in range(len(Ws)):
                    Ws[li] -= lr / cnt * gW[li]
                    bs[li] -= lr / cnt * gb[li]
                    gW[li][:] = 0
                    gb[li][:] = 0
                cnt = 0
    return Ws, bs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--table", default=os.path.join(os.environ.get("SPINEAI_TEST_DATA", "../shared/data"), "sdmet31", "train.csv"))
    ap.add_argument("--baseline-epochs", type=int, default=20)
    ap.add_argument("--cv", action="store_true", help="also time the 5-fold CV grid of `spineai study`")
    ap.add_argument("--recipe", choices=["improved", "study"], default="improved")
    a = ap.parse_args(argv)
    ds = load_dataset(a.table, "diagnosis")
    X, y = ds.X, ds.y
    print(f"table {a.table}: {X.shape[0]} lesions x {X.shape[1]} features; {os.cpu_count()} cores; "
          f"engine {'numba' if gridtrain.numba_available() else 'numpy (numba not installed)'}")
    train_grid_all(X, y, 2, iterations=(2,), recipe=a.recipe)  # compile (cached on disk after the first time)
    res = train_grid_all(X, y, 2, recipe=a.recipe)
    total_epochs = len(NETWORKS) * len(STUDY_MODES) * len(LEARNING_RATES) * sum(ITERATIONS)
    print(f"vectorised grid: {res['runs']} runs in {res['seconds']:.1f} s = {res['seconds'] / res['runs']:.3f} s per run "
          f"({total_epochs * len(y) / 1e6:.0f} million sample passes in the grid as specified)")
    lo, span = X.min(0), np.ptp(X, 0)
    Z = (X - lo) / span
    est = 0.0
    per = {}
    for net, hidden in (("mlp-a", (6,)), ("mlp-b", (7, 3))):
        for mode in STUDY_MODES:
            t = time.perf_counter()
            baseline_epochs(Z, y, (31, *hidden, 1), mode, 0.0075, a.baseline_epochs)
            sec_per_epoch = (time.perf_counter() - t) / a.baseline_epochs
            per[(net, mode)] = sec_per_epoch
            est += sec_per_epoch * len(LEARNING_RATES) * sum(ITERATIONS)
    print(f"baseline per-example numpy loop: measured on {a.baseline_epochs} epochs per network and mode, "
          f"{1e3 * np.mean(list(per.values())):.1f} ms per epoch; EXTRAPOLATED to the grid: {est:.0f} s "
          f"= {est / 96:.1f} s per run ({est / 3600:.1f} h)")
    print(f"speed-up: {est / res['seconds']:.0f}x  (target: whole grid under 60 s: "
          f"{'met' if res['seconds'] < 60 else 'NOT met'})")
    if a.cv:
        t = time.perf_counter()
        g = run_grid(X, y, 2, folds=5, n_boot=1000, recipe=a.recipe)
        print(f"5-fold CV grid as `spineai study` scores it: {g.n_runs} runs x 5 folds = {g.n_runs * 5} trainings + "
              f"bootstrap CIs in {time.perf_counter() - t:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
