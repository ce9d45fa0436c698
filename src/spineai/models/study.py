"""The original study's grid, rerun honestly, next to the improved pipeline and the comparators.

Grid: networks A = 31-6-1 and B = 31-7-3-1 (tanh, sigmoid, binary cross-entropy; softmax head for
more classes) x modes batch / stochastic / mini-batch (b = 16) x 4 learning rates x 4 iteration
counts = 96 runs, min-max scaling fitted on each training fold as in the study. Every run is scored
on the same stratified k-fold out-of-fold predictions, with bootstrap 95 % CIs.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from spineai.errors import SpineAIError
from spineai.output import refuse_existing, write_output_folder
from spineai.models import gridtrain
from spineai.models.estimators import HIDDEN, MODES, default_config
from spineai.models.evaluation import (
    METRICS, bootstrap_weights, metrics_with_ci, split_indices, weighted_metrics,
)

NETWORKS = ("mlp-a", "mlp-b")
STUDY_MODES = ("batch", "stochastic", "minibatch")
LEARNING_RATES = (0.001, 0.0025, 0.0075, 0.01)
ITERATIONS = (5000, 10000, 25000, 50000)


@dataclass
class GridResult:
    rows: list[dict]  # one per run: network, mode, lr, iterations, metrics with CIs
    curves: dict  # (network, mode, lr) -> {"epoch", "train_loss", "test_loss"}
    probs: dict  # run key -> out-of-fold probabilities (n, K)
    seconds: float
    engine: str
    n_runs: int
    extra: dict = field(default_factory=dict)


def run_key(net, mode, lr, it) -> str:
    return f"{net}|{mode}|{lr:g}|{it}"


def run_grid(X: np.ndarray, y: np.ndarray, n_classes: int, folds: int = 5, seed: int = 0,
             networks: Sequence[str] = NETWORKS, modes: Sequence[str] = STUDY_MODES,
             learning_rates: Sequence[float] = LEARNING_RATES, iterations: Sequence[int] = ITERATIONS,
             n_boot: int = 1000, groups: np.ndarray | None = None, curve_points: int = 30,
             dtype=np.float32, use_numba: bool | None = None, threads: int | None = None, progress=None) -> GridResult:
    """Train and score the whole grid; runs of one network train together (see ``gridtrain``)."""
    t0 = time.perf_counter()
    for m in modes:
        if m not in STUDY_MODES:
            raise SpineAIError(f"unknown mode {m!r}: {', '.join(STUDY_MODES)}")
    iterations = sorted({int(i) for i in iterations})
    if iterations[0] < 1:
        raise SpineAIError("iteration counts must be positive")
    splits = split_indices(y, folds, seed, groups)
    n, d = X.shape
    # Stack each fold's min-max scaled copy of X: fold f's rows are f*n .. f*n+n-1.
    Xs, tests = [], []
    for f, (tr, te) in enumerate(splits):
        lo, span = X[tr].min(0), np.ptp(X[tr], axis=0)
        Xs.append((X - lo) / np.where(span > 0, span, 1.0))
        tests.append(te)
    Xstack = np.vstack(Xs)
    Y = y.reshape(-1, 1).astype(float) if n_classes == 2 else np.eye(n_classes)[y]
    Ystack = np.vstack([Y] * folds)
    train_sets = [tr + f * n for f, (tr, _) in enumerate(splits)]
    E = iterations[-1]
    snaps = np.unique(np.concatenate([np.array(iterations),
                                      np.unique(np.geomspace(1, E, curve_points).astype(int))]))
    combos = [(m, lr) for m in modes for lr in learning_rates]
    jobs = []
    for net in networks:
        sizes = (d, *HIDDEN[net], 1 if n_classes == 2 else n_classes)
        run_fold = np.repeat(np.arange(folds), len(combos))
        lr = np.tile([c[1] for c in combos], folds)
        bs = np.tile([MODES[c[0]] or n for c in combos], folds)
        jobs.append(dict(X=Xstack, Y=Ystack, sizes=sizes, train_sets=train_sets, run_fold=run_fold,
                         init=gridtrain.glorot_init(sizes, seed + (1 if net == "mlp-b" else 0)), learning_rates=lr,
                         batch_sizes=bs, snapshot_epochs=snaps, seed=seed, dtype=dtype, use_numba=use_numba))
    results = gridtrain.run_jobs(jobs, threads)
    train_seconds = time.perf_counter() - t0
    W = bootstrap_weights(n, n_boot, seed, groups) if n_boot else None
    rows, curves, probs = [], {}, {}
    for net, job, res in zip(networks, jobs, results):
        sizes = job["sizes"]
        for ci, (mode, lr) in enumerate(combos):
            curve = {"epoch": snaps.tolist(), "train_loss": [], "test_loss": []}
            oof = np.zeros((len(snaps), n, n_classes))
            tr_loss = np.zeros(len(snaps))
            te_loss = np.zeros(len(snaps))
            for f in range(folds):
                r = f * len(combos) + ci
                P = res.snapshots[:, :, r].T.astype(np.float64)  # (n_params, S)
                out = gridtrain.forward_flat(P, sizes, Xs[f])  # (S, n, O)
                pr = np.concatenate([1 - out, out], axis=2) if n_classes == 2 else out
                te, tr = tests[f], splits[f][0]
                oof[:, te] = pr[:, te]
                tr_loss += gridtrain.cross_entropy(out[:, tr], Y[tr]) * len(tr)
                te_loss += gridtrain.cross_entropy(out[:, te], Y[te]) * len(te)
            curve["train_loss"] = (tr_loss / sum(len(s[0]) for s in splits)).tolist()
            curve["test_loss"] = (te_loss / n).tolist()
            curves[f"{net}|{mode}|{lr:g}"] = curve
            for it in iterations:
                s = int(np.flatnonzero(snaps == it)[0])
                p = oof[s]
                key = run_key(net, mode, lr, it)
                probs[key] = p
                m = metrics_with_ci(p, y, n_boot, seed, groups, W=W) if n_boot else \
                    {k: {"value": float(v[0])} for k, v in weighted_metrics(p, y, np.ones((1, n))).items()}
                rows.append({"network": net, "mode": mode, "learning_rate": lr, "iterations": it, "metrics": m})
            if progress is not None:
                progress(len(rows), len(networks) * len(combos) * len(iterations), "grid")
    return GridResult(rows, curves, probs, time.perf_counter() - t0,
                      "numba" if (use_numba if use_numba is not None else gridtrain.numba_available()) else "numpy",
                      len(rows), {"train_seconds": train_seconds, "folds": folds, "splits_seed": seed})


def train_grid_all(X: np.ndarray, y: np.ndarray, n_classes: int, seed: int = 0, networks: Sequence[str] = NETWORKS,
                   modes: Sequence[str] = STUDY_MODES, learning_rates: Sequence[float] = LEARNING_RATES,
                   iterations: Sequence[int] = ITERATIONS, dtype=np.float32, use_numba: bool | None = None,
                   threads: int | None = None) -> dict:
    """The grid as the study ran it: every run trained once on the whole table (min-max scaled), no
    evaluation. Returns {run key: flat parameters} and the seconds taken; the benchmark's subject."""
    t0 = time.perf_counter()
    iterations = sorted({int(i) for i in iterations})
    lo, span = X.min(0), np.ptp(X, axis=0)
    Z = (X - lo) / np.where(span > 0, span, 1.0)
    Y = y.reshape(-1, 1).astype(float) if n_classes == 2 else np.eye(n_classes)[y]
    combos = [(m, lr) for m in modes for lr in learning_rates]
    jobs = []
    for net in networks:
        sizes = (X.shape[1], *HIDDEN[net], 1 if n_classes == 2 else n_classes)
        jobs.append(dict(X=Z, Y=Y, sizes=sizes, train_sets=[np.arange(len(y))], run_fold=np.zeros(len(combos), int),
                         init=gridtrain.glorot_init(sizes, seed + (1 if net == "mlp-b" else 0)),
                         learning_rates=np.array([c[1] for c in combos]),
                         batch_sizes=np.array([MODES[c[0]] or len(y) for c in combos]),
                         snapshot_epochs=np.array(iterations), seed=seed, dtype=dtype, use_numba=use_numba))
    results = gridtrain.run_jobs(jobs, threads)
    params = {}
    for net, res in zip(networks, results):
        for ci, (mode, lr) in enumerate(combos):
            for s, it in enumerate(iterations):
                params[run_key(net, mode, lr, it)] = res.snapshots[s, :, ci].astype(np.float64)
    return {"params": params, "seconds": time.perf_counter() - t0, "runs": len(params)}


