"""The original study's grid, rerun honestly, next to SpineAI's own pipeline and the comparators.

Grid: networks A = 31-6-1 and B = 31-7-3-1 (tanh, sigmoid, binary cross-entropy; softmax head for
more classes) x modes batch / stochastic / mini-batch (b = 16) x the study's learning rates 0.001,
0.005, 0.0075, 0.01 x its iteration counts 5,000, 10,000, 20,000, 50,000 = 96 runs. Every run is
scored on the same stratified k-fold out-of-fold predictions, with bootstrap 95 % CIs.

Two recipes train the grid:

- ``study``: the original, quirks included: N(0, 1) weights after ``np.random.seed(14)``, per-epoch
  shuffles from ``np.random.seed(10 + epoch)``, complete mini-batches then a partial one, float64,
  the original's output gradient (NaN once the sigmoid saturates; reported, not hidden), and its
  normalisation: the first 30 of the 31 columns divided by their L2 norms, the 31st left raw, each
  table by *its own* norms. That last step is transductive: the test fold is scaled with the test
  fold's norms, so one new case cannot be scored this way, and its figures are not those of a
  deployable model.
- ``improved`` (SpineAI's own): min-max scaling fitted on the training fold only, Glorot-uniform
  weights, seeded shuffles, float32; what ``spineai train --model mlp-a|mlp-b`` does.
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
LEARNING_RATES = (0.001, 0.005, 0.0075, 0.01)  # the study's write-up
ITERATIONS = (5000, 10000, 20000, 50000)
RECIPES = ("study", "improved")
STUDY_NORMALISED_COLUMNS = 30  # the study L2-normalised the first 30 of its 31 columns


def l2_normalise(X: np.ndarray) -> np.ndarray:
    """The study's normalisation of one table by its own column norms (first 30 columns only)."""
    Z = np.array(X, dtype=np.float64)
    k = min(STUDY_NORMALISED_COLUMNS, Z.shape[1])
    norms = np.linalg.norm(Z[:, :k], axis=0)
    Z[:, :k] /= np.where(norms > 0, norms, 1.0)
    return Z


def _recipe_scaled(X: np.ndarray, tr: np.ndarray, te: np.ndarray, recipe: str) -> np.ndarray:
    """X scaled for one fold: rows ``tr`` as the model trains on them, rows ``te`` as it is tested."""
    if recipe == "study":
        Z = np.empty_like(X, dtype=np.float64)
        Z[tr], Z[te] = l2_normalise(X[tr]), l2_normalise(X[te])  # transductive, as the study did
        return Z
    lo, span = X[tr].min(0), np.ptp(X[tr], axis=0)
    return (X - lo) / np.where(span > 0, span, 1.0)


def _recipe_training(recipe: str, net: str, sizes, train_sets, epochs: int, seed: int, dtype) -> dict:
    """Initial weights, sample orders and arithmetic of a recipe (train_runs keywords). ``seed``
    0 is the study's own start (seed 14) in the study recipe."""
    if recipe == "study":
        return dict(init=gridtrain.study_init(sizes, 14 + seed), order=gridtrain.study_epoch_orders(train_sets, epochs),
                    exact=True, dtype=np.float64)
    return dict(init=gridtrain.glorot_init(sizes, seed + (1 if net == "mlp-b" else 0)), order=None, exact=False,
                dtype=dtype)


