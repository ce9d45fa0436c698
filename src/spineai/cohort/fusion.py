"""Late fusion: an imaging branch's probability becomes one input beside the clinical variables,
and XGBoost makes the final call.

- Clinical branch: a fully connected network (SpineAI's network A, standardised inputs) and
  XGBoost on the clinical columns. Imputation is explicit and fitted on training rows only: numbers
  by the training median plus a 0/1 "missing" column, categories one-hot with "missing" as its own
  indicator; every imputed cell is counted in the report.
- Imaging branch: a SpineAI radiomic model (``imaging_model``) trained on the imaging features, or
  a column of probabilities from any other SpineAI model (e.g. an image classifier) that the user
  made out of fold. The fused model is trained on the imaging branch's *out-of-fold* probabilities
  of its training rows (an inner cross-validation inside each outer training set), so no case's
  label reaches its own imaging input, and test rows get the probability of a model that never saw
  them.
- Evaluation: patient-level, stratified, seeded 5-fold cross-validation (every case scored out of
  fold) and a 70 / 15 / 15 train / validation / test split (thresholds chosen on validation);
  AUROC and AUPRC with patient-level bootstrap 95 % CIs and paired CIs of the differences, decision
  curves, calibration, and the fused model's exact tree SHAP contributions (XGBoost's own
  ``pred_contribs``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from spineai.errors import SpineAIError

MISSING = ("", "nan", "NaN", "NA", "N/A", "null", "None")
MAX_LEVELS = 20
BRANCHES = ("imaging", "clinical network", "clinical XGBoost", "fused")


@dataclass
class FusionData:
    y: np.ndarray  # 0 / 1
    classes: list[str]  # [negative, positive]
    groups: np.ndarray  # patient of each row
    ids: list[str]
    clinical: dict[str, list[str]]  # raw text per clinical column
    imaging_X: np.ndarray | None = None
    imaging_names: list[str] = field(default_factory=list)
    imaging_probability: np.ndarray | None = None
    imaging_source: str = ""


def fusion_data(table, label_column: str, clinical: Sequence[str], imaging_features: Sequence[str] = (),
                imaging_probability: str | None = None, group_column: str | None = None,
                positive: str | None = None) -> FusionData:
    """Check and gather what fusion needs from a Table (``spineai.models.tables``)."""
    from spineai.models.tables import GROUP_COLUMNS, nan_report

    if label_column not in table.columns:
        raise SpineAIError(f"{table.source} has no label column {label_column!r}; its columns are: "
                           f"{', '.join(table.columns)}")
    labels = [v.strip() for v in table.column(label_column)]
    keep = [i for i, v in enumerate(labels) if v not in MISSING]
    if len(keep) < len(labels):
        raise SpineAIError(f"{table.source}: {len(labels) - len(keep)} row(s) have no {label_column!r}; fusion needs "
                           f"a label for every case (remove those rows)")
    found = sorted(set(labels))
    if positive is None:
        if len(found) != 2:
            raise SpineAIError(f"fusion predicts one class against the rest: {label_column!r} has {len(found)} "
                               f"classes ({', '.join(found)}); choose one with --positive")
        positive = "MET" if "MET" in found else found[1]
    if positive not in found:
        raise SpineAIError(f"--positive {positive!r} is not a value of {label_column!r} ({', '.join(found)})")
    y = np.array([int(v == positive) for v in labels])
    if min(y.sum(), (1 - y).sum()) < 5:
        raise SpineAIError(f"fusion needs at least 5 cases of each side ({positive}: {int(y.sum())}, other: "
                           f"{int((1 - y).sum())})")
    negative = next(c for c in found if c != positive) if len(found) == 2 else f"not {positive}"
    if group_column is None:
        group_column = next((c for c in GROUP_COLUMNS if c in table.columns), None)
    ids = table.row_ids()
    groups = np.asarray(table.column(group_column) if group_column else ids)
    clinical = list(clinical)
    if not clinical:
        raise SpineAIError("name the clinical columns (--clinical age,crp,...)")
    missing = [c for c in clinical if c not in table.columns]
    if missing:
        raise SpineAIError(f"{table.source} lacks clinical column(s) {', '.join(missing)}")
    overlap = set(clinical) & ({label_column, group_column} | set(imaging_features) | {imaging_probability})
    if overlap:
        raise SpineAIError(f"column(s) {', '.join(sorted(c for c in overlap if c))} cannot be clinical inputs: they are "
                           f"the label, the patient or the imaging branch")
    data = FusionData(y, [negative, positive], groups, ids, {c: table.column(c) for c in clinical})
    if bool(imaging_features) == bool(imaging_probability):
        raise SpineAIError("give the imaging branch either as features (--imaging-features) or as out-of-fold "
                           "probabilities (--imaging-probability COLUMN), not both")
    if imaging_probability:
        p = table.numeric(imaging_probability)
        if not np.isfinite(p).all() or p.min() < 0 or p.max() > 1:
            raise SpineAIError(f"{imaging_probability!r} must hold a probability in [0, 1] for every case")
        data.imaging_probability, data.imaging_source = p, f"out-of-fold probabilities in column {imaging_probability!r}"
    else:
        absent = [c for c in imaging_features if c not in table.columns]
        if absent:
            raise SpineAIError(f"{table.source} lacks imaging feature column(s) {', '.join(absent[:5])}")
        X = np.column_stack([table.numeric(c) for c in imaging_features])
        if not np.isfinite(X).all():
            raise SpineAIError(f"imaging features must be complete: {nan_report(X, ids, list(imaging_features))}")
        data.imaging_X, data.imaging_names = X, list(imaging_features)
    return data


class ClinicalEncoder:
    """Clinical text columns -> numbers. Kinds, levels and which columns get a "missing" indicator
    come from the whole table (no label is read); medians from the training rows only."""

    def __init__(self, raw: dict[str, list[str]]):
        self.raw = raw
        self.kinds, self.levels, self.has_missing = {}, {}, {}
        for c, vals in raw.items():
            present = [v.strip() for v in vals if v.strip() not in MISSING]
            if not present:
                raise SpineAIError(f"clinical column {c!r} has no values")
            try:
                [float(v) for v in present]
                self.kinds[c] = "number"
            except ValueError:
                self.kinds[c] = "category"
                self.levels[c] = sorted(set(present))
                if len(self.levels[c]) > MAX_LEVELS:
                    raise SpineAIError(f"clinical column {c!r} has {len(self.levels[c])} different texts: code it as "
                                       f"numbers or as at most {MAX_LEVELS} categories")
            self.has_missing[c] = len(present) < len(vals)
        self.names = []
        for c in raw:
            self.names += [c] if self.kinds[c] == "number" else [f"{c}={lv}" for lv in self.levels[c]]
            self.names += [f"{c} missing"] if self.has_missing[c] else []

    def _numbers(self, c: str, rows: np.ndarray) -> np.ndarray:
        return np.array([float(v) if v.strip() not in MISSING else np.nan for v in np.asarray(self.raw[c])[rows]])

    def fit_transform(self, train: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, int]:
        """(matrix for ``rows``, number of cells imputed) with medians from ``train``."""
        cols, imputed = [], 0
        for c in self.raw:
            if self.kinds[c] == "number":
                med = np.nanmedian(self._numbers(c, train)) if np.isfinite(self._numbers(c, train)).any() else np.nan
                if not np.isfinite(med):
                    raise SpineAIError(f"clinical column {c!r} has no value in a training set: it cannot be imputed")
                v = self._numbers(c, rows)
                miss = ~np.isfinite(v)
                imputed += int(miss.sum())
                cols.append(np.where(miss, med, v))
            else:
                text = np.array([v.strip() for v in np.asarray(self.raw[c])[rows]])
                miss = np.isin(text, MISSING)
                imputed += int(miss.sum())
                cols += [(text == lv).astype(float) for lv in self.levels[c]]
            if self.has_missing[c]:
                cols.append(miss.astype(float))
        return np.column_stack(cols), imputed


def patient_split(y: np.ndarray, groups: np.ndarray, seed: int, fractions=(0.7, 0.15, 0.15)):
    """Train / validation / test row indices: patients (a patient is positive when any of its
    cases is) shuffled per class with ``seed`` and cut at the fractions, so every case of a patient
    is on one side and each side keeps the class balance."""
    rng = np.random.default_rng(seed)
    uniq, inv = np.unique(groups, return_inverse=True)
    pos = np.zeros(len(uniq), bool)
    np.logical_or.at(pos, inv, y == 1)
    side = np.zeros(len(uniq), int)
    for cls in (False, True):
        members = rng.permutation(np.flatnonzero(pos == cls))
        cut1 = int(round(len(members) * fractions[0]))
        cut2 = int(round(len(members) * (fractions[0] + fractions[1])))
        side[members[cut1:cut2]], side[members[cut2:]] = 1, 2
    parts = [np.flatnonzero(side[inv] == s) for s in range(3)]
    if any(len(np.unique(y[p])) < 2 for p in parts):
        raise SpineAIError("too few patients for a 70 / 15 / 15 split with both classes on every side")
    return parts


# XGBoost for a few inputs and hundreds of cases: shallow trees, rounds chosen by early stopping on
# validation patients. The fused model boosts from the imaging branch's log-odds (XGBoost's base
# margin) with the imaging probability also an input: trees on a single strong continuous input
# lose its ranking in steps, and clinical columns that are noise then cost 0.02-0.07 AUROC
# (measured on the synthetic cohorts of the tests); from the imaging margin they cost nothing.
XGB_PARAMS = {"objective": "binary:logistic", "eval_metric": "logloss", "max_depth": 2, "eta": 0.05,
              "subsample": 0.8, "nthread": 1, "verbosity": 0}
MAX_ROUNDS, PATIENCE = 300, 20


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def fit_xgb(X, y, X_val, y_val, seed: int, margin=None, margin_val=None):
    import xgboost as xgb

    d, dv = xgb.DMatrix(X, label=y), xgb.DMatrix(X_val, label=y_val)
    if margin is not None:
        d.set_base_margin(margin), dv.set_base_margin(margin_val)
    return xgb.train({**XGB_PARAMS, "seed": seed}, d, MAX_ROUNDS, evals=[(dv, "validation")],
                     early_stopping_rounds=PATIENCE, verbose_eval=False)


def xgb_predict(booster, X, margin=None, contributions: bool = False) -> np.ndarray:
    """Probabilities, or exact tree SHAP values (n, inputs + 1: the last column is the bias, which
    holds the base margin) from XGBoost's own ``pred_contribs``."""
    import xgboost as xgb

    d = xgb.DMatrix(X)
    if margin is not None:
        d.set_base_margin(margin)
    return booster.predict(d, iteration_range=(0, booster.best_iteration + 1), pred_contribs=contributions)


