"""``spineai train / evaluate / predict / study / models``: thin wrappers over spineai.models.

``add_commands(subparsers)`` is called by spineai/cli.py; every command imports what it needs
when it runs so the command line starts fast.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
from pathlib import Path

from spineai.errors import SpineAIError, warn
from spineai.output import refuse_existing, refuse_input_as_output, write_output_folder


def _csv_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _ints(text: str) -> list[int]:
    try:
        return [int(t) for t in _csv_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _floats(text: str) -> list[float]:
    try:
        return [float(t) for t in _csv_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _progress(args, label):
    if getattr(args, "quiet", False):
        return None
    from spineai.progress import TextProgress

    return TextProgress(label)


def _add_table_options(p, label_required=True):
    p.add_argument("--label-column", required=label_required, help="column holding the class labels")
    p.add_argument("--group-column", help="patient column: folds and bootstrap keep a patient's lesions together "
                                          "(default: patient_id / patient when present)")
    p.add_argument("--exclude", type=_csv_list, default=[], help="comma-separated columns that are not features")
    p.add_argument("--impute", choices=["median"], help="replace missing feature values by the column median "
                                                        "(default: refuse them, naming rows and columns)")


def cmd_train(args) -> int:
    from spineai.models.training import train_bundle

    overrides = {k: getattr(args, k) for k in ("scaling", "select_k", "dropout", "optimizer", "mode", "iterations",
                                               "learning_rate", "C", "n_estimators", "max_depth")}
    for flag in ("batchnorm", "early_stopping", "class_weights"):
        if getattr(args, flag):
            overrides[flag] = True
    if args.model == "auto" and any(v not in (None, False) for v in overrides.values()):
        raise SpineAIError("--model auto chooses the settings itself; drop the model switches or name a model")
    refuse_input_as_output(args.out, [args.table])
    path, card = train_bundle(args.table, args.label_column, args.model, args.out, folds=args.folds,
                              repeats=args.repeats, seed=args.seed, n_boot=args.bootstrap, group_column=args.group_column,
                              exclude=args.exclude, impute=args.impute, feature_definition=args.feature_definition,
                              overrides=overrides, model_id=args.id, version=args.version,
                              demonstration=args.demonstration, overwrite=args.overwrite,
                              progress=_progress(args, "cross-validation"))
    ev = card["evaluation"]
    print(f"model: {card['model_description']}")
    if card.get("selection"):
        print(f"chosen by {card['selection']['method']}")
    print(f"{ev['folds']}-fold CV x {ev['repeats']} on {card['training_data']['n_samples']} samples "
          f"({'nested, ' if card.get('selection') else ''}{ev['ci']}):")
    for k, m in ev["metrics"].items():
        print(f"  {k:12s} {m['value']:.3f}  [{m['ci_low']:.3f}, {m['ci_high']:.3f}]")
    print(f"bundle -> {path}")
    return 0


def _prediction_rows(bundle, preds) -> tuple[list[str], list[list[str]]]:
    head = ["case_id"] + [f"p_{c}" for c in bundle.classes] + ["predicted_class", "in_distribution", "ood_p_value",
                                                               "ood_distance", "ood_threshold", "out_of_range_features",
                                                               "top_features", "warnings"]
    rows = []
    for p in preds:
        rows.append([p.case_id or ""] + [f"{p.probabilities[c]:.6f}" for c in bundle.classes] +
                    [p.predicted_class, str(p.ood.in_distribution).lower(),
                     "" if p.ood.p_value is None else f"{p.ood.p_value:.4f}", f"{p.ood.distance:.4f}",
                     f"{p.ood.threshold:.4f}", ";".join(p.ood.out_of_range),
                     ";".join(f"{f}:{c:+.3f}" for f, _, c in p.contributions), " | ".join(p.warnings)])
    return head, rows


def cmd_predict(args) -> int:
    from spineai.image import atomic_write, check_output_path
    from spineai.models.bundle import load_bundle
    from spineai.models.tables import read_table

    out = check_output_path(args.out, args.overwrite, inputs=[args.bundle, args.table])
    bundle = load_bundle(args.bundle)
    preds = bundle.predict(read_table(args.table), feature_definition=args.feature_definition,
                           impute=args.impute == "median")
    head, rows = _prediction_rows(bundle, preds)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(head)
    w.writerows(rows)
    atomic_write(out, lambda tmp: tmp.write_text(buf.getvalue(), encoding="utf-8"), suffix=".csv",
                 overwrite=args.overwrite)
    if bundle.banner():
        print(bundle.banner())
    for p in preds[: args.show]:
        print(p.summary())
    n_ood = sum(not p.ood.in_distribution for p in preds)
    if len(preds) > args.show:
        print(f"... {len(preds) - args.show} more")
    print(f"{len(preds)} predictions ({n_ood} out of distribution) -> {out}")
    return 0


def cmd_evaluate(args) -> int:
    import numpy as np

    from spineai.models.bundle import load_bundle
    from spineai.models.evaluation import metrics_with_ci, small_sample_warnings
    from spineai.models.report import write_evaluation_report
    from spineai.models.tables import encode_labels, read_table

    out = refuse_existing(args.out, args.overwrite, inputs=[args.bundle, args.table])
    bundle = load_bundle(args.bundle)
    table = read_table(args.table)
    labels = encode_labels(table.column(args.label_column), f"{table.source} column {args.label_column!r}", 1)
    unknown = [c for c in labels.classes if c not in bundle.classes]
    if unknown:
        raise SpineAIError(f"labels {', '.join(unknown)} in {args.table} are not classes of the model "
                           f"({', '.join(bundle.classes)})")
    y = np.array([bundle.classes.index(labels.classes[k]) for k in labels.y])
    preds = bundle.predict(table, feature_definition=args.feature_definition, impute=args.impute == "median")
    probs = np.array([[p.probabilities[c] for c in bundle.classes] for p in preds])
    metrics = metrics_with_ci(probs, y, args.bootstrap, args.seed)
    for w in small_sample_warnings(metrics, y, bundle.classes):
        warn(w)
    n_ood = sum(not p.ood.in_distribution for p in preds)
    write_output_folder(out, lambda tmp: write_evaluation_report(tmp, bundle, probs, y, metrics,
                                                                 os.path.basename(args.table), n_ood),
                        args.overwrite, inputs=[args.bundle, args.table])
    if bundle.banner():
        print(bundle.banner())
    for k, m in metrics.items():
        print(f"  {k:12s} {m['value']:.3f}  {_ci_text(m)}")
    print(f"report -> {out / 'report.html'}")
    return 0


def _ci_text(m: dict) -> str:
    import math

    if not (math.isfinite(m["ci_low"]) and math.isfinite(m["ci_high"])):
        return "[CI undefined]"
    return f"[{m['ci_low']:.3f}, {m['ci_high']:.3f}]"


def cmd_study(args) -> int:
    from spineai.models.study import best_rows, run_study

    refuse_input_as_output(args.out, [args.table])
    s = run_study(args.table, args.label_column, args.out, folds=args.folds, seed=args.seed, n_boot=args.bootstrap,
                  iterations=args.iterations, learning_rates=args.learning_rates, with_auto=args.auto,
                  group_column=args.group_column, exclude=args.exclude, impute=args.impute, overwrite=args.overwrite,
                  progress=_progress(args, "grid"), recipe=args.recipe, prevalence=args.prevalence,
                  stability_seeds=args.stability_seeds)
    g = s["grid"]
    print(f"grid ({args.recipe} recipe): {g['runs']} runs x {s['folds']} folds in {g['seconds']:.1f} s ({g['engine']})")
    if args.recipe == "study":
        print("  study recipe: each test fold is L2-normalised by its own norms (transductive, as the study did); "
              "these figures are not those of a model that scores one new case")
    nan = [r for r in g["rows"] if "nan_from_epoch" in r]
    if nan:
        print(f"  {len(nan)} runs became NaN: " + "; ".join(f"{r['network']} {r['mode']} lr={r['learning_rate']:g} "
                                                           f"it={r['iterations']} (from epoch {r['nan_from_epoch']})"
                                                           for r in nan))
    for r in best_rows(g["rows"], top=3):
        a = r["metrics"]["auc"]
        print(f"  {r['network']} {r['mode']:10s} lr={r['learning_rate']:<7g} it={r['iterations']:<6d} "
              f"AUC {a['value']:.3f} [{a['ci_low']:.3f}, {a['ci_high']:.3f}]")
    for name, o in s["others"].items():
        a = o["metrics"]["auc"]
        print(f"  {name:22s} AUC {a['value']:.3f} [{a['ci_low']:.3f}, {a['ci_high']:.3f}]")
    print(f"report -> {Path(args.out) / 'report.html'}")
    return 0


def cmd_models(args) -> int:
    from spineai.models import registry

    if args.models_command == "install":
        e = registry.install(args.source, sha256=args.sha256, overwrite=args.overwrite,
                             progress=_progress(args, "install"))
        print(f"installed {e['id']} {e['version']} -> {e['path']} (sha256 {e['sha256'][:12]}...)")
        return 0
    entries = registry.list_models()
    if args.json:
        print(json.dumps(entries, indent=1))
        return 0
    for e in entries:
        flags = [f for f, on in (("demonstration", e.get("demonstration")), ("installed", e.get("installed")),
                                 ("not available offline", not e.get("available_locally"))) if on]
        print(f"{e['id']:28s} {e['version']:8s} {e.get('feature_definition', ''):20s} "
              f"{'[' + ', '.join(flags) + '] ' if flags else ''}{e.get('description', '')}")
    return 0


def add_commands(subparsers) -> None:
    """Add train / evaluate / predict / study / models to an argparse subparsers object."""
    from spineai.featureset import DEFINITION_LIFEX, DEFINITION_PYRADIOMICS

    defs = [DEFINITION_LIFEX, DEFINITION_PYRADIOMICS, "custom"]
    p = subparsers.add_parser("train", help="train a classifier on a feature table and write a model bundle",
                              description="Evaluate by stratified k-fold CV (nested for auto), fit on all rows, "
                                          "write a bundle (.zip or folder) with its model card.")
    p.add_argument("table", help="CSV or XLSX feature table")
    _add_table_options(p)
    p.add_argument("--model", required=True, choices=["mlp-a", "mlp-b", "logreg", "svm", "rf", "xgboost", "ensemble", "auto"])
    p.add_argument("--out", required=True, help="bundle path (.zip, or a folder)")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--repeats", type=int, default=1, help="repeats of the k-fold CV")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the CIs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--feature-definition", choices=defs, help="where the features come from (default: from the names)")
    p.add_argument("--id", help="model id for the card (default: the output name)")
    p.add_argument("--version", default="1.0.0")
    p.add_argument("--demonstration", action="store_true", help="mark the model as a demonstration")
    g = p.add_argument_group("switches (SpineAI's; the networks' shapes, mode and learning rate are the study's)")
    g.add_argument("--scaling", choices=["minmax", "standard"])
    g.add_argument("--select-k", type=int, help="SelectKBest (ANOVA F) inside each training fold")
    g.add_argument("--batchnorm", action="store_true")
    g.add_argument("--dropout", type=float)
    g.add_argument("--optimizer", choices=["sgd", "adam"])
    g.add_argument("--early-stopping", action="store_true")
    g.add_argument("--class-weights", action="store_true")
    g.add_argument("--mode", choices=["batch", "stochastic", "minibatch"])
    g.add_argument("--iterations", type=int, help="epochs")
    g.add_argument("--learning-rate", type=float)
    g.add_argument("--C", type=float, help="logreg / svm regularisation")
    g.add_argument("--n-estimators", type=int)
    g.add_argument("--max-depth", type=int)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_train)

    p = subparsers.add_parser("predict", help="classify every row of a feature table with a model bundle")
    p.add_argument("bundle", help="bundle .zip / folder, or a registry id")
    p.add_argument("table", help="CSV or XLSX with the model's feature columns (matched by name)")
    p.add_argument("--out", required=True, help="predictions CSV: one probability column per class, the predicted "
                                                "class, the out-of-distribution check, top features")
    p.add_argument("--feature-definition", choices=defs, help="where the table's features come from; a mismatch "
                                                              "with the model's is flagged on every row")
    p.add_argument("--impute", choices=["median"], help="replace missing values by the training medians")
    p.add_argument("--show", type=int, default=10, help="rows to print")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_predict)

    p = subparsers.add_parser("evaluate", help="score a model bundle on a labelled table (external validation)")
    p.add_argument("bundle")
    p.add_argument("table")
    p.add_argument("--label-column", required=True)
    p.add_argument("--out", required=True, help="report folder (report.html, metrics.json, PNG plots)")
    p.add_argument("--feature-definition", choices=defs)
    p.add_argument("--impute", choices=["median"])
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_evaluate)

    p = subparsers.add_parser("study", help="rerun the original study's 96-run grid (--recipe study: exactly; "
                                            "improved: SpineAI's) next to SpineAI's pipeline and comparators; HTML report")
    p.add_argument("table")
    _add_table_options(p)
    p.add_argument("--out", required=True, help="report folder")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--recipe", choices=["study", "improved"], default="improved",
                   help="study: the original training exactly (N(0,1) start with seed 14, shuffles from seed 10 + "
                        "epoch, the first 30 columns L2-normalised per table: transductive); improved: SpineAI's own "
                        "(min-max fitted on the training fold, Glorot start)")
    p.add_argument("--iterations", type=_ints, default=[5000, 10000, 20000, 50000],
                   help="comma-separated epochs (default: the study's)")
    p.add_argument("--learning-rates", type=_floats, default=[0.001, 0.005, 0.0075, 0.01],
                   help="default: the study's")
    p.add_argument("--prevalence", type=float, help="prevalence of the positive class for the decision curve "
                                                    "(default: the table's)")
    p.add_argument("--stability-seeds", type=int, default=10,
                   help="initial-weight seeds for the seed-stability comparison of the two recipes (0: skip)")
    p.add_argument("--auto", action="store_true", help="also run auto's nested CV (about a minute more)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_study)

    p = subparsers.add_parser("models", help="list known model bundles or install one")
    sub = p.add_subparsers(dest="models_command")
    ls = sub.add_parser("list", help="bundled, registry and installed models")
    ls.add_argument("--json", action="store_true")
    ins = sub.add_parser("install", help="install from a registry id, a local .zip / folder, or a URL")
    ins.add_argument("source")
    ins.add_argument("--sha256", help="expected sha256 of the file (registry ids carry their own)")
    ins.add_argument("--overwrite", action="store_true")
    ins.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_models, models_command="list", json=False)
