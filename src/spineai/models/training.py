"""Train, evaluate and choose models on a feature table; write a verified bundle with its card."""

from __future__ import annotations

import datetime as _dt
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

import spineai
from spineai.errors import SpineAIError
from spineai.image import refuse_existing
from spineai.featureset import DEFINITION_LIFEX, DEFINITION_PYRADIOMICS, FEATURES_31, LIFEX_31
from spineai.models.estimators import Config, FittedModel, default_config, fit_model, with_seed
from spineai.models.evaluation import (
    CVResult, check_folds, cross_validate, permutation_importance, split_indices, weighted_metrics,
)
from spineai.models.tables import (
    GROUP_COLUMNS, Table, check_constant, check_no_label_leak, drop_duplicate_rows, encode_labels,
    feature_columns_for_training, feature_matrix, read_table,
)

INTENDED_USE = ("Research only, not a medical device. Estimates whether a spinal lesion's radiomic features "
                "resemble those of the training lesions of each class; never a diagnosis.")


@dataclass
class Dataset:
    X: np.ndarray
    y: np.ndarray
    classes: list[str]
    feature_names: list[str]
    groups: np.ndarray | None
    ids: list[str]
    source: str
    label_column: str
    feature_definition: str
    imputed: bool = False


def guess_definition(names: Sequence[str]) -> str:
    if list(names) == list(LIFEX_31):
        return DEFINITION_LIFEX
    if list(names) == list(FEATURES_31):
        return DEFINITION_PYRADIOMICS
    return "custom"


def load_dataset(table: Table | str | os.PathLike, label_column: str, group_column: str | None = None,
                 exclude: Sequence[str] = (), features: Sequence[str] | None = None, impute: str | None = None,
                 feature_definition: str | None = None, folds: int | None = None) -> Dataset:
    """Read and check a training table: labels (two or more classes), feature columns (no label
    leak, no constant column), NaNs (named, or imputed by the median when ``impute='median'``)."""
    if not isinstance(table, Table):
        table = read_table(table)
    if label_column not in table.columns:
        raise SpineAIError(f"{table.source} has no label column {label_column!r}; its columns are: {', '.join(table.columns)}")
    cols = list(features) if features else feature_columns_for_training(table, label_column, exclude)
    cols = [c for c in cols if c not in set(exclude)]
    missing = [c for c in cols if c not in table.columns]
    if missing:
        raise SpineAIError(f"{table.source} lacks feature columns: {', '.join(missing)}")
    table = drop_duplicate_rows(table, cols, label_column)
    labels = encode_labels(table.column(label_column), f"{table.source} column {label_column!r}")
    if group_column is None:
        group_column = next((c for c in GROUP_COLUMNS if c in table.columns), None)
    groups = np.asarray(table.column(group_column)) if group_column else None
    if impute not in (None, "median"):
        raise SpineAIError(f"unknown imputation {impute!r}: only 'median' is offered")
    raw = np.column_stack([table.numeric(c) for c in cols])
    imputed = False
    med = None
    if impute == "median":
        med = {c: float(np.nanmedian(raw[:, j])) if np.isfinite(raw[:, j]).any() else np.nan for j, c in enumerate(cols)}
        allnan = [c for c, v in med.items() if not np.isfinite(v)]
        if allnan:
            raise SpineAIError(f"{table.source}: columns with no values at all cannot be imputed: {', '.join(allnan)}")
        imputed = bool((~np.isfinite(raw)).any())
    X = feature_matrix(table, cols, impute=med)
    check_constant(X, cols, table.source)
    check_no_label_leak(table, cols, labels.y, label_column)
    if folds is not None:
        check_folds(labels.y, folds, groups)
    definition = feature_definition or guess_definition(cols)
    return Dataset(X, labels.y, labels.classes, cols, groups, table.row_ids(), table.source, label_column, definition, imputed)


def fit_predict_fn(config: Config, n_classes: int):
    def fp(Xtr, ytr, Xte, seed, groups_tr=None):
        return fit_model(with_seed(config, seed), Xtr, ytr, n_classes).predict_proba(Xte)
    return fp


AUTO_INNER_FOLDS = 3
AUTO_INNER_REPEATS = 2


def auto_candidates(n_classes: int) -> list[Config]:
    """The search space of ``auto``, simplest first (the order the one-standard-error rule prefers):
    strongly and mildly regularised logistic regression, RBF SVM, network A, random forest, XGBoost,
    network B with SpineAI's switches, and the soft-vote ensemble of logistic regression, random
    forest and network A."""
    return [default_config("logreg", C=0.1), default_config("logreg", C=1.0), default_config("svm", C=1.0),
            default_config("mlp-a", iterations=3000),  # SpineAI's setting: converged on the 80 lesions, fast
            default_config("rf"), default_config("xgboost"),
            default_config("mlp-b", scaling="standard", optimizer="adam", mode="batch", learning_rate=0.01, iterations=300,
                           early_stopping=True, class_weights=True),
            default_config("ensemble")]