def _positive(model, X) -> np.ndarray:
    return model.predict_proba(X)[:, 1]


def fit_branches(data: FusionData, train: np.ndarray, test: np.ndarray, imaging_model: str = "logreg",
                 seed: int = 0, val: np.ndarray | None = None, inner_folds: int = 5):
    """Train every branch on ``train`` (XGBoost early-stopped on ``val``, else on a fifth of the
    training patients) and score ``test``: ({branch: probabilities}, fused booster, fused inputs and
    margin of ``test``, input names, cells imputed)."""
    from spineai.models.estimators import default_config, fit_model
    from spineai.models.evaluation import split_indices

    if val is None:
        fit_part, val_part = split_indices(data.y[train], 5, seed, data.groups[train])[0]
        fit_rows, val = train[fit_part], train[val_part]
    else:
        fit_rows, train = train, np.concatenate([train, val])  # val: stops XGBoost, never fitted on
    enc = ClinicalEncoder(data.clinical)
    C, _ = enc.fit_transform(fit_rows, np.concatenate([train, test]))
    imputed = enc.fit_transform(fit_rows, test)[1]
    rows = {int(r): n for n, r in enumerate(np.concatenate([train, test]))}
    c = lambda idx: C[[rows[int(i)] for i in idx]]  # noqa: E731
    img = np.zeros(len(data.y))
    if data.imaging_X is not None:
        cfg, Xi, y_fit = default_config(imaging_model, seed=seed), data.imaging_X, data.y[fit_rows]
        # the rows XGBoost learns from get out-of-fold probabilities of models that never saw them
        for itr, ite in split_indices(y_fit, inner_folds, seed, data.groups[fit_rows]):
            img[fit_rows[ite]] = _positive(fit_model(cfg, Xi[fit_rows[itr]], y_fit[itr], 2), Xi[fit_rows[ite]])
        other = np.concatenate([val, test])
        img[other] = _positive(fit_model(cfg, Xi[fit_rows], y_fit, 2), Xi[other])
    else:
        img = data.imaging_probability
    y = data.y
    net = fit_model(default_config("mlp-a", scaling="standard", iterations=1000, seed=seed), c(fit_rows), y[fit_rows], 2)
    clinical_xgb = fit_xgb(c(fit_rows), y[fit_rows], c(val), y[val], seed)
    F = lambda idx: np.column_stack([c(idx), img[idx]])  # noqa: E731
    fused = fit_xgb(F(fit_rows), y[fit_rows], F(val), y[val], seed, logit(img[fit_rows]), logit(img[val]))
    probs = {"imaging": img[test], "clinical network": _positive(net, c(test)),
             "clinical XGBoost": xgb_predict(clinical_xgb, c(test)),
             "fused": xgb_predict(fused, F(test), logit(img[test]))}
    return probs, fused, (F(test), logit(img[test])), enc.names + ["imaging probability"], imputed