def _check_recipe(recipe: str) -> None:
    if recipe not in RECIPES:
        raise SpineAIError(f"unknown recipe {recipe!r}: study (the original, transductive) or improved (SpineAI's)")


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
             dtype=np.float32, use_numba: bool | None = None, threads: int | None = None, progress=None,
             recipe: str = "improved") -> GridResult:
    """Train and score the whole grid; runs of one network train together (see ``gridtrain``).

    A run whose weights become NaN (the study recipe's saturated sigmoid) is kept with NaN metrics
    and the first snapshot epoch at which it was NaN (``nan_from_epoch``)."""
    _check_recipe(recipe)
    t0 = time.perf_counter()
    for m in modes:
        if m not in STUDY_MODES:
            raise SpineAIError(f"unknown mode {m!r}: {', '.join(STUDY_MODES)}")
    iterations = sorted({int(i) for i in iterations})
    if iterations[0] < 1:
        raise SpineAIError("iteration counts must be positive")
    splits = split_indices(y, folds, seed, groups)
    n, d = X.shape
    # Stack each fold's scaled copy of X: fold f's rows are f*n .. f*n+n-1.
    Xs, tests = [], []
    for f, (tr, te) in enumerate(splits):
        Xs.append(_recipe_scaled(X, tr, te, recipe))
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
        jobs.append(dict(X=Xstack, Y=Ystack, sizes=sizes, train_sets=train_sets, run_fold=run_fold, learning_rates=lr,
                         batch_sizes=bs, snapshot_epochs=snaps, seed=seed, use_numba=use_numba,
                         **_recipe_training(recipe, net, sizes, train_sets, E, 0 if recipe == "study" else seed, dtype)))
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
            finite = np.array([np.isfinite(res.snapshots[k, :, [f * len(combos) + ci for f in range(folds)]]).all()
                               for k in range(len(snaps))])
            for it in iterations:
                s = int(np.flatnonzero(snaps == it)[0])
                p = oof[s]
                key = run_key(net, mode, lr, it)
                probs[key] = p
                row = {"network": net, "mode": mode, "learning_rate": lr, "iterations": it}
                if not finite[: s + 1].all():
                    row["nan_from_epoch"] = int(snaps[int(np.argmin(finite))])
                    m = {k: {"value": None, "ci_low": None, "ci_high": None} for k in METRICS}
                elif n_boot:
                    m = metrics_with_ci(p, y, n_boot, seed, groups, W=W)
                else:
                    m = {k: {"value": float(v[0])} for k, v in weighted_metrics(p, y, np.ones((1, n))).items()}
                rows.append({**row, "metrics": m})
            if progress is not None:
                progress(len(rows), len(networks) * len(combos) * len(iterations), "grid")
    return GridResult(rows, curves, probs, time.perf_counter() - t0,
                      "numba" if (use_numba if use_numba is not None else gridtrain.numba_available()) else "numpy",
                      len(rows), {"train_seconds": train_seconds, "folds": folds, "splits_seed": seed, "recipe": recipe})


def train_grid_all(X: np.ndarray, y: np.ndarray, n_classes: int, seed: int = 0, networks: Sequence[str] = NETWORKS,
                   modes: Sequence[str] = STUDY_MODES, learning_rates: Sequence[float] = LEARNING_RATES,
                   iterations: Sequence[int] = ITERATIONS, dtype=np.float32, use_numba: bool | None = None,
                   threads: int | None = None, recipe: str = "improved") -> dict:
    """The grid trained as the study did, once on the whole table (with ``recipe``'s start and
    scaling), no evaluation.
    Returns {run key: flat parameters} and the seconds taken; the benchmark's subject."""
    _check_recipe(recipe)
    t0 = time.perf_counter()
    iterations = sorted({int(i) for i in iterations})
    everything = np.arange(len(y))
    Z = _recipe_scaled(X, everything, everything[:0], recipe)
    Y = y.reshape(-1, 1).astype(float) if n_classes == 2 else np.eye(n_classes)[y]
    combos = [(m, lr) for m in modes for lr in learning_rates]
    jobs = []
    for net in networks:
        sizes = (X.shape[1], *HIDDEN[net], 1 if n_classes == 2 else n_classes)
        jobs.append(dict(X=Z, Y=Y, sizes=sizes, train_sets=[everything], run_fold=np.zeros(len(combos), int),
                         learning_rates=np.array([c[1] for c in combos]),
                         batch_sizes=np.array([MODES[c[0]] or len(y) for c in combos]),
                         snapshot_epochs=np.array(iterations), seed=seed, use_numba=use_numba,
                         **_recipe_training(recipe, net, sizes, [everything], iterations[-1],
                                            0 if recipe == "study" else seed, dtype)))
    results = gridtrain.run_jobs(jobs, threads)
    params = {}
    for net, res in zip(networks, results):
        for ci, (mode, lr) in enumerate(combos):
            for s, it in enumerate(iterations):
                params[run_key(net, mode, lr, it)] = res.snapshots[s, :, ci].astype(np.float64)
    return {"params": params, "seconds": time.perf_counter() - t0, "runs": len(params)}


