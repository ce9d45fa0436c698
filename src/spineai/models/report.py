"""PNG plots (matplotlib, Agg) and a self-contained HTML report a person reads."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Mapping

import numpy as np

from spineai import RESEARCH_USE_NOTICE
from spineai.models.evaluation import METRICS, calibration_curve, confusion, decision_curve


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


def plot_curves(out: Path, models: Mapping[str, np.ndarray], y: np.ndarray, classes: list[str]) -> dict[str, str]:
    """ROC, precision-recall, calibration and decision curves of the positive class (binary) or
    of the last class one-vs-rest; returns {plot name: file name}."""
    plt = _plt()
    c = 1 if len(classes) == 2 else len(classes) - 1
    label = classes[c]
    files = {}
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, pr in models.items():
        fpr, tpr = roc_points(*_pos_score(pr, y, c))
        ax.plot(fpr, tpr, label=name)
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title=f"ROC ({label} positive)")
    ax.legend(fontsize=7, loc="lower right")
    files["roc"] = "roc.png"
    fig.tight_layout(), fig.savefig(out / files["roc"], dpi=110), plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, pr in models.items():
        r, p = pr_points(*_pos_score(pr, y, c))
        ax.plot(r, p, label=name)
    ax.axhline((y == c).mean(), color="k", ls=":", lw=1)
    ax.set(xlabel="recall", ylabel="precision", title=f"Precision-recall ({label})", ylim=(0, 1.02))
    ax.legend(fontsize=7, loc="lower left")
    files["pr"] = "pr.png"
    fig.tight_layout(), fig.savefig(out / files["pr"], dpi=110), plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, pr in models.items():
        cal = calibration_curve(*_pos_score(pr, y, c), bins=5)
        ax.plot(cal["mean_predicted"], cal["observed_fraction"], "o-", label=name)
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set(xlabel="predicted probability", ylabel="observed fraction", title=f"Calibration ({label}, 5 bins)")
    ax.legend(fontsize=7, loc="upper left")
    files["calibration"] = "calibration.png"
    fig.tight_layout(), fig.savefig(out / files["calibration"], dpi=110), plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    dc = None
    for name, pr in models.items():
        dc = decision_curve(*_pos_score(pr, y, c))
        ax.plot(dc["threshold"], dc["net_benefit"], label=name)
    if dc is not None:
        ax.plot(dc["threshold"], dc["treat_all"], "k--", lw=1, label=f"treat all as {label}")
        ax.axhline(0, color="k", lw=1, label="treat none")
    prev = (y == c).mean()
    ax.set(xlabel="threshold probability", ylabel="net benefit", title=f"Decision curve ({label})",
           ylim=(-0.05, prev + 0.05))
    ax.legend(fontsize=7)
    files["decision_curve"] = "decision_curve.png"
    fig.tight_layout(), fig.savefig(out / files["decision_curve"], dpi=110), plt.close(fig)
    return files


def plot_convergence(out: Path, curves: dict, name: str = "convergence.png") -> str:
    """Training and held-out loss against iterations for every network / mode / learning rate."""
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
                    line, = ax.plot(cv["epoch"], cv["train_loss"], lw=1, label=f"lr {lr} train")
                    ax.plot(cv["epoch"], cv["test_loss"], lw=1.5, ls="--", color=line.get_color(), label=f"lr {lr} held-out")
            ax.set_xscale("log")
            ax.set_title(f"{net} {mode}", fontsize=9)
            ax.set_xlabel("iterations (epochs)")
            if j == 0:
                ax.set_ylabel("cross-entropy")
    axes[0][-1].legend(fontsize=6)
    fig.tight_layout(), fig.savefig(out / name, dpi=100), plt.close(fig)
    return name


def _fmt(m: dict) -> str:
    v = m["value"]
    if "ci_low" in m and np.isfinite(m.get("ci_low", np.nan)):
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


def write_study_report(out: Path, summary: dict, grid, others: dict, ds) -> None:
    from spineai.models.study import best_rows, grid_csv_lines

    out.mkdir(parents=True, exist_ok=True)
    (out / "grid.csv").write_text("\n".join(grid_csv_lines(grid.rows)) + "\n")
    (out / "study.json").write_text(json.dumps(summary, indent=1, default=float))
    best = best_rows(grid.rows, "auc", 1)[0]
    best_key = f"{best['network']}|{best['mode']}|{best['learning_rate']:g}|{best['iterations']}"
    curves_models = {f"study best: {best['network']} {best['mode']} lr {best['learning_rate']:g} {best['iterations']} it": grid.probs[best_key]}
    curves_models.update({k: v.probs for k, v in others.items()})
    files = plot_curves(out, curves_models, ds.y, ds.classes)
    files["convergence"] = plot_convergence(out, grid.curves)
    rows = [(f"{r['network']} {r['mode']} lr={r['learning_rate']:g} it={r['iterations']}", r["metrics"]) for r in grid.rows]
    top = [(f"{r['network']} {r['mode']} lr={r['learning_rate']:g} it={r['iterations']}", r["metrics"]) for r in best_rows(grid.rows)]
    other_rows = [(f"{k}: {v.description}", v.metrics) for k, v in others.items()]
    cms = "".join(f"<p>{html.escape(k)}: confusion matrix (rows true {', '.join(ds.classes)}; columns predicted) "
                  f"{confusion(v.probs, v.y)}</p>" for k, v in others.items())
    n_best = len(grid.rows)
    note = (f"The best of {n_best} grid runs is chosen on the same out-of-fold predictions it is scored on, so its "
            "figure is optimistic (a choice among many); the improved pipeline and comparators use fixed settings, "
            "and `auto` reports nested cross-validation.")
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>SpineAI study report</title><style>{CSS}</style></head><body>
<h1>SD / MET study: original grid, improved pipeline, comparators</h1>
<p class="warn">{html.escape(RESEARCH_USE_NOTICE)}</p>
<p>Table <b>{html.escape(summary['table'])}</b>: {summary['n_samples']} lesions, classes {html.escape(json.dumps(summary['class_counts']))}.
Stratified {summary['folds']}-fold cross-validation (seed {summary['seed']}), every model on the same folds;
95 % CIs from {summary['bootstrap']} bootstrap resamples of the out-of-fold predictions.</p>
<h2>Improved pipeline and comparators</h2>{_metric_table(other_rows)}{cms}
<h2>Original grid: five best of {n_best} runs (by AUC)</h2><p>{html.escape(note)}</p>{_metric_table(top)}
<p>Grid time: {summary['grid']['seconds']:.1f} s ({summary['grid']['engine']} engine; {summary['grid']['runs']} runs
x {summary['folds']} folds).</p>
<h2>Curves</h2>
<img src="{files['roc']}"><img src="{files['pr']}"><img src="{files['calibration']}"><img src="{files['decision_curve']}">
<h2>Convergence of the grid (mean over folds)</h2><img style="max-width:100%" src="{files['convergence']}">
<h2>All grid runs</h2>{_metric_table(rows)}
<p>Files: grid.csv (every run), study.json (all numbers).</p></body></html>"""
    (out / "report.html").write_text(page)


def write_evaluation_report(out: Path, bundle, probs: np.ndarray, y: np.ndarray, metrics: dict, source: str,
                            n_ood: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    files = plot_curves(out, {bundle.id or "model": probs}, y, bundle.classes)
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