def scores(probs: dict[str, np.ndarray], y: np.ndarray, groups: np.ndarray, n_boot: int, seed: int) -> dict:
    """AUROC and AUPRC of each branch with patient-level bootstrap 95 % CIs, and the paired
    differences (fused minus each branch) on the same resamples."""
    from spineai.models.evaluation import average_precision, bootstrap_weights, weighted_metrics

    W = np.vstack([np.ones((1, len(y))), bootstrap_weights(len(y), n_boot, seed, groups)])
    per = {}
    for name, p in probs.items():
        per[name] = {"auroc": weighted_metrics(np.column_stack([1 - p, p]), y, W)["auc"],
                     "auprc": average_precision(p, y == 1, W)}

    def summary(values):
        lo, hi = np.nanpercentile(values[1:], [2.5, 97.5])
        return {"value": float(values[0]), "ci_low": float(lo), "ci_high": float(hi)}

    out = {name: {k: summary(v) for k, v in m.items()} for name, m in per.items()}
    for name in probs:
        if name != "fused":
            out[f"fused - {name}"] = {k: summary(per["fused"][k] - per[name][k]) for k in ("auroc", "auprc")}
    return out


def run_fusion(data: FusionData, imaging_model: str = "logreg", folds: int = 5, seed: int = 0, n_boot: int = 1000,
               progress=None) -> dict:
    """Cross-validated and held-out results of every branch: probabilities, scores, thresholds,
    contributions. Plain values (numpy arrays inside), written by ``write_fusion_report``."""
    from spineai.models.evaluation import choose_threshold, split_indices
    from spineai.progress import report

    y, groups = data.y, data.groups
    oof = {b: np.zeros(len(y)) for b in BRANCHES}
    fold_of = np.zeros(len(y), int)
    imputed = 0
    splits = split_indices(y, folds, seed, groups)
    for k, (tr, te) in enumerate(splits):
        report(progress, k, folds + 1, f"cross-validation fold {k + 1}")
        probs, _, _, names, n_imp = fit_branches(data, tr, te, imaging_model, seed + k)
        imputed += n_imp
        fold_of[te] = k
        for b in BRANCHES:
            oof[b][te] = probs[b]
    report(progress, folds, folds + 1, "70 / 15 / 15 split")
    train, val, test = patient_split(y, groups, seed)
    both = np.concatenate([val, test])
    probs, fused, (F, margin), names, _ = fit_branches(data, train, both, imaging_model, seed, val=val)
    val_p = {b: p[:len(val)] for b, p in probs.items()}
    test_p = {b: p[len(val):] for b, p in probs.items()}
    thresholds = {}
    for b in BRANCHES:
        t = choose_threshold(val_p[b], y[val] == 1, "youden")
        pos, pred = y[test] == 1, test_p[b] >= t["threshold"]
        thresholds[b] = {"threshold": t["threshold"], "test_sensitivity": float((pred & pos).sum() / max(pos.sum(), 1)),
                         "test_specificity": float((~pred & ~pos).sum() / max((~pos).sum(), 1))}
    # The bias column holds each case's base margin: its deviation from the mean is the imaging
    # branch's own share, shown as one more input.
    contribs = xgb_predict(fused, F[len(val):], margin[len(val):], contributions=True)
    share = margin[len(val):] - margin[len(val):].mean()
    contribs = np.column_stack([contribs[:, :-1], share, contribs[:, -1] - share])
    names = names + ["imaging log-odds (base margin)"]
    report(progress, folds + 1, folds + 1, "done")
    return {"classes": data.classes, "n_cases": int(len(y)), "n_patients": int(len(np.unique(groups))),
            "n_positive": int(y.sum()), "imaging_source": data.imaging_source or
            f"{imaging_model} on {len(data.imaging_names)} imaging features, out of fold (inner {5}-fold CV)",
            "clinical_columns": list(data.clinical), "inputs": names, "imputed_cells_cv": imputed,
            "folds": folds, "seed": seed, "n_boot": n_boot,
            "cv": {"probabilities": oof, "fold": fold_of, "scores": scores(oof, y, groups, n_boot, seed)},
            "split": {"sizes": [len(train), len(val), len(test)], "test": test, "probabilities": test_p,
                      "scores": scores(test_p, y[test], groups[test], n_boot, seed), "thresholds": thresholds,
                      "contributions": contribs}}


