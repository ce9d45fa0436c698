"""Training and evaluating the lumbar grader (``spineai lumbar train`` / ``evaluate``).

Data: an RSNA-layout folder (real challenge data, or ``synthetic.generate_dataset``). Studies are split
by study into training, validation (early stopping) and held-out test sets. Each training example is a
whole study (5 levels x 3 series of crop stacks) with:
- random series dropout: each series is removed with probability ``series_dropout`` (at least one
  stays), so the network learns to grade from whatever subset a study has;
- crops at the labelled level positions or moved by up to 3 mm (a localiser's error), intensity
  gamma / scale per series and Gaussian noise.
The loss is the challenge's score (``network.challenge_loss``); validation monitors the challenge
score itself. Evaluation reports the score with all series and with each series removed, beside the
prior (the training set's grade frequencies per output), and per-condition confusion matrices.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import numpy as np

from spineai.errors import SpineAIError
from spineai.lumbar import CONDITIONS, SERIES_DESCRIPTIONS, SERIES_ROLES
from spineai.lumbar.grading import MODEL_ID, TASK, predict
from spineai.lumbar.metric import TERMS, challenge_score, class_frequencies, confusion_matrices
from spineai.lumbar.preprocess import CROP_PIXELS, CROPS, PERCENTILES, SLICES, prepare_volume, study_crops
from spineai.lumbar.study import open_rsna, read_rsna_study
from spineai.progress import report

MODEL_VERSION = "1.0.0"
NETWORK = {"class": "spineai.lumbar.network.LumbarGradingNet",
           "args": {"series": 3, "levels": 5, "conditions": 5, "slices": SLICES, "channels": [8, 16, 32, 32],
                    "embed": 48, "heads": 3, "hidden": 96, "dropout": 0.1}}
TRAIN_DEFAULTS = {"steps": 1500, "batch": 8, "seed": 0, "lr": 2e-3, "val_every": 100, "patience": 6}
JITTER_MM = 3.0
SPLIT = {"validation": 0.1, "test": 0.15}


def load_crops(root, split: str = "train", jitter_variants: int = 1, seed: int = 0, histogram_equalisation=False,
               progress=None) -> dict:
    """Every study of an RSNA-layout folder as crops: ``{"ids", "x" (N, V, L, R, S, H, W) float16, "labels"
    (N, 25), "warnings"}``; variant 0 at the labelled positions, the others moved by up to JITTER_MM."""
    data = open_rsna(root, split)
    ids = data.study_ids
    if not ids:
        raise SpineAIError(f"{root} holds no study under {split}_images")
    xs, labels, kept, warnings = [], [], [], {}
    for n, sid in enumerate(ids):
        report(progress, n, len(ids), f"reading study {sid}")
        try:
            study = read_rsna_study(data, sid)
        except SpineAIError as exc:
            warnings[sid] = [f"left out: {exc}"]
            continue
        if study.labels is None or not study.levels:
            warnings[sid] = study.warnings + ["left out: no grades or no level coordinates"]
            continue
        volumes = {r: prepare_volume(s.volume, histogram_equalisation) for r, s in study.series.items()}
        rng = np.random.default_rng((seed, n))
        variants = [study_crops(volumes, study.levels)] + \
            [study_crops(volumes, study.levels, rng, JITTER_MM) for _ in range(jitter_variants - 1)]
        xs.append(np.stack(variants).astype(np.float16))
        labels.append(study.labels)
        kept.append(sid)
        if study.warnings:
            warnings[sid] = study.warnings
    report(progress, len(ids), len(ids), "studies read")
    if not kept:
        raise SpineAIError(f"no study of {root} could be used: {next(iter(warnings.values()))}")
    return {"ids": kept, "x": np.stack(xs), "labels": np.stack(labels).astype(int), "warnings": warnings}


def split_studies(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices (train, validation, test), by study, seeded."""
    order = np.random.default_rng(seed).permutation(n)
    n_val, n_test = max(1, round(SPLIT["validation"] * n)), max(1, round(SPLIT["test"] * n))
    return np.sort(order[n_val + n_test:]), np.sort(order[:n_val]), np.sort(order[n_val:n_val + n_test])


def drop_series(x: np.ndarray, role: str) -> np.ndarray:
    out = np.array(x, dtype=np.float32, copy=True)
    out[:, :, SERIES_ROLES.index(role)] = np.nan
    return out


def augment(x: np.ndarray, rng: np.random.Generator, series_dropout: float) -> np.ndarray:
    """(L, R, S, H, W) float32 with NaN for absent; returns an augmented copy."""
    x = np.array(x, dtype=np.float32, copy=True)
    present = [r for r in range(x.shape[1]) if np.isfinite(x[:, r, 0, 0, 0]).any()]
    drop = [r for r in present if rng.random() < series_dropout]
    if drop and len(drop) == len(present):  # keep one series, chosen at random
        drop.pop(int(rng.integers(len(drop))))
    for r in drop:
        x[:, r] = np.nan
    for r in range(x.shape[1]):
        v = x[:, r]
        if not np.isfinite(v).any():
            continue
        v = np.clip(v, 0, 1) ** rng.uniform(0.7, 1.4) * rng.uniform(0.85, 1.15)
        x[:, r] = v + rng.normal(0, rng.uniform(0, 0.04), v.shape).astype(np.float32)
    return x