def improved_configs() -> dict[str, object]:
    """The study's "next steps" switched on, and the comparators, at fixed, stated settings."""
    return {
        "improved mlp-b": default_config("mlp-b", scaling="standard", optimizer="adam", mode="batch", learning_rate=0.01,
                                         iterations=300, early_stopping=True, class_weights=True),
        "logreg": default_config("logreg", C=0.1),
        "svm": default_config("svm"),
        "rf": default_config("rf"),
        "xgboost": default_config("xgboost"),
    }


def run_study(table, label_column: str, out_dir: str | os.PathLike, *, folds: int = 5, seed: int = 0,
              n_boot: int = 1000, iterations: Sequence[int] = ITERATIONS, learning_rates: Sequence[float] = LEARNING_RATES,
              with_auto: bool = False, group_column: str | None = None, exclude: Sequence[str] = (),
              impute: str | None = None, overwrite: bool = False, progress=None) -> dict:
    """Run the grid, the improved pipeline and the comparators on the same folds; write
    ``out_dir`` (report.html, PNG plots, grid.csv, study.json) atomically. Returns the summary."""
    from spineai.models.report import write_study_report
    from spineai.models.training import evaluate_config, load_dataset, nested_cv, auto_candidates

    out_dir = refuse_existing(out_dir, overwrite)
    ds = load_dataset(table, label_column, group_column, exclude, None, impute, None, folds)
    K = len(ds.classes)
    grid = run_grid(ds.X, ds.y, K, folds, seed, iterations=iterations, learning_rates=learning_rates,
                    n_boot=n_boot, groups=ds.groups, progress=progress)
    others = {}
    t0 = time.perf_counter()
    for name, cfg in improved_configs().items():
        r = evaluate_config(ds, cfg, folds, 1, seed, n_boot)
        others[name] = r
    if with_auto:
        r, chosen = nested_cv(ds, auto_candidates(K), folds, 3, seed, n_boot)
        r.extra["outer_fold_choices"] = chosen
        others["auto (nested CV)"] = r
    others_seconds = time.perf_counter() - t0
    summary = {
        "table": os.path.basename(ds.source), "label_column": label_column, "classes": ds.classes,
        "n_samples": int(len(ds.y)), "class_counts": {c: int((ds.y == k).sum()) for k, c in enumerate(ds.classes)},
        "folds": folds, "seed": seed, "bootstrap": n_boot,
        "grid": {"rows": grid.rows, "seconds": round(grid.seconds, 2), "train_seconds": round(grid.extra["train_seconds"], 2),
                 "engine": grid.engine, "runs": grid.n_runs, "curves": grid.curves},
        "others": {k: v.summary() for k, v in others.items()}, "others_seconds": round(others_seconds, 2),
    }
    write_output_folder(out_dir, lambda tmp: write_study_report(tmp, summary, grid, others, ds), overwrite)
    return summary


def best_rows(rows: list[dict], metric: str = "auc", top: int = 5) -> list[dict]:
    return sorted(rows, key=lambda r: -r["metrics"][metric]["value"])[:top]


def grid_csv_lines(rows: list[dict]) -> list[str]:
    head = ["network", "mode", "learning_rate", "iterations"]
    for m in METRICS:
        head += [m, f"{m}_ci_low", f"{m}_ci_high"]
    lines = [",".join(head)]
    for r in rows:
        vals = [r["network"], r["mode"], f"{r['learning_rate']:g}", str(r["iterations"])]
        for m in METRICS:
            d = r["metrics"][m]
            vals += [f"{d['value']:.4f}", f"{d.get('ci_low', float('nan')):.4f}", f"{d.get('ci_high', float('nan')):.4f}"]
        lines.append(",".join(vals))
    return lines


def to_json(summary: dict) -> str:
    return json.dumps(summary, indent=1, default=float)
