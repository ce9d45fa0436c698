"""Scoliosis screening on frontal radiographs: a 2D classifier (MONAI EfficientNet-B0 or DenseNet121)
trained with the task-neutral pieces of ``spineai.imaging.classifier``, evaluated as a 1.6 %
prevalence demands (precision-recall curve and AUPRC beside ROC, the confusion matrix at the chosen
threshold, bootstrap CIs), a decision threshold chosen on separate data and stored in the bundle,
Grad-CAM for every prediction, and the Cobb angle measured beside the yes / no.

The whole film is the input, resized to a small square (the study used 256 x 256; the demonstration
uses 64 x 64 to train on a shared CPU), intensities scaled by percentiles.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from spineai.errors import SpineAIError
from spineai.image import Volume

TASK = "scoliosis-radiograph"
CLASSES = ["no scoliosis", "scoliosis"]
MODEL_ID = "spineai-scoliosis-demo"
MODEL_VERSION = "1.1.0"  # 1.1.0: trained on a GPU (1.0.0: 300 steps at 64 px on the 2-core CPU)
RADIOGRAPH_BACKBONES = ("efficientnet-b0", "densenet121")
# The rules a threshold can be chosen by, with their targets: the study's future work.
THRESHOLD_RULES = {"youden": None, "f1": None, "recall": 0.9, "precision": 0.5}
DEMONSTRATION_NOTICE = ("DEMONSTRATION MODEL: trained on generated radiographs only; its output means nothing "
                        "for a real patient.")


# ---- inputs ------------------------------------------------------------------------------------------

def film_input(plane: np.ndarray, size, percentiles=(1.0, 99.5)):
    """A film (2D array, row 0 superior) as the network input (1, H, W): resized to ``size``
    (antialiased bilinear, aspect not kept, as the study's 256 x 256), percentiles to [0, 1]."""
    import torch
    import torch.nn.functional as F

    from spineai.deep.patches import robust_normalise

    x = torch.as_tensor(np.asarray(plane, np.float32))[None, None]
    x = F.interpolate(x, size=tuple(int(s) for s in size), mode="bilinear", antialias=True, align_corners=False)[0]
    return robust_normalise(x, torch.ones_like(x), *percentiles).clamp(0, 1)


def heatmap_to_film(heatmap: np.ndarray, shape) -> np.ndarray:
    """A map on the network input's grid back onto the film's pixels (the inverse of the resize)."""
    import torch
    import torch.nn.functional as F

    h = torch.as_tensor(np.asarray(heatmap, np.float32))[None, None]
    return F.interpolate(h, size=tuple(int(s) for s in shape), mode="bilinear", align_corners=False)[0, 0].clamp(0, 1).numpy()


@dataclass
class GeneratedSet:
    x: object  # torch (n, 1, s, s)
    y: np.ndarray  # (n,) 1 = scoliosis
    cobb: np.ndarray  # (n,) degrees
    spine: np.ndarray  # (n, s, s) bool: the vertebrae on the input grid


def generated_set(n: int, prevalence: float, seed: int, input_size: int, film_size: int = 192,
                  progress=None, what: str = "films") -> GeneratedSet:
    """``n`` generated films at ``prevalence`` as network inputs, with labels, Cobb angles and spine masks."""
    import torch

    from spineai.imaging.radiograph_synth import generated_split
    from spineai.progress import report

    xs, ys, cobbs, spines = [], [], [], []
    for i, film in enumerate(generated_split(n, prevalence, seed, film_size)):
        xs.append(film_input(film.image, (input_size, input_size)))
        spines.append(heatmap_to_film(film.spine_mask.astype(np.float32), (input_size, input_size)) > 0.5)
        ys.append(int(film.scoliosis))
        cobbs.append(film.cobb_deg)
        if (i + 1) % 200 == 0 or i + 1 == n:
            report(progress, i + 1, n, f"generating {what}")
    return GeneratedSet(torch.stack(xs), np.array(ys), np.array(cobbs), np.array(spines))


def radiograph_augment(x, rng: np.random.Generator):
    """Left-right mirror (a curve to either side is scoliosis), then the shared augmentation,
    whose random rotation (up to 10 degrees) tilts every vertebra alike and so keeps the Cobb angle."""
    from spineai.imaging.classifier import default_augment

    if rng.random() < 0.5:
        x = x.flip(-1)
    return default_augment(x, rng)


# ---- evaluation at a low prevalence ----------------------------------------------------------------

def _ci(values: np.ndarray) -> tuple[float, float]:
    lo, hi = np.nanpercentile(values, [2.5, 97.5]) if np.isfinite(values).any() else (np.nan, np.nan)
    return float(lo), float(hi)


def at_threshold(score: np.ndarray, pos: np.ndarray, threshold: float, W: np.ndarray) -> dict:
    """Precision, recall, specificity, F1 and accuracy of ``score >= threshold`` with bootstrap CIs
    (weights W, (B, n)), and the confusion matrix (rows true no / yes, columns predicted)."""
    pred = score >= threshold
    ones = np.ones((1, len(score)))
    out = {"threshold": float(threshold)}
    for w, key in ((ones, "value"), (W, "boot")):
        tp, fp = (w * (pred & pos)).sum(1), (w * (pred & ~pos)).sum(1)
        fn, tn = (w * (~pred & pos)).sum(1), (w * (~pred & ~pos)).sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            m = {"precision": tp / (tp + fp), "recall": tp / (tp + fn), "specificity": tn / (tn + fp),
                 "f1": 2 * tp / (2 * tp + fp + fn), "accuracy": (tp + tn) / (tp + fp + fn + tn)}
        for name, v in m.items():
            if key == "value":
                out[name] = {"value": float(v[0])}
            else:
                out[name]["ci_low"], out[name]["ci_high"] = _ci(v)
    out["confusion"] = [[int((~pred & ~pos).sum()), int((pred & ~pos).sum())],
                        [int((~pred & pos).sum()), int((pred & pos).sum())]]
    return out


def choose_thresholds(score: np.ndarray, pos: np.ndarray, rules: dict = THRESHOLD_RULES) -> dict:
    """Every rule's threshold on these (tuning) scores; a rule no threshold satisfies says why."""
    from spineai.models.evaluation import choose_threshold

    out = {}
    for rule, target in rules.items():
        try:
            out[rule] = choose_threshold(score, pos, rule, target)
        except SpineAIError as exc:
            out[rule] = {"rule": rule, "target": target, "error": str(exc)}
    return out


def evaluate_screening(score: np.ndarray, y: np.ndarray, thresholds: dict, n_boot: int = 1000, seed: int = 0) -> dict:
    """Test metrics for a rare positive class: AUPRC (with its chance level, the prevalence) and
    ROC-AUC with bootstrap 95 % CIs, the precision-recall curve, and precision / recall / specificity /
    F1 / confusion matrix at each chosen threshold, with CIs."""
    from spineai.models.evaluation import average_precision, bootstrap_weights, metrics_with_ci, precision_recall_curve

    score, pos = np.asarray(score, float), np.asarray(y, int) == 1
    if pos.all() or not pos.any():
        raise SpineAIError("evaluating a screening model needs both positive and negative cases")
    W = bootstrap_weights(len(score), n_boot, seed)
    ap = average_precision(score, pos)[0]
    ap_boot = average_precision(score, pos, W)
    roc = metrics_with_ci(np.column_stack([1 - score, score]), pos.astype(int), W=W)["auc"]
    curve = precision_recall_curve(score, pos)
    keep = np.unique(np.linspace(0, len(curve["threshold"]) - 1, 200).round().astype(int))  # a plottable size
    out = {"n": int(len(score)), "positives": int(pos.sum()), "prevalence": float(pos.mean()),
           "auprc": {"value": float(ap), **dict(zip(("ci_low", "ci_high"), _ci(ap_boot))),
                     "chance_level": float(pos.mean())},
           "roc_auc": roc,
           "pr_curve": {k: [round(float(v[i]), 5) for i in keep] for k, v in curve.items()},
           "at_threshold": {}}
    for rule, chosen in thresholds.items():
        if "threshold" in chosen:
            out["at_threshold"][rule] = {"target": chosen.get("target"), **at_threshold(score, pos, chosen["threshold"], W)}
    return out


def spine_attention(network, x, spine: np.ndarray, layer: Optional[str] = None) -> dict:
    """Grad-CAM (of the scoliosis class) mass on the vertebrae against their share of the film, over
    the inputs given: the ratio is 1 for a map blind to where the spine is."""
    from spineai.deep.cam import explain
    from spineai.imaging.classifier import heatmap_localisation

    res = explain(network, x, class_index=1, target_layer=layer)
    rows = [heatmap_localisation(h, s) for h, s in zip(res.heatmap, spine)]
    return {"films": len(rows), "target_layer": res.target_layer,
            "mass_on_spine": float(np.mean([r["mass_inside"] for r in rows])),
            "spine_share_of_film": float(np.mean([r["area_share"] for r in rows])),
            "ratio": float(np.mean([r["ratio"] for r in rows]))}


def cam_layer(network, input_size: int) -> str:
    """The deepest stage (EfficientNet's ``_blocks.N``, DenseNet's ``features.denseblockN``) whose map
    is at least 5 pixels across: the last maps are 2-3 pixels across at the small inputs used here, too coarse to tell the
    spine from the ribs beside it."""
    from spineai.deep.cam import spatial_layers

    layers = [(name, shape) for name, shape in spatial_layers(network, (1, 1, input_size, input_size))
              if min(shape[2:]) >= 5 and name.count(".") == 1 and "conv" not in name and "norm" not in name]
    if not layers:
        raise SpineAIError(f"no layer of the network keeps a 5-pixel map at input size {input_size}")
    return layers[-1][0]


# ---- training: the whole product ------------------------------------------------------------------

TRAIN_DEFAULTS = {"backbone": "efficientnet-b0", "input_size": 64, "steps": 600, "batch": 12, "lr": 1e-3,
                  "balance": "sampling", "freeze_steps": 0, "train_films": 3000, "train_prevalence": 0.25,
                  "tuning_films": 1500, "test_films": 2000, "film_size": 128, "seed": 0,
                  "threshold_rule": "recall"}


def train_radiograph_model(out: str | os.PathLike, backbone: str = "efficientnet-b0", input_size: int = 64,
                           steps: int = 600, batch: int = 12, lr: float = 1e-3, balance: str = "sampling",
                           freeze_steps: int = 0, init_weights: Optional[str] = None, train_films: int = 3000,
                           train_prevalence: float = 0.25, tuning_films: int = 1500, test_films: int = 2000,
                           film_size: int = 128, cobb_films: int = 120, seed: int = 0, threshold_rule: str = "recall",
                           threshold_target: Optional[float] = None, max_minutes: Optional[float] = None,
                           device=None, resume: bool = True, progress=None, command: str = "") -> dict:
    """Generate the data, train (or resume), choose the thresholds on the tuning films (1.6 %
    prevalence), test on the test films (1.6 %), measure Grad-CAM on the spine and the Cobb angle's
    error, and write the bundle ``out/model`` with its card and ``out/metrics.json``."""
    import spineai
    from spineai.deep.bundle import save_torch_bundle
    from spineai.deep.training import run_record
    from spineai.imaging.classifier import network_spec, predict_probabilities, train_classifier
    from spineai.imaging.radiograph_synth import STUDY_PREVALENCE

    if backbone not in RADIOGRAPH_BACKBONES:
        raise SpineAIError(f"radiograph backbones are {', '.join(RADIOGRAPH_BACKBONES)}, not {backbone!r}")
    if threshold_rule not in THRESHOLD_RULES:
        raise SpineAIError(f"unknown threshold rule {threshold_rule!r} (choose from {', '.join(THRESHOLD_RULES)})")
    if not 0 < train_prevalence < 1:
        raise SpineAIError(f"the training prevalence must be between 0 and 1, got {train_prevalence}")
    if input_size < 32:
        raise SpineAIError(f"the input size must be at least 32 pixels, got {input_size}")
    rules = dict(THRESHOLD_RULES)
    if threshold_target is not None:
        rules[threshold_rule] = threshold_target
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    spec = network_spec(backbone, 2, 1, 2, [input_size, input_size])
    # Separate seeds per set: no generated film appears in two of them.
    train_set = generated_set(train_films, train_prevalence, seed * 10 + 1, input_size, film_size, progress=progress,
                              what="training films")
    monitor = generated_set(max(100, train_films // 8), train_prevalence, seed * 10 + 2, input_size, film_size,
                            what="monitoring films")
    trained = train_classifier(spec, train_set.x, train_set.y, monitor.x, monitor.y, out / "training", steps=steps,
                               batch=batch, lr=lr, seed=seed, balance=balance, freeze_steps=freeze_steps,
                               init_weights=init_weights, augment=radiograph_augment, device=device,
                               progress=progress, max_minutes=max_minutes, resume=resume, val_every=100, patience=4)
    summary = trained.summary
    if summary["stopped"] == "paused":
        return {"stopped": "paused", "summary": summary}
    network = trained.network.cpu()
    del train_set
    tuning = generated_set(tuning_films, STUDY_PREVALENCE, seed * 10 + 3, input_size, film_size, progress=progress,
                           what="tuning films")
    test = generated_set(test_films, STUDY_PREVALENCE, seed * 10 + 4, input_size, film_size, progress=progress,
                         what="test films")
    tune_score = predict_probabilities(network, tuning.x)[:, 1]
    thresholds = choose_thresholds(tune_score, tuning.y == 1, rules)
    if "threshold" not in thresholds[threshold_rule]:
        raise SpineAIError(f"the {threshold_rule!r} rule chose no threshold on the tuning films: "
                           f"{thresholds[threshold_rule]['error']}")
    test_score = predict_probabilities(network, test.x)[:, 1]
    metrics = {"test": evaluate_screening(test_score, test.y, thresholds, seed=seed),
               "tuning": {"n": int(len(tuning.y)), "positives": int(tuning.y.sum())}}
    layer = cam_layer(network, input_size)
    pos_idx = np.flatnonzero(test.y == 1)
    neg_idx = np.flatnonzero(test.y == 0)[:max(10, len(pos_idx))]
    metrics["gradcam_on_spine"] = {
        "scoliosis films": spine_attention(network, test.x[pos_idx], test.spine[pos_idx], layer),
        "normal films": spine_attention(network, test.x[neg_idx], test.spine[neg_idx], layer)}
    metrics["cobb"] = cobb_errors(cobb_films, seed * 10 + 5)
    seconds = time.perf_counter() - t0
    card = {
        "id": MODEL_ID, "version": MODEL_VERSION, "task": TASK, "classes": CLASSES, "demonstration": True,
        "engine_version": spineai.__version__,
        "intended_use": "DEMONSTRATION of scoliosis screening on frontal radiographs (Cobb angle >= 10 degrees), "
                        "trained on generated films only: not for real patients. Research use; not a medical device.",
        "network": spec, "cam_layer": layer,
        "preprocessing": {"kind": "whole-film", "input_size": [input_size, input_size], "percentiles": [1.0, 99.5],
                          "resize": "antialiased bilinear to a square, aspect not kept",
                          "orientation": "frontal film, row 0 superior, bone bright (MONOCHROME1 inverted on reading)"},
        "threshold": {**thresholds[threshold_rule], "chosen_on": "tuning films at the study's 1.6 % prevalence"},
        "thresholds": thresholds,
        "training": {
            "data": f"generated frontal radiographs (spineai.imaging.radiograph_synth, {film_size} px films): "
                    f"{train_films} training films at {train_prevalence:.0%} scoliosis (the study's 1.6 % would leave "
                    f"too few positives at this size), {len(monitor.y)} monitoring films (early stopping), "
                    f"{tuning_films} tuning films (thresholds) and {test_films} test films at the study's 1.6 %; "
                    f"scoliosis = Cobb >= 10 degrees",
            "seed": seed, "backbone": backbone, "input_size": input_size, "augmentation":
                "left-right mirror, rotation up to 10 degrees, scale 0.9-1.1, gamma 0.7-1.5, Gaussian noise",
            **{k: v for k, v in summary.items() if k != "history"},
            "schedule": "head only for freeze_steps, then all layers" if freeze_steps else
                        "all layers (no initial weights: the head-only round has nothing to transfer)",
            "optimizer": "AdamW, warm-up then cosine decay (spineai.deep.training)",
            **run_record(seconds, command)},
        "metrics": metrics,
        "limits": ["Generated films: schematic anatomy (17 vertebrae, ribs, pelvis), no real patient variation, "
                   "no implants, no lateral films. What it shows is that the pipeline works, not that it screens.",
                   f"The test set holds {int(test.y.sum())} scoliosis films: the CIs are wide."],
    }
    card = _finite_or_none(card)  # a rate with nothing to count (e.g. precision when nothing is called positive)
    metrics = card["metrics"]
    bundle = save_torch_bundle(card, network, out / "model", overwrite=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return {"stopped": summary["stopped"], "bundle": str(bundle), "card": card, "summary": summary}


def _finite_or_none(value):
    """The same structure with NaN / infinite floats as None (JSON has no NaN)."""
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def cobb_errors(n: int, seed: int, size: int = 256) -> dict:
    """Mean absolute error of the measured Cobb angle against the generated one, on ``n`` films of
    ``size`` pixels (the study's 256) with Cobb angles spread evenly over 0-60 degrees."""
    from spineai.imaging.cobb import measure_cobb
    from spineai.imaging.radiograph_synth import generate_radiograph

    rng = np.random.default_rng(seed)
    err, failed = [], 0
    for _ in range(n):
        film = generate_radiograph(float(rng.uniform(0, 60)), seed=int(rng.integers(2 ** 31)), size=size)
        try:
            err.append(measure_cobb(film.image).angle_deg - film.cobb_deg)
        except SpineAIError:
            failed += 1
    err = np.asarray(err)
    return {"films": n, "film_size": size, "cobb_range_deg": [0, 60], "failed": failed,
            "mae_deg": float(np.abs(err).mean()) if len(err) else float("nan"),
            "bias_deg": float(err.mean()) if len(err) else float("nan"),
            "within_5_deg": float((np.abs(err) <= 5).mean()) if len(err) else float("nan")}


def ship_bundle(bundle: str | os.PathLike, models_dir: Optional[Path] = None, registry: Optional[Path] = None) -> dict:
    """``spineai train-radiograph --ship``: the bundle into the package, pinned in the registry."""
    from spineai.deep.bundle import ship_torch_bundle

    def description(card):
        test = card["metrics"]["test"]
        return (f"DEMONSTRATION: scoliosis (Cobb >= 10 deg) on generated frontal radiographs, "
                f"{card['training']['backbone']} at {card['training']['input_size']} px; test AUPRC "
                f"{test['auprc']['value']:.3f}, ROC-AUC {test['roc_auc']['value']:.3f} at 1.6 % prevalence; "
                f"meaningless for real patients.")

    return ship_torch_bundle(bundle, description, models_dir, registry)


# ---- one film -------------------------------------------------------------------------------------

@dataclass
class RadiographResult:
    probability: float  # of scoliosis
    threshold: float
    threshold_rule: str
    decision: bool
    cobb: object  # CobbMeasurement, or None when no spine was found
    cobb_error: str  # why there is no Cobb angle ("" when there is one)
    heatmap: np.ndarray  # Grad-CAM of the scoliosis class on the film's pixels, [0, 1]
    heatmap_volume: Volume  # the same on the film's geometry
    demonstration: bool
    model: str
    seconds: dict

    def summary(self) -> dict:
        out = {"model": self.model, "probability_scoliosis": round(self.probability, 4),
               "threshold": round(self.threshold, 4), "threshold_rule": self.threshold_rule,
               "scoliosis": self.decision, "demonstration": self.demonstration,
               "cobb_angle_deg": None if self.cobb is None else round(self.cobb.angle_deg, 1),
               "seconds": {k: round(v, 3) for k, v in self.seconds.items()}}
        if self.cobb is None:
            out["cobb_error"] = self.cobb_error
        if self.demonstration:
            out["notice"] = DEMONSTRATION_NOTICE
        return out


def load_radiograph_model(model: Optional[str] = None, device=None):
    """The scoliosis bundle (a path or registry id; default the shipped demonstration) on ``device``."""
    from spineai.deep.bundle import load_torch_bundle
    from spineai.deep.device import select_device

    bundle = load_torch_bundle(model or MODEL_ID, task=TASK)
    bundle.network.to(select_device(device))
    return bundle


def classify_radiograph(bundle, volume: Volume, method: str = "gradcam", threshold: Optional[float] = None) -> RadiographResult:
    """Probability of scoliosis, the bundle's chosen threshold (or ``threshold``) and decision, the
    Grad-CAM map on the film, and the measured Cobb angle."""
    from spineai.deep.cam import explain
    from spineai.imaging.cobb import measure_cobb
    from spineai.imaging.radiograph import radiograph_plane

    card = bundle.card
    plane = radiograph_plane(volume)
    t0 = time.perf_counter()
    pre = card["preprocessing"]
    x = film_input(plane, pre["input_size"], pre.get("percentiles", (1.0, 99.5)))
    t1 = time.perf_counter()
    res = explain(bundle.network, x[None], class_index=1, method=method, target_layer=card.get("cam_layer"))
    t2 = time.perf_counter()
    heat = heatmap_to_film(res.heatmap[0], plane.shape)
    t2b = time.perf_counter()
    try:
        cobb, cobb_error = measure_cobb(plane), ""
    except SpineAIError as exc:
        cobb, cobb_error = None, str(exc)
    t3 = time.perf_counter()
    chosen = card.get("threshold", {})
    thr = float(chosen.get("threshold", 0.5) if threshold is None else threshold)
    if not 0 <= thr <= 1:
        raise SpineAIError(f"a threshold is a probability between 0 and 1, got {thr}")
    p = float(res.probabilities[0, 1])
    vol = volume.with_array(heat.reshape(volume.array.shape).astype(np.float32))
    return RadiographResult(p, thr, chosen.get("rule", "fixed") if threshold is None else "given", p >= thr, cobb,
                            cobb_error, heat, vol, bundle.is_demonstration, f"{card.get('id')} {card.get('version')}",
                            {"preprocess": t1 - t0, "classify_and_gradcam": t2 - t1, "heatmap_to_film": t2b - t2,
                             "cobb_angle": t3 - t2b})


def save_radiograph_overlay(plane: np.ndarray, result: RadiographResult, path: str | os.PathLike,
                            overwrite: bool = False) -> Path:
    """The film with the Grad-CAM map, the centre line and the end-vertebra lines, and the verdict."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from spineai.image import atomic_write, check_output_path

    path = check_output_path(path, overwrite)
    lo, hi = np.percentile(plane, [1, 99.5])
    fig, axes = plt.subplots(1, 2, figsize=(10, 5.6))
    for ax in axes:
        ax.imshow(plane, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1)
        ax.set_axis_off()
    axes[1].imshow(result.heatmap, cmap="jet", alpha=0.4 * (result.heatmap > 0.15), vmin=0, vmax=1)
    axes[1].set_title("Grad-CAM (scoliosis)", fontsize=10)
    if result.cobb is not None:
        line = result.cobb.centre_line
        axes[0].plot(line[:, 1], line[:, 0], "-", color="lime", lw=1.2, label="centre line")
        for seg in result.cobb.end_vertebra_lines(half_width=0.08 * plane.shape[1]):
            axes[0].plot(seg[:, 1], seg[:, 0], "-", color="yellow", lw=1.6)
        axes[0].set_title(f"Cobb angle {result.cobb.angle_deg:.1f} deg (end vertebrae in yellow)", fontsize=10)
    else:
        axes[0].set_title(f"no Cobb angle: {result.cobb_error}"[:70], fontsize=9)
    verdict = "scoliosis" if result.decision else "no scoliosis"
    title = (f"P(scoliosis) = {result.probability:.3f}, threshold {result.threshold:.3f} ({result.threshold_rule}): "
             f"{verdict}")
    if result.demonstration:
        title = DEMONSTRATION_NOTICE + "\n" + title
    fig.suptitle(title, fontsize=10, color="darkred" if result.demonstration else "black")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=90, format="png"), suffix=".png", overwrite=overwrite)
    plt.close(fig)
    return path