def _log_loss_per_case(probs: np.ndarray, y: np.ndarray) -> np.ndarray:
    return -np.log(np.clip(probs[np.arange(len(y)), y], 1e-15, 1.0))


def choose_config(X, y, n_classes, candidates: Sequence[Config], folds: int = AUTO_INNER_FOLDS, seed: int = 0,
                  groups=None, repeats: int = AUTO_INNER_REPEATS) -> tuple[Config, list[dict]]:
    """Rank candidates by out-of-fold log-loss (a proper scoring rule) over ``repeats`` x ``folds``
    CV (patient groups kept together), then take the simplest (earliest) candidate within one
    standard error of the best. The ensemble is scored from its members' out-of-fold
    probabilities in the same folds (members fitted with the same seeds are the same models)."""
    from spineai.models.estimators import ensemble_members

    names = [str(i) for i in range(n_classes)]
    oof: dict[str, np.ndarray] = {}
    for cfg in candidates:
        key = cfg.describe()
        if cfg.model == "ensemble" and all(m.describe() in oof for m in ensemble_members(cfg)):
            oof[key] = np.mean([oof[m.describe()] for m in ensemble_members(cfg)], axis=0)
        else:
            oof[key] = cross_validate(fit_predict_fn(cfg, n_classes), X, y, names, folds, repeats, seed, groups,
                                      n_boot=0).repeat_probs
    # per (repeat, fold) mean log-loss: the units whose spread gives the standard error
    units = [te for r in range(repeats) for _, te in split_indices(y, folds, seed + r, groups)]
    reps = [r for r in range(repeats) for _ in range(folds)]
    scores = []
    for cfg in candidates:
        P = oof[cfg.describe()]
        losses = np.array([_log_loss_per_case(P[r][te], y[te]).mean() for r, te in zip(reps, units)])
        scores.append({"config": cfg.describe(), "log_loss": float(losses.mean()),
                       "se": float(losses.std(ddof=1) / np.sqrt(len(losses))),
                       "brier": float(np.mean([((P[r] - np.eye(n_classes)[y]) ** 2).sum(1).mean() for r in range(repeats)])),
                       "auc": float(np.mean([weighted_metrics(P[r], y, np.ones((1, len(y))))["auc"][0] for r in range(repeats)]))})
    best = int(np.argmin([s["log_loss"] for s in scores]))
    limit = scores[best]["log_loss"] + scores[best]["se"]
    chosen = next(i for i, s in enumerate(scores) if s["log_loss"] <= limit)
    for i, sc in enumerate(scores):
        sc["best"], sc["chosen"] = i == best, i == chosen
    return candidates[chosen], scores


def choice_stability(outer_choices: Sequence[str], final: str) -> dict:
    """How often the outer folds' own choices agree: with the final choice and with each other."""
    counts: dict[str, int] = {}
    for c in outer_choices:
        counts[c] = counts.get(c, 0) + 1
    modal = max(counts, key=counts.get) if counts else None
    n = max(len(outer_choices), 1)
    return {"outer_fold_choices": list(outer_choices), "counts": counts, "distinct": len(counts),
            "modal_choice": modal, "modal_share": counts.get(modal, 0) / n if modal else 0.0,
            "final_choice_share": counts.get(final, 0) / n}


def nested_cv(ds: Dataset, candidates: Sequence[Config], outer_folds: int = 5, inner_folds: int = AUTO_INNER_FOLDS,
              seed: int = 0, n_boot: int = 1000, progress=None, inner_repeats: int = AUTO_INNER_REPEATS,
              outer_repeats: int = 1) -> tuple[CVResult, list[str]]:
    """Outer CV whose every fold chooses its model by ``choose_config`` on its own training part only
    (with that part's patient groups, so one patient's lesions never straddle an inner split)."""
    chosen: list[str] = []
    K = len(ds.classes)

    def fp(Xtr, ytr, Xte, s, gtr=None):
        cfg, _ = choose_config(Xtr, ytr, K, candidates, inner_folds, s, gtr, inner_repeats)
        chosen.append(cfg.describe())
        return fit_model(with_seed(cfg, s), Xtr, ytr, K).predict_proba(Xte)

    res = cross_validate(fp, ds.X, ds.y, ds.classes, outer_folds, outer_repeats, seed, ds.groups, n_boot,
                         description="auto (nested CV)", progress=progress)
    return res, chosen


def evaluate_config(ds: Dataset, config: Config, folds: int = 5, repeats: int = 1, seed: int = 0, n_boot: int = 1000,
                    progress=None) -> CVResult:
    return cross_validate(fit_predict_fn(config, len(ds.classes)), ds.X, ds.y, ds.classes, folds, repeats, seed,
                          ds.groups, n_boot, description=config.describe(), progress=progress)


