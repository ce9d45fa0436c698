"""PNG plots (matplotlib, Agg) and a self-contained HTML report a person reads."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Mapping

import numpy as np

from spineai import RESEARCH_USE_NOTICE
from spineai.models.evaluation import (
    METRICS, calibration_curve, calibration_stats, confusion, decision_curve, smoothed_calibration,
)


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _pos_score(probs: np.ndarray, y: np.ndarray, c: int = 1):
    return probs[:, c], y == c


def roc_points(score, pos):
    order = np.argsort(-score, kind="stable")
    s, p = score[order], pos[order]
    tps, fps = np.cumsum(p), np.cumsum(~p)
    keep = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tpr = np.r_[0, tps[keep] / max(p.sum(), 1)]
    fpr = np.r_[0, fps[keep] / max((~p).sum(), 1)]
    return fpr, tpr


def pr_points(score, pos):
    order = np.argsort(-score, kind="stable")
    p = pos[order]
    tps = np.cumsum(p)
    k = np.arange(1, len(p) + 1)
    return np.r_[0, tps / max(p.sum(), 1)], np.r_[1, tps / k]


def plot_curves(out: Path, models: Mapping[str, np.ndarray], y: np.ndarray, classes: list[str],
                prevalence: float | None = None, n_boot: int = 200, seed: int = 0) -> tuple[dict[str, str], dict]:
    """ROC, precision-recall, calibration and decision curves of the positive class (binary) or of
    the last class one-vs-rest. Returns ({plot name: file name}, the plotted numbers): calibration
    intercept / slope with CIs per model, and the decision curves (treat-all, treat-none, the
    prevalence used and bootstrap bands)."""
    plt = _plt()
    c = 1 if len(classes) == 2 else len(classes) - 1
    label = classes[c]
    files, data = {}, {"calibration": {}, "decision_curve": {}}
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, pr in models.items():
        fpr, tpr = roc_points(*_pos_score(pr, y, c))
        ax.plot(fpr, tpr, label=name)
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title=f"ROC ({label} positive)")
    ax.legend(fontsize=6, loc="lower right")
    files["roc"] = "roc.png"
    fig.tight_layout(), fig.savefig(out / files["roc"], dpi=110), plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, pr in models.items():
        r, p = pr_points(*_pos_score(pr, y, c))
        ax.plot(r, p, label=name)
    ax.axhline((y == c).mean(), color="k", ls=":", lw=1)
    ax.set(xlabel="recall", ylabel="precision", title=f"Precision-recall ({label})", ylim=(0, 1.02))
    ax.legend(fontsize=6, loc="lower left")
    files["pr"] = "pr.png"
    fig.tight_layout(), fig.savefig(out / files["pr"], dpi=110), plt.close(fig)
    # calibration: one panel per model (no overlapping lines): 5 bins with their counts, a smoothed
    # curve, the predictions' histogram, intercept and slope with 95 % CIs
    k = len(models)
    cols = min(k, 3)
    rows_ = -(-k // cols)
    fig, axes = plt.subplots(rows_, cols, figsize=(3.6 * cols, 3.8 * rows_), squeeze=False)
    for ax, (name, pr) in zip(axes.ravel(), models.items()):
        score, pos = _pos_score(pr, y, c)
        cal = calibration_curve(score, pos, bins=5)
        sm = smoothed_calibration(score, pos)
        st = calibration_stats(score, pos)
        data["calibration"][name] = {**st, "bins": cal}
        ax.plot([0, 1], [0, 1], "k:", lw=1)
        ax.plot(sm["predicted"], sm["observed"], "-", lw=1.5, label="smoothed")
        ax.plot(cal["mean_predicted"], cal["observed_fraction"], "o", label="5 bins")
        for xm, yo, n in zip(cal["mean_predicted"], cal["observed_fraction"], cal["count"]):
            ax.annotate(f"n={n}", (xm, yo), textcoords="offset points", xytext=(3, -9), fontsize=6)
        counts, edges = np.histogram(score, bins=20, range=(0, 1))
        ax.bar(edges[:-1], 0.12 * counts / max(counts.max(), 1), width=0.05, align="edge", bottom=-0.14,
               color="grey", alpha=0.5)
        i_, s_ = st["intercept"], st["slope"]
        ax.set_title(f"{name[:38]}\nintercept {i_['value']:.2f} [{i_['ci_low']:.2f}, {i_['ci_high']:.2f}]\n"
                     f"slope {s_['value']:.2f} [{s_['ci_low']:.2f}, {s_['ci_high']:.2f}]", fontsize=7)
        ax.set(xlim=(0, 1), ylim=(-0.15, 1.05))
        ax.tick_params(labelsize=7)
        ax.set_xlabel("predicted probability", fontsize=7)
        ax.set_ylabel(f"observed fraction {label}", fontsize=7)
    for ax in axes.ravel()[k:]:
        ax.axis("off")
    axes[0][0].legend(fontsize=6, loc="upper left")
    files["calibration"] = "calibration.png"
    fig.tight_layout(), fig.savefig(out / files["calibration"], dpi=110), plt.close(fig)
    fig, ax = plt.subplots(figsize=(6.5, 4.8))
    dc = None
    for name, pr in models.items():
        dc = decision_curve(*_pos_score(pr, y, c), prevalence=prevalence, n_boot=n_boot, seed=seed)
        data["decision_curve"][name] = dc
        line, = ax.plot(dc["threshold"], dc["net_benefit"], label=name)
        if "ci_low" in dc:
            ax.fill_between(dc["threshold"], dc["ci_low"], dc["ci_high"], color=line.get_color(), alpha=0.12, lw=0)
    prev = dc["prevalence"] if dc else float((y == c).mean())
    if dc is not None:
        ax.plot(dc["threshold"], dc["treat_all"], "k--", lw=1, label=f"treat all as {label}")
        ax.plot(dc["threshold"], dc["treat_none"], "k-", lw=1, label="treat none")
    src = "the table's" if prevalence is None else "set by the user"
    ax.set(xlabel="threshold probability", ylabel="net benefit", ylim=(-0.1, prev + 0.05),
           title=f"Decision curve ({label}); prevalence {prev:.0%} ({src}); 95 % bootstrap bands")
    ax.title.set_fontsize(8)
    ax.legend(fontsize=6)
    files["decision_curve"] = "decision_curve.png"
    fig.tight_layout(), fig.savefig(out / files["decision_curve"], dpi=110), plt.close(fig)
    return files, data


def plot_convergence(out: Path, curves: dict, name: str = "convergence.png") -> str:
    """Training loss and loss on the CV test folds against iterations for every network / mode /
    learning rate."""
    plt = _plt()
    nets = sorted({k.split("|")[0] for k in curves})
    modes = sorted({k.split("|")[1] for k in curves})
    fig, axes = plt.subplots(len(nets), len(modes), figsize=(4 * len(modes), 3.2 * len(nets)), squeeze=False, sharey=True)
    for i, net in enumerate(nets):
        for j, mode in enumerate(modes):
            ax = axes[i][j]
            for k, cv in curves.items():
                n_, m_, lr = k.split("|")
                if n_ == net and m_ == mode:
                    line, = ax.plot(cv["epoch"], cv["train_loss"], lw=1, label=f"lr {lr} training folds")
                    ax.plot(cv["epoch"], cv["test_loss"], lw=1.5, ls="--", color=line.get_color(),
                            label=f"lr {lr} CV test folds")
            ax.set_xscale("log")
            ax.set_title(f"{net} {mode}", fontsize=9)
            ax.set_xlabel("iterations (epochs)")
            if j == 0:
                ax.set_ylabel("cross-entropy (mean over folds)")
    axes[0][-1].legend(fontsize=6)
    fig.tight_layout(), fig.savefig(out / name, dpi=100), plt.close(fig)
    return name


def _fmt(m: dict) -> str:
    v = m["value"]
    if v is None:
        return "NaN"
    if m.get("ci_low") is not None and np.isfinite(m["ci_low"]):
        return f"{v:.3f} <small>[{m['ci_low']:.3f}, {m['ci_high']:.3f}]</small>"
    return f"{v:.3f}"


def _metric_table(rows: list[tuple[str, dict]]) -> str:
    head = "".join(f"<th>{m}</th>" for m in METRICS)
    body = "".join(f"<tr><td>{html.escape(n)}</td>" + "".join(f"<td>{_fmt(m[k])}</td>" for k in METRICS) + "</tr>"
                   for n, m in rows)
    return f"<table><tr><th>model</th>{head}</tr>{body}</table>"


CSS = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}table{border-collapse:collapse;"
       "font-size:13px;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}td:first-child"
       "{text-align:left}.warn{background:#fff3cd;padding:.6em;border:1px solid #e0c060}img{max-width:49%}")


def _stability_table(st: dict | None) -> str:
    if not st:
        return "<p>Not run (--stability-seeds 0).</p>"
    rows = ""
    for recipe, r in st["recipes"].items():
        aucs = ", ".join("NaN" if a is None else f"{a:.3f}" for a in r["auc"])
        span = "all NaN" if r["min"] is None else f"{r['min']:.3f} - {r['max']:.3f} (SD {r['sd']:.3f})"
        rows += f"<tr><td>{html.escape(RECIPE_NAMES[recipe])}</td><td>{span}</td><td>{r['nan_runs']}</td><td>{aucs}</td></tr>"
    return (f"<p>Network {html.escape(st['network'])}, {html.escape(st['mode'])}, lr {st['learning_rate']:g}, "
            f"{st['iterations']} iterations, {st['folds']}-fold CV on fixed folds; only the seed of the initial weights "
            f"changes ({len(st['seeds'])} seeds; the study recipe's seeds are 14 + k). Out-of-fold AUC per seed:</p>"
            f"<table><tr><th>recipe</th><th>AUC range</th><th>NaN runs</th><th>per seed</th></tr>{rows}</table>")


RECIPE_NAMES = {"study": "study (the original: N(0,1) start, seed 14, L2 norms of each table, transductive)",
                "improved": "improved (SpineAI's: Glorot start, min-max fitted on the training fold)"}


def _tripod(summary: dict, recipe: str) -> str:
    n, d = summary["n_samples"], summary["n_features"]
    counts = ", ".join(f"{k} {v}" for k, v in summary["class_counts"].items())
    events = min(summary["class_counts"].values())
    rows = summary["grid"]["rows"]
    its = " / ".join(f"{i:,}" for i in sorted({r["iterations"] for r in rows}))
    lrs = " / ".join(f"{v:g}" for v in sorted({r["learning_rate"] for r in rows}))
    return f"""<h2>Reporting summary (TRIPOD+AI items)</h2>