def evaluation_table(network, x: np.ndarray, labels: np.ndarray, prior: np.ndarray, device=None) -> list:
    """Challenge score (and its four terms) of the model and of the prior, with all series and with
    each series removed."""
    rows = []
    prior_p = np.broadcast_to(prior, labels.shape + (3,))
    prior_s = challenge_score(labels, prior_p)
    for scenario, role in [("all series", None)] + [(f"without {SERIES_DESCRIPTIONS[r]}", r) for r in SERIES_ROLES]:
        xx = x if role is None else drop_series(x, role)
        probs = predict(network, xx, device)[0]
        s = challenge_score(labels, probs)
        rows.append({"scenario": scenario, "studies": int(len(labels)), "model_score": round(s["score"], 4),
                     **{f"model_{t}": round(s[t], 4) for t in TERMS}, "prior_score": round(prior_s["score"], 4),
                     "model_minus_prior": round(s["score"] - prior_s["score"], 4)})
    return rows


def format_table(rows: list) -> list:
    lines = [f"{'scenario':<28} {'studies':>7} {'model':>7} {'prior':>7} {'diff':>7}   spinal  foramin  subart  any-sev"]
    for r in rows:
        lines.append(f"{r['scenario']:<28} {r['studies']:>7} {r['model_score']:>7.4f} {r['prior_score']:>7.4f} "
                     f"{r['model_minus_prior']:>+7.4f}   " + "  ".join(f"{r[f'model_{t}']:.4f}" for t in TERMS))
    return lines