def _fmt(m: dict) -> str:
    return f"{m['value']:.3f} <small>[{m['ci_low']:.3f}, {m['ci_high']:.3f}]</small>"


def _score_table(sc: dict, thresholds: dict | None = None) -> str:
    import html

    head = "<tr><th>model</th><th>AUROC [95 % CI]</th><th>AUPRC [95 % CI]</th>"
    head += "<th>threshold (validation, Youden)</th><th>test sensitivity</th><th>test specificity</th>" if thresholds else ""
    rows = []
    for name, m in sc.items():
        extra = ""
        if thresholds:
            t = thresholds.get(name)
            extra = (f"<td>{t['threshold']:.3f}</td><td>{t['test_sensitivity']:.3f}</td>"
                     f"<td>{t['test_specificity']:.3f}</td>") if t else "<td></td><td></td><td></td>"
        rows.append(f"<tr><td>{html.escape(name)}</td><td>{_fmt(m['auroc'])}</td><td>{_fmt(m['auprc'])}</td>{extra}</tr>")
    return f"<table>{head}</tr>{''.join(rows)}</table>"


def write_fusion_report(folder, result: dict, data: FusionData, source: str) -> None:
    """report.html with its plots (ROC, precision-recall, calibration, decision curves of the
    cross-validated probabilities; contributions), metrics.json, predictions.csv, contributions.csv."""
    import csv
    import html
    from pathlib import Path

    from spineai import RESEARCH_USE_NOTICE
    from spineai.models.report import CSS, _plt, plot_curves

    out = Path(folder)
    y = data.y
    cv, sp = result["cv"], result["split"]
    files, curves = plot_curves(out, {b: np.column_stack([1 - p, p]) for b, p in cv["probabilities"].items()}, y,
                                data.classes, n_boot=min(result["n_boot"], 200), seed=result["seed"])
    names, contrib = result["inputs"], sp["contributions"]
    mean_abs = np.abs(contrib[:, :-1]).mean(0)
    order = np.argsort(-mean_abs, kind="stable")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(names) + 1.4))
    ax.barh([names[i] for i in order][::-1], mean_abs[order][::-1], color="#4a7fb0")
    ax.set(xlabel="mean |contribution| to the log-odds\n(exact tree SHAP from pred_contribs, test cases)",
           title="Fused XGBoost: what drives its call")
    ax.title.set_fontsize(9)
    fig.tight_layout(), fig.savefig(out / "contributions.png", dpi=110), plt.close(fig)
    with open(out / "predictions.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "patient", data.classes[1], "cv_fold"] + [f"p_{b.replace(' ', '_')}" for b in BRANCHES])
        for i in range(len(y)):
            w.writerow([data.ids[i], data.groups[i], int(y[i]), int(cv["fold"][i])] +
                       [repr(float(cv["probabilities"][b][i])) for b in BRANCHES])
    with open(out / "contributions.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["id"] + names + ["bias"])
        for i, row in zip(sp["test"], contrib):
            w.writerow([data.ids[i]] + [repr(float(v)) for v in row])
    plain = {k: v for k, v in result.items() if k not in ("cv", "split")}
    plain["cv"] = {"scores": cv["scores"]}
    plain["split"] = {"sizes": sp["sizes"], "scores": sp["scores"], "thresholds": sp["thresholds"],
                      "mean_abs_contribution": dict(zip(names, mean_abs.tolist()))}
    plain["calibration"] = curves["calibration"]
    plain["decision_curve"] = curves["decision_curve"]
    (out / "metrics.json").write_text(json.dumps(plain, indent=1, default=float), encoding="utf-8")
    n_tr, n_va, n_te = sp["sizes"]
    contrib_rows = "".join(f"<tr><td>{html.escape(names[i])}</td><td>{mean_abs[i]:.3f}</td></tr>" for i in order)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>SpineAI late fusion</title><style>{CSS}</style></head><body>
<h1>Late fusion: imaging + clinical, {html.escape(data.classes[1])} against {html.escape(data.classes[0])}</h1>
<p class="warn">{html.escape(RESEARCH_USE_NOTICE)}</p>
<p>{result['n_cases']} cases of {result['n_patients']} patients from {html.escape(source)}; {result['n_positive']} positive.
Imaging branch: {html.escape(result['imaging_source'])}. Clinical branch: {html.escape(', '.join(result['clinical_columns']))}
(inputs after encoding: {html.escape(', '.join(names[:-1]))}); a fully connected network (one hidden layer of 6, standardised
inputs) and XGBoost. Fused: XGBoost on the clinical inputs and the imaging probability, trained on the imaging branch's
out-of-fold probabilities of its training cases. Explicit imputation fitted on training cases only: training median plus
a "missing" indicator for numbers, a "missing" indicator for categories ({result['imputed_cells_cv']} cells imputed over the
cross-validation's test folds). Splits keep every patient's cases together, are stratified and seeded (seed {result['seed']}).
95 % CIs: {result['n_boot']} bootstrap resamples of patients; differences are paired (same resamples).</p>
<h2>{result['folds']}-fold cross-validation (every case scored out of fold)</h2>{_score_table(cv['scores'])}
<h2>70 / 15 / 15 split ({n_tr} / {n_va} / {n_te} cases): test set</h2>{_score_table(sp['scores'], sp['thresholds'])}
<h2>Curves (cross-validated probabilities)</h2>
<img src="{files['roc']}"><img src="{files['pr']}"><img src="{files['decision_curve']}"><img src="{files['calibration']}">
<h2>Contributions of the fused model's inputs (test set, exact tree SHAP from XGBoost's pred_contribs)</h2>
<img src="contributions.png"><table><tr><th>input</th><th>mean |log-odds contribution|</th></tr>{contrib_rows}</table>
<p>Files: predictions.csv (out-of-fold probabilities of every branch), contributions.csv (per test case), metrics.json.</p>
</body></html>"""
    (out / "report.html").write_text(page, encoding="utf-8")