<ul>
<li><b>Data:</b> {html.escape(summary['table'])}, {n} lesions ({html.escape(counts)}), {d} radiomic features; for the
study table, LIFEx texture features of the original study's training + test lesions (one lesion per row, no patient
identifiers{', grouped by patient' if summary.get('grouped') else ''}). Outcome: the label column
<code>{html.escape(summary['label_column'])}</code> as given; no information on how lesions were selected or on
missing data beyond what the table holds.</li>
<li><b>Sample size:</b> {events} cases in the smaller class for {d} candidate features ({events / d:.1f} per feature),
far below common minimums for developing a prediction model; every figure here is imprecise (see the CIs), and
choices made on this table (the grid's best run, <code>auto</code>'s pick) are themselves noisy.</li>
<li><b>Validation:</b> internal only: stratified {summary['folds']}-fold cross-validation (seed {summary['seed']}), every
model on the same folds, bootstrap 95 % CIs over lesions. <b>Nothing here is externally validated.</b> The original
study's separate validation set (91 lesions) is not public; no model was tested on another centre, scanner,
protocol or feature software. Use <code>spineai evaluate</code> on an independent labelled table for that.</li>
<li><b>Deviations from the original study:</b> this run uses the <b>{html.escape(RECIPE_NAMES[recipe])}</b> recipe.
The study recipe reproduces the original training (N(0,1) weights after seed 14, shuffles from seed 10 + epoch,
complete mini-batches then a partial one, the first 30 of 31 columns L2-normalised, each table by its own norms),
but scores it by cross-validation on the 80 lesions instead of on the 91 validation lesions, and its normalisation
is transductive: each test fold is scaled by its own norms, which a single new case cannot be. The improved recipe
(min-max scaling fitted on the training fold, Glorot start) is SpineAI's own, not the study's. This run's grid:
iterations {its} x learning rates {lrs} (the study's: 5,000 / 10,000 / 20,000 / 50,000 x 0.001 / 0.005 / 0.0075 /
0.01); an iteration is an epoch. Comparators and SpineAI's network B switches are not part of the study.</li>
<li><b>Intended use:</b> research only, not a medical device; never a diagnosis.</li>
</ul>"""


def write_study_report(out: Path, summary: dict, grid, others: dict, ds) -> None:
    from spineai.models.study import best_rows, grid_csv_lines

    out.mkdir(parents=True, exist_ok=True)
    (out / "grid.csv").write_text("\n".join(grid_csv_lines(grid.rows)) + "\n")
    recipe = summary.get("recipe", "improved")
    n_best = len(grid.rows)
    done = best_rows(grid.rows, "auc", 1)
    curves_models = {}
    if done:
        best = done[0]
        best_key = f"{best['network']}|{best['mode']}|{best['learning_rate']:g}|{best['iterations']}"
        curves_models[f"grid best of {n_best} (optimistic: picked on these folds): {best['network']} {best['mode']} "
                      f"lr {best['learning_rate']:g} {best['iterations']} it"] = grid.probs[best_key]
    curves_models.update({f"{k}: {v.description}" if k in ("logreg",) else k: v.probs for k, v in others.items()})
    prevalence = summary["prevalence"]
    files, data = plot_curves(out, curves_models, ds.y, ds.classes,
                              prevalence["value"] if prevalence["source"] == "user" else None)
    summary["curves"] = data
    (out / "study.json").write_text(json.dumps(summary, indent=1, default=float))
    files["convergence"] = plot_convergence(out, grid.curves)
    label = lambda r: f"{r['network']} {r['mode']} lr={r['learning_rate']:g} it={r['iterations']}"  # noqa: E731
    rows = [(label(r) + (f" (NaN from epoch {r['nan_from_epoch']})" if "nan_from_epoch" in r else ""), r["metrics"])
            for r in grid.rows]
    top = [(label(r), r["metrics"]) for r in best_rows(grid.rows)]
    other_rows = [(f"{k}: {v.description}", v.metrics) for k, v in others.items()]
    cms = "".join(f"<p>{html.escape(k)}: confusion matrix (rows true {', '.join(ds.classes)}; columns predicted) "
                  f"{confusion(v.probs, v.y)}</p>" for k, v in others.items())
    auto = next((v for v in others.values() if "stability" in v.extra), None)
    auto_html = ""
    if auto is not None:
        stb = auto.extra["stability"]
        auto_html = (f"<p>auto: the {len(stb['outer_fold_choices'])} outer folds chose {stb['distinct']} different "
                     f"configurations; the most frequent, {html.escape(str(stb['modal_choice']))}, in "
                     f"{stb['modal_share']:.0%} of them: {html.escape('; '.join(stb['outer_fold_choices']))}.</p>")
    nan_rows = [label(r) + f" (from epoch {r['nan_from_epoch']})" for r in grid.rows if "nan_from_epoch" in r]
    nan_html = (f"<p><b>{len(nan_rows)} runs became NaN</b> (the sigmoid saturated to exactly 0 or 1 and the original "
                f"gradient divided 0 by 0): {html.escape('; '.join(nan_rows))}. They are kept, with NaN metrics.</p>"
                if nan_rows else "")
    transductive = ('<p class="warn">Study recipe: each CV test fold is normalised by its own column norms, as the '
                    "study normalised its validation table. That is transductive (the test cases' scaling depends on "
                    "each other), so these figures are not those of a model that scores one new case.</p>"
                    if recipe == "study" else "")
    cal_rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{_fmt(v['intercept'])}</td><td>{_fmt(v['slope'])}</td>"
        f"<td>{', '.join(str(c) for c in v['bins']['count'])}</td></tr>" for k, v in data["calibration"].items())
    note = (f"The best of {n_best} grid runs is chosen on the same out-of-fold predictions it is scored on, so its "
            "figure is optimistic (the best of many noisy estimates); the plots' legends say so. The improved pipeline "
            "and comparators use fixed settings, and `auto` reports nested cross-validation.")
    prev_text = (f"{prevalence['value']:.0%} of {html.escape(ds.classes[-1])}, "
                 + ("set by the user (--prevalence)" if prevalence["source"] == "user" else
                    "the table's own case mix; set --prevalence for the population the model would serve"))
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>SpineAI study report</title><style>{CSS}</style></head><body>
<h1>SD / MET study: original grid, SpineAI's pipeline, comparators</h1>
<p class="warn">{html.escape(RESEARCH_USE_NOTICE)}</p>
<p>Table <b>{html.escape(summary['table'])}</b>: {summary['n_samples']} lesions, classes {html.escape(json.dumps(summary['class_counts']))}.
Stratified {summary['folds']}-fold cross-validation (seed {summary['seed']}), every model on the same folds;
95 % CIs from {summary['bootstrap']} bootstrap resamples of the out-of-fold predictions. Grid recipe:
<b>{html.escape(RECIPE_NAMES[recipe])}</b>.</p>{transductive}
<h2>SpineAI's pipeline and comparators</h2>{_metric_table(other_rows)}{cms}{auto_html}
<h2>Original grid: five best of {n_best} runs (by AUC)</h2><p>{html.escape(note)}</p>{_metric_table(top)}{nan_html}
<p>Grid time: {summary['grid']['seconds']:.1f} s ({summary['grid']['engine']} engine; {summary['grid']['runs']} runs
x {summary['folds']} folds).</p>
<h2>Seed stability: the original recipe against SpineAI's</h2>{_stability_table(summary.get('seed_stability'))}
<h2>Curves</h2>
<p>Decision curve at a prevalence of {prev_text}; treat-all and treat-none are drawn; shaded: 95 % bootstrap bands.</p>
<img src="{files['roc']}"><img src="{files['pr']}"><img src="{files['decision_curve']}">
<h3>Calibration</h3><p>One panel per model: 5 bins (n = lesions per bin), a kernel-smoothed curve, the histogram of
predictions; intercept (calibration-in-the-large, ideal 0) and slope (ideal 1; below 1: too extreme) with Wald 95 % CIs.</p>
<table><tr><th>model</th><th>intercept</th><th>slope</th><th>lesions per bin</th></tr>{cal_rows}</table>
<img style="max-width:100%" src="{files['calibration']}">
<h2>Convergence of the grid (mean over the CV folds: training folds and CV test folds)</h2>
<img style="max-width:100%" src="{files['convergence']}">
{_tripod(summary, recipe)}
<h2>All grid runs</h2>{_metric_table(rows)}
<p>Files: grid.csv (every run), study.json (all numbers).</p></body></html>"""
    (out / "report.html").write_text(page)


def write_evaluation_report(out: Path, bundle, probs: np.ndarray, y: np.ndarray, metrics: dict, source: str,
                            n_ood: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    files, _ = plot_curves(out, {bundle.id or "model": probs}, y, bundle.classes)
    banner = f'<p class="warn">{html.escape(bundle.banner())}</p>' if bundle.banner() else ""
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>SpineAI evaluation</title><style>{CSS}</style></head><body>
<h1>Evaluation of {html.escape(bundle.id)} {html.escape(bundle.version)} on {html.escape(source)}</h1>
<p class="warn">{html.escape(RESEARCH_USE_NOTICE)}</p>{banner}
<p>{len(y)} cases; {n_ood} lie outside the model's training distribution. 95 % bootstrap CIs.</p>
{_metric_table([(bundle.id or 'model', metrics)])}
<p>Confusion matrix (rows true {', '.join(bundle.classes)}; columns predicted): {confusion(probs, y)}</p>
<img src="{files['roc']}"><img src="{files['pr']}"><img src="{files['calibration']}"><img src="{files['decision_curve']}">
</body></html>"""
    (out / "report.html").write_text(page)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