def make_card(ds: Dataset, model: FittedModel, cv: CVResult, model_id: str, version: str, demonstration: bool,
              description: str, selection: dict | None = None, extra_training: dict | None = None) -> dict:
    from spineai.models.ood import fit_ood

    counts = {c: int((ds.y == k).sum()) for k, c in enumerate(ds.classes)}
    definition_note = {
        DEFINITION_LIFEX: "LIFEx-defined texture features: give it only LIFEx-compatible feature values, never "
                          "SpineAI / PyRadiomics output (same names, different discretisation).",
        DEFINITION_PYRADIOMICS: "SpineAI's own PyRadiomics features (parameter set spineai31-v1).",
    }.get(ds.feature_definition, "custom features: give it values computed exactly as in training.")
    card = {
        "format": "spineai-model-card", "id": model_id, "version": version,
        "engine_version": spineai.__version__,
        "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "description": description,
        "task": f"classification of spinal lesions: {' / '.join(ds.classes)}",
        "classes": ds.classes,
        "positive_class": ds.classes[1] if len(ds.classes) == 2 else None,
        "demonstration": bool(demonstration),
        "intended_use": INTENDED_USE + " " + definition_note
                        + (" DEMONSTRATION MODEL trained on synthetic phantoms: meaningless for real patients."
                           if demonstration else ""),
        "features": {"names": ds.feature_names, "definition": ds.feature_definition,
                     "training_median": np.median(ds.X, axis=0).tolist(), "note": definition_note},
        "training_data": {"source": os.path.basename(ds.source), "n_samples": int(len(ds.y)), "class_counts": counts,
                          "label_column": ds.label_column, "grouped_by": "patient" if ds.groups is not None else None,
                          "imputed": ds.imputed, **(extra_training or {})},
        "model_description": model.config.describe(),
        "evaluation": {**cv.summary(), "ci": "95 % percentile bootstrap over "
                       + ("patients" if ds.groups is not None else "lesions") + " of out-of-fold predictions"},
        "selection": selection,
        "ood": fit_ood(ds.X, ds.feature_names),
        "training_history": model.history,
        "research_notice": spineai.RESEARCH_USE_NOTICE,
    }
    return card


def train_bundle(table, label_column: str, model: str, out: str | os.PathLike, *, folds: int = 5, repeats: int = 1,
                 seed: int = 0, n_boot: int = 1000, group_column: str | None = None, exclude: Sequence[str] = (),
                 impute: str | None = None, feature_definition: str | None = None, overrides: dict | None = None,
                 model_id: str | None = None, version: str = "1.0.0", demonstration: bool = False,
                 description: str = "", overwrite: bool = False, progress=None) -> tuple[Path, dict]:
    """Evaluate by CV (nested for ``auto``), fit on all data, write the bundle. Returns (path, card).

    Nothing is written unless everything succeeded (the output path is checked first).
    """
    out = refuse_existing(out, overwrite)
    ds = load_dataset(table, label_column, group_column, exclude, None, impute, feature_definition, folds)
    K = len(ds.classes)
    t0 = time.perf_counter()
    selection = None
    if model == "auto":
        cands = auto_candidates(K)
        cv, chosen = nested_cv(ds, cands, folds, AUTO_INNER_FOLDS, seed, n_boot, progress, outer_repeats=repeats)
        config, scores = choose_config(ds.X, ds.y, K, cands, folds, seed, ds.groups, AUTO_INNER_REPEATS)
        selection = {"method": f"out-of-fold log-loss over {AUTO_INNER_REPEATS} x {folds}-fold CV, then the "
                               "simplest candidate within one standard error of the best (candidates are listed "
                               "simplest first); the reported performance is nested CV of this whole procedure "
                               f"(inner {AUTO_INNER_REPEATS} x {AUTO_INNER_FOLDS}-fold)",
                     "candidates": [c.describe() for c in cands], "final_scores": scores, "chosen": config.describe(),
                     "stability": choice_stability(chosen, config.describe())}
    else:
        config = default_config(model, **(overrides or {}))
        cv = evaluate_config(ds, config, folds, repeats, seed, n_boot, progress)
    fitted = fit_model(with_seed(config, seed), ds.X, ds.y, K)
    imp = permutation_importance(fitted.predict_proba, ds.X, ds.y, ds.feature_names, repeats=3, seed=seed)
    cv.extra["permutation_importance_in_sample"] = [{"feature": f, "auc_drop": m, "sd": s} for f, m, s in imp[:10]]
    card = make_card(ds, fitted, cv, model_id or f"{Path(out).stem}", version, demonstration,
                     description or f"{config.describe()} trained on {os.path.basename(ds.source)}", selection)
    card["training_data"]["seconds"] = round(time.perf_counter() - t0, 1)
    from spineai.models.bundle import save_bundle

    save_bundle(card, fitted, out, overwrite=overwrite)
    return out, card