def seed_stability(X: np.ndarray, y: np.ndarray, n_classes: int, folds: int = 5, seed: int = 0,
                   seeds: Sequence[int] = tuple(range(10)), network: str = "mlp-b", mode: str = "minibatch",
                   learning_rate: float = 0.0075, iterations: int = 5000, groups: np.ndarray | None = None) -> dict:
    """Out-of-fold AUC of one grid setting, per recipe, when only the seed of the initial weights
    changes (the study recipe: seeds 14 + k; the folds and sample orders stay fixed)."""
    splits = split_indices(y, folds, seed, groups)
    n, d = X.shape
    sizes = (d, *HIDDEN[network], 1 if n_classes == 2 else n_classes)
    Y = y.reshape(-1, 1).astype(float) if n_classes == 2 else np.eye(n_classes)[y]
    train_sets = [tr + f * n for f, (tr, _) in enumerate(splits)]
    R = len(seeds) * folds
    out = {}
    for recipe in RECIPES:
        Xs = [_recipe_scaled(X, tr, te, recipe) for tr, te in splits]
        kws = [_recipe_training(recipe, network, sizes, train_sets, iterations, k, np.float32) for k in seeds]
        init = np.repeat(np.column_stack([kw["init"] for kw in kws]), folds, axis=1)  # seed-major runs
        kw = {k: v for k, v in kws[0].items() if k != "init"}
        res = gridtrain.train_runs(np.vstack(Xs), np.vstack([Y] * folds), sizes, train_sets, np.tile(np.arange(folds), len(seeds)),
                                   init, np.full(R, learning_rate), np.full(R, MODES[mode] or n), np.array([iterations]),
                                   seed=seed, **kw)
        aucs = []
        for i in range(len(seeds)):
            oof = np.zeros((n, n_classes))
            for f, (_, te) in enumerate(splits):
                o = gridtrain.forward_flat(res.snapshots[-1, :, i * folds + f].astype(np.float64), sizes, Xs[f][te])
                oof[te] = np.column_stack([1 - o, o]) if n_classes == 2 else o
            ok = np.isfinite(oof).all()
            aucs.append(float(weighted_metrics(oof, y, np.ones((1, n)))["auc"][0]) if ok else None)
        done = [a for a in aucs if a is not None]
        out[recipe] = {"auc": aucs, "min": min(done) if done else None, "max": max(done) if done else None,
                       "sd": float(np.std(done)) if done else None, "nan_runs": aucs.count(None)}
    return {"network": network, "mode": mode, "learning_rate": learning_rate, "iterations": iterations,
            "seeds": list(seeds), "folds": folds, "recipes": out}


def improved_configs() -> dict[str, object]:
    """SpineAI's switches on network B and the comparators, at fixed, stated settings. "logreg" is
    the same model as ``spineai train --model logreg`` (standardised, C = 1)."""
    return {
        "improved mlp-b": default_config("mlp-b", scaling="standard", optimizer="adam", mode="batch", learning_rate=0.01,
                                         iterations=300, early_stopping=True, class_weights=True),
        "logreg": default_config("logreg"),
        "svm": default_config("svm"),
        "rf": default_config("rf"),
        "xgboost": default_config("xgboost"),
    }