def train_lumbar(data: str | Path, out: str | Path, steps: int = 1500, batch: int = 8, seed: int = 0, lr: float = 2e-3,
                 val_every: int = 100, patience: int = 6, max_minutes: Optional[float] = None, device=None,
                 resume: bool = True, series_dropout: float = 0.3, jitter_variants: int = 2, progress=None,
                 command: str = "") -> dict:
    """Train (or resume) the grader; when done, evaluate on the held-out studies and write the bundle
    (``out/model``), ``metrics.json`` and the training log."""
    import torch

    from spineai.deep.bundle import build_network, save_torch_bundle
    from spineai.deep.device import describe, select_device
    from spineai.deep.training import TrainConfig, train
    from spineai.lumbar.network import challenge_loss

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dev = select_device(device)
    torch.manual_seed(seed)
    cache = out / "crops.npz"
    t0 = time.perf_counter()
    if resume and cache.exists():
        with np.load(cache, allow_pickle=False) as z:
            loaded = {"ids": list(z["ids"]), "x": z["x"], "labels": z["labels"], "warnings": {}}
    else:
        loaded = load_crops(data, jitter_variants=jitter_variants, seed=seed, progress=progress)
        np.savez(cache, ids=np.array(loaded["ids"]), x=loaded["x"], labels=loaded["labels"])
    load_seconds = time.perf_counter() - t0
    x, labels = loaded["x"], loaded["labels"]
    tr, va, te = split_studies(len(labels), seed)
    if len(tr) < 2:
        raise SpineAIError(f"{len(labels)} studies are too few to train on (need at least 10)")
    val_x, val_y = x[va, 0].astype(np.float32), labels[va]

    def sample_batch(rng):
        pick = rng.choice(tr, size=batch)
        xb = np.stack([augment(x[i, rng.integers(x.shape[1])], rng, series_dropout) for i in pick])
        return torch.from_numpy(xb), torch.from_numpy(labels[pick])

    def validate(net):
        probs = predict(net, val_x, dev)[0]
        return {"val_score": challenge_score(val_y, probs)["score"], "neg_val_score": -challenge_score(val_y, probs)["score"]}

    network = build_network(NETWORK)
    cfg = TrainConfig(steps=steps, lr=lr, val_every=val_every, patience=patience, seed=seed, max_minutes=max_minutes,
                      monitor="neg_val_score", background_batches=False, warmup=50)
    result = train(network, sample_batch, challenge_loss, validate, out, cfg, dev, progress, resume)
    summary = {"stopped": result.stopped, "steps": result.steps_done, "best_step": result.best_step,
               "best_val_score": -result.best_metric, "train_seconds": result.seconds, "load_seconds": load_seconds,
               "device": describe(dev), "studies": len(labels), "train_studies": len(tr), "validation_studies": len(va),
               "test_studies": len(te), "test_ids": [str(loaded["ids"][i]) for i in te], "batch": batch, "seed": seed,
               "lr": lr, "series_dropout": series_dropout, "command": command}
    if result.stopped == "paused":
        return summary
    network.load_state_dict(result.best_state)
    network.eval()
    prior = class_frequencies(labels[tr])
    test_x = x[te, 0].astype(np.float32)
    table = evaluation_table(network, test_x, labels[te], prior, dev)
    matrices = confusion_matrices(labels[te], predict(network, test_x, dev)[0])
    metrics = {"held_out": table, "confusion_matrices": {c: m.tolist() for c, m in matrices.items()},
               "best_validation_score": round(-result.best_metric, 4)}
    card = lumbar_card(summary, metrics, prior, data)
    bundle = save_torch_bundle(card, network, out / "model", overwrite=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return {**summary, "bundle": str(bundle), "metrics": metrics, "report": format_table(table)}


def lumbar_card(summary: dict, metrics: dict, prior: np.ndarray, data) -> dict:
    import spineai
    from spineai.deep.training import run_record

    return {
        "id": MODEL_ID, "version": MODEL_VERSION, "task": TASK, "engine_version": spineai.__version__,
        "demonstration": True,
        "intended_use": "DEMONSTRATION of SpineAI's lumbar grading pipeline, trained on synthetic studies: "
                        "meaningless for real patients. Not a medical device.",
        "network": NETWORK, "conditions": list(CONDITIONS), "series_roles": list(SERIES_ROLES),
        "preprocessing": {"percentiles": list(PERCENTILES), "histogram_equalisation": False, "crop_pixels": CROP_PIXELS,
                          "crops": {r: {"axes_lps": [list(a) for a in c.rotation], "spacing_mm": c.spacing_mm,
                                        "slice_offsets_mm": list(c.offsets_mm)} for r, c in CROPS.items()},
                          "level_point": "spinal canal centre at the disc level"},
        "prior": np.round(prior, 5).tolist(),
        "training": {
            "data": f"synthetic lumbar studies in the RSNA 2024 layout (spineai.lumbar.synthetic), {data}",
            "split": "by study, seeded: 75 % training, 10 % validation (early stopping), 15 % held-out test",
            "studies": summary["studies"], "train_studies": summary["train_studies"],
            "validation_studies": summary["validation_studies"], "test_studies": summary["test_studies"],
            "steps": summary["steps"], "best_step": summary["best_step"], "stopped": summary["stopped"],
            "batch": summary["batch"], "learning_rate": summary["lr"], "seed": summary["seed"],
            "loss": "the challenge score (weighted log loss per condition group + any severe spinal)",
            "augmentation": [f"random series dropout p={summary['series_dropout']}", f"level positions moved up to {JITTER_MM} mm",
                             "gamma 0.7-1.4 and scale 0.85-1.15 per series", "Gaussian noise"],
            **run_record(summary["train_seconds"] + summary["load_seconds"], summary["command"], summary["device"]),
        },
        "metrics": metrics,
        "limits": ["Synthetic training data only: the images resemble MR but are not; use it to see the pipeline work.",
                   "Level positions come from label coordinates or the disc localiser; a wrong level gives wrong grades."],
    }


def evaluate(data: str | Path, model=None, split: str = "train", device=None, ids=None, progress=None) -> dict:
    """The challenge score of a bundle on an RSNA-layout folder, with all series and with each removed,
    beside the prior stored in the bundle's card; per-condition confusion matrices."""
    from spineai.deep.device import select_device
    from spineai.lumbar.grading import load_grader

    bundle = load_grader(model) if not hasattr(model, "network") else model
    dev = select_device(device)
    loaded = load_crops(data, split, progress=progress)
    keep = np.arange(len(loaded["ids"])) if ids is None else \
        np.array([n for n, i in enumerate(loaded["ids"]) if str(i) in {str(v) for v in ids}])
    if not len(keep):
        raise SpineAIError("none of the requested studies is in the data")
    x, labels = loaded["x"][keep, 0].astype(np.float32), loaded["labels"][keep]
    network = bundle.network.to(dev)
    prior = np.asarray(bundle.card.get("prior") or class_frequencies(labels))
    table = evaluation_table(network, x, labels, prior, dev)
    matrices = confusion_matrices(labels, predict(network, x, dev)[0])
    return {"model": f"{bundle.card.get('id')} {bundle.card.get('version')}", "demonstration": bundle.is_demonstration,
            "table": table, "confusion_matrices": {c: m.tolist() for c, m in matrices.items()},
            "warnings": loaded["warnings"], "report": format_table(table)}


def ship(bundle: str | Path, models_dir: Optional[Path] = None, registry: Optional[Path] = None) -> dict:
    """``spineai lumbar train --ship``: the grading bundle into the package, pinned in the registry."""
    from spineai.deep.bundle import ship_torch_bundle

    def description(card):
        allrow = card["metrics"]["held_out"][0]
        return (f"DEMONSTRATION: lumbar degeneration grading (5 conditions x 5 levels) from sagittal T1, "
                f"sagittal T2/STIR and axial T2, trained on synthetic studies; held-out challenge score "
                f"{allrow['model_score']} vs prior {allrow['prior_score']} ({allrow['studies']} synthetic "
                "studies). Meaningless for real patients.")

    return ship_torch_bundle(bundle, description, models_dir, registry)