def run_study(table, label_column: str, out_dir: str | os.PathLike, *, folds: int = 5, seed: int = 0,
              n_boot: int = 1000, iterations: Sequence[int] = ITERATIONS, learning_rates: Sequence[float] = LEARNING_RATES,
              with_auto: bool = False, group_column: str | None = None, exclude: Sequence[str] = (),
              impute: str | None = None, overwrite: bool = False, progress=None, recipe: str = "improved",
              prevalence: float | None = None, stability_seeds: int = 10, stability_iterations: int = 5000) -> dict:
    """Run the grid (``recipe``), SpineAI's pipeline and the comparators on the same folds, and the
    seed stability of both recipes; write ``out_dir`` (report.html, PNG plots, grid.csv,
    study.json) atomically. ``prevalence``: of the positive class, for the decision curve (default:
    the table's). Returns the summary."""
    _check_recipe(recipe)
    if prevalence is not None and not 0.0 < prevalence < 1.0:
        raise SpineAIError(f"the prevalence must lie strictly between 0 and 1, got {prevalence}")
    from spineai.models.report import write_study_report
    from spineai.models.training import auto_candidates, choice_stability, evaluate_config, load_dataset, nested_cv

    out_dir = refuse_existing(out_dir, overwrite)
    ds = load_dataset(table, label_column, group_column, exclude, None, impute, None, folds)
    K = len(ds.classes)
    grid = run_grid(ds.X, ds.y, K, folds, seed, iterations=iterations, learning_rates=learning_rates,
                    n_boot=n_boot, groups=ds.groups, progress=progress, recipe=recipe)
    stability = seed_stability(ds.X, ds.y, K, folds, seed, tuple(range(stability_seeds)),
                               iterations=stability_iterations, groups=ds.groups) if stability_seeds else None
    others = {}
    t0 = time.perf_counter()
    for name, cfg in improved_configs().items():
        r = evaluate_config(ds, cfg, folds, 1, seed, n_boot)
        others[name] = r
    if with_auto:
        r, chosen = nested_cv(ds, auto_candidates(K), folds, seed=seed, n_boot=n_boot)
        counts = {c: chosen.count(c) for c in chosen}
        r.extra["stability"] = choice_stability(chosen, max(counts, key=counts.get))
        others["auto (nested CV)"] = r
    others_seconds = time.perf_counter() - t0
    summary = {
        "table": os.path.basename(ds.source), "label_column": label_column, "classes": ds.classes,
        "n_samples": int(len(ds.y)), "n_features": int(ds.X.shape[1]), "grouped": ds.groups is not None,
        "class_counts": {c: int((ds.y == k).sum()) for k, c in enumerate(ds.classes)},
        "folds": folds, "seed": seed, "bootstrap": n_boot, "recipe": recipe,
        "prevalence": {"value": float(prevalence if prevalence is not None else (ds.y == K - 1).mean()),
                       "source": "user" if prevalence is not None else "table"},
        "seed_stability": stability,
        "grid": {"rows": grid.rows, "seconds": round(grid.seconds, 2), "train_seconds": round(grid.extra["train_seconds"], 2),
                 "engine": grid.engine, "runs": grid.n_runs, "curves": grid.curves},
        "others": {k: v.summary() for k, v in others.items()}, "others_seconds": round(others_seconds, 2),
    }
    write_output_folder(out_dir, lambda tmp: write_study_report(tmp, summary, grid, others, ds), overwrite)
    return summary


def best_rows(rows: list[dict], metric: str = "auc", top: int = 5) -> list[dict]:
    """The best runs by ``metric``; runs that became NaN are never among them."""
    done = [r for r in rows if r["metrics"][metric]["value"] is not None]
    return sorted(done, key=lambda r: -r["metrics"][metric]["value"])[:top]


def grid_csv_lines(rows: list[dict]) -> list[str]:
    head = ["network", "mode", "learning_rate", "iterations", "nan_from_epoch"]
    for m in METRICS:
        head += [m, f"{m}_ci_low", f"{m}_ci_high"]
    lines = [",".join(head)]
    for r in rows:
        vals = [r["network"], r["mode"], f"{r['learning_rate']:g}", str(r["iterations"]), str(r.get("nan_from_epoch", ""))]
        for m in METRICS:
            d = r["metrics"][m]
            vals += ["nan" if d.get(k) is None else f"{d.get(k, float('nan')):.4f}" for k in ("value", "ci_low", "ci_high")]
        lines.append(",".join(vals))
    return lines


def to_json(summary: dict) -> str:
    return json.dumps(summary, indent=1, default=float)
