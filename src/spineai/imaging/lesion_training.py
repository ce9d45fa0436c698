"""The demonstration lesion image model: generated SD / MET / STB lesions in the real spines of
``spine-mr-bodies``, split by source case, a small 2.5D network (three sagittal slices through the
lesion), test metrics with CIs and Grad-CAM localisation, and the bundle.

One command makes it: ``spineai train-image-classifier ../shared/data/spine-mr-bodies --out RUN``
(``--ship`` copies it into the package). Researchers with their own labelled images use the same
command with ``--manifest`` (see ``spineai.imaging.lesion.manifest_examples``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import numpy as np

from spineai.errors import SpineAIError

from spineai.imaging.lesion import DEFAULT_MODEL as MODEL_ID, TASK

MODEL_VERSION = "1.1.0"
# Three sagittal slices 5 mm apart through the lesion, 96 x 96 mm (S-I x A-P) at 1.5 mm: two or three
# vertebral bodies and the tissue in front of them, where each class's pattern lies.
RECIPE = {"kind": "sagittal-slices", "shape": [64, 64], "spacing_mm": 1.5, "slices": 3, "slice_spacing_mm": 5.0,
          "percentiles": [1.0, 99.0], "centre": "the mask's centroid, or the click"}
DEFAULTS = {"backbone": "resnet-small", "steps": 300, "batch": 24, "lr": 2e-3, "seed": 0, "per_class": 3,
            "augmented": 4}
HONEST = ("Generated lesions teach the network where each class's drawn pattern lies (disc-centred, focal "
          "posterior, multi-level with an abscess) on real anatomy and real MR contrast; they cannot teach the true "
          "appearance, variability and mimics of spondylodiscitis, metastasis or tuberculosis, so these scores show "
          "that the pipeline works, not that the model can diagnose a patient.")


def split_demo_cases(names, seed: int = 0):
    """Train / validation / test case names (70 / 15 / 15 %), each source (VB2 T2, VB3 water-fat) in
    every part: the split is by source case, so no spine appears in two parts."""
    from spineai.imaging.classifier import split_by_group

    names = list(names)
    source = [0 if n.startswith("VB2") else 1 for n in names]
    parts = split_by_group(names, source, (0.7, 0.15, 0.15), seed)
    return [sorted(np.asarray(names)[p].tolist()) for p in parts]


def localisation(network, x, y, regions, classes, method: str = "gradcam", layer: Optional[str] = None) -> dict:
    """Grad-CAM mass inside the lesion against the lesion's share of the crop, per class (mean over
    lesions; ratio > 1 means the map favours the lesion), and how often the map's peak is in the lesion."""
    import torch

    from spineai.deep.cam import explain
    from spineai.imaging.classifier import heatmap_localisation

    rows = []
    for i in range(len(x)):
        r = explain(network, torch.as_tensor(x[i:i + 1]), method=method, target_layer=layer)
        rows.append(heatmap_localisation(r.heatmap[0], regions[i]))
    out = {}
    for c, name in enumerate(classes):
        sel = [r for r, yy in zip(rows, y) if yy == c]
        if sel:
            out[name] = {"lesions": len(sel), "mass_inside": round(float(np.mean([r["mass_inside"] for r in sel])), 3),
                         "area_share": round(float(np.mean([r["area_share"] for r in sel])), 3),
                         "ratio_mean": round(float(np.mean([r["ratio"] for r in sel])), 2),
                         "ratio_median": round(float(np.median([r["ratio"] for r in sel])), 2),
                         "peak_inside_rate": round(float(np.mean([r["peak_inside"] for r in sel])), 3)}
    return out


def train_demo_model(data: str | Path, out: str | Path, backbone: str = DEFAULTS["backbone"],
                     steps: int = DEFAULTS["steps"], batch: int = DEFAULTS["batch"], lr: float = DEFAULTS["lr"],
                     seed: int = DEFAULTS["seed"], per_class: int = DEFAULTS["per_class"],
                     augmented: int = DEFAULTS["augmented"], max_minutes: Optional[float] = None,
                     device: Optional[str] = None, resume: bool = True, progress=None, command: str = "",
                     n_boot: int = 2000, init_weights: Optional[str] = None, freeze_steps: int = 0) -> dict:
    """Generate (or reuse, from ``out/lesions-*.npz``) the lesion crops, train, test, bundle."""
    from spineai.imaging.lesion_data import CLASSES, SHIFT_MM
    from spineai.segment.body_training import DATA_CITATIONS, case_names

    gen_seconds = 0.0
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    train_names, val_names, test_names = split_demo_cases(case_names(Path(data)), seed)
    sets = {}
    for part, names, n_per, aug, s in (("train", train_names, per_class, augmented, seed),
                                       ("validation", val_names, 2, 0, seed + 1),
                                       ("test", test_names, per_class, 0, seed + 2)):
        cache = out / f"lesions-{part}.npz"
        key = json.dumps({"names": names, "per_class": n_per, "augmented": aug, "seed": s, "recipe": RECIPE,
                          **({"shift_mm": list(SHIFT_MM)} if aug else {})})
        if cache.exists():
            with np.load(cache, allow_pickle=False) as z:
                if str(z["key"]) == key and "seconds" in z:
                    sets[part] = {k: z[k] for k in ("x", "y", "region", "group")}
                    gen_seconds += float(z["seconds"])
        if part not in sets:
            from spineai.imaging.lesion_data import lesion_examples

            t0 = time.perf_counter()
            sets[part] = lesion_examples(data, names, RECIPE, n_per, s, aug, progress)
            seconds = time.perf_counter() - t0
            gen_seconds += seconds
            np.savez_compressed(cache, key=np.array(key), seconds=np.array(seconds), **sets[part])
    summary_extra = {"generation_seconds": gen_seconds, "command": command,
                     "cases": {"train": train_names, "validation": val_names, "test": test_names}}
    card = {
        "id": MODEL_ID, "version": MODEL_VERSION, "demonstration": True,
        "intended_use": "DEMONSTRATION ONLY: trained on generated lesions drawn into healthy spines. It shows how the "
                        "image classifier and its Grad-CAM heatmap work; it says nothing about a real patient.",
        "training": {
            "data": "generated SD / MET / STB lesions (spineai.imaging.lesion_data) inside the real vertebral bodies of "
                    "spine-mr-bodies (63 healthy lumbar MR volumes, T2 and water-fat)",
            "citations": DATA_CITATIONS, "split": "by source case, seeded, each source in every part",
            "augmentation": ["crop centre: centroid or any lesion voxel (a click), shifted up to "
                             f"{SHIFT_MM[1]:g} mm in the sagittal plane and {SHIFT_MM[0]:g} mm L-R (so that where the "
                             "anatomy lies in the crop does not tell the class)", "rotation up to 12 deg (sagittal)",
                             "scale 0.9-1.1", "rotation 10 deg and scale 0.9-1.1 on half the crops", "MONAI gamma 0.7-1.5",
                             "MONAI Gaussian noise"]},
        "what_generated_lesions_teach": HONEST,
        "limits": ["Demonstration only: never use its output for a patient.",
                   "Input: three sagittal slices 5 mm apart through the lesion, 96 x 96 mm; a lesion larger than that "
                   "is cut."],
    }
    return fit_and_bundle(sets, list(CLASSES), out, card, summary_extra, backbone=backbone, steps=steps, batch=batch,
                          lr=lr, seed=seed, augmented=augmented, max_minutes=max_minutes, device=device, resume=resume,
                          progress=progress, n_boot=n_boot, init_weights=init_weights, freeze_steps=freeze_steps)


MANIFEST_COLUMNS = ("image", "label", "patient")


def manifest_sets(manifest: str | Path, seed: int, augmented: int, progress=None) -> tuple:
    """Crops from a manifest CSV (columns image, label, patient, and mask or seed: a mask file with the
    image's geometry, or a point in the lesion as 'X,Y,Z' RAS mm; relative paths from the CSV's
    folder), split 70 / 15 / 15 % by patient. Returns (sets, classes, patients per part)."""
    import csv

    from spineai.image import read_volume
    from spineai.imaging.classifier import split_by_group
    from spineai.imaging.lesion import lesion_centre
    from spineai.imaging.lesion_data import lesion_crops

    manifest = Path(manifest)
    with open(manifest, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    missing = [c for c in MANIFEST_COLUMNS if not rows or c not in rows[0]]
    if missing:
        raise SpineAIError(f"{manifest}: the manifest needs columns {', '.join(MANIFEST_COLUMNS)} and mask or seed; "
                           f"missing: {', '.join(missing)}")
    classes = sorted({r["label"] for r in rows})
    if len(classes) < 2:
        raise SpineAIError(f"{manifest}: a classifier needs at least two labels, found {classes}")
    y = np.array([classes.index(r["label"]) for r in rows])
    parts = split_by_group([r["patient"] for r in rows], y, (0.7, 0.15, 0.15), seed)
    rng = np.random.default_rng(seed)
    sets, patients = {}, {}
    for part, idx in zip(("train", "validation", "test"), parts):
        xs, ys, regions, groups = [], [], [], []
        for n, i in enumerate(idx):
            row = rows[i]
            if progress:
                progress(n, len(idx), f"{part} crops")
            image = read_volume(manifest.parent / row["image"])
            mask = read_volume(manifest.parent / row["mask"]) if row.get("mask") else None
            seed_ras = [float(v) for v in row["seed"].split(",")] if row.get("seed") and mask is None else None
            if mask is None and seed_ras is None:
                raise SpineAIError(f"{manifest}, row {i + 2}: give the lesion's mask or seed")
            centre = lesion_centre(image, mask, seed_ras)
            for x, region in lesion_crops(image, mask, RECIPE, augmented if part == "train" else 0, rng, centre):
                xs.append(x)
                ys.append(y[i])
                regions.append(region)
                groups.append(row["patient"])
        sets[part] = {"x": np.stack(xs).astype(np.float32), "y": np.asarray(ys, np.int64), "region": np.stack(regions),
                      "group": np.asarray(groups)}
        patients[part] = sorted(set(groups))
    return sets, classes, patients


def train_from_manifest(manifest: str | Path, out: str | Path, model_id: str = "my-lesion-images",
                        backbone: str = DEFAULTS["backbone"], steps: int = DEFAULTS["steps"],
                        batch: int = DEFAULTS["batch"], lr: float = DEFAULTS["lr"], seed: int = DEFAULTS["seed"],
                        augmented: int = DEFAULTS["augmented"], max_minutes: Optional[float] = None,
                        device: Optional[str] = None, resume: bool = True, progress=None, command: str = "",
                        n_boot: int = 2000, init_weights: Optional[str] = None, freeze_steps: int = 0) -> dict:
    """A lesion image model from researchers' own labelled images (see ``manifest_sets``)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    sets, classes, patients = manifest_sets(manifest, seed, augmented, progress)
    card = {"id": model_id, "version": "1.0.0", "demonstration": False,
            "intended_use": "Research use only; not a medical device.",
            "training": {"data": f"manifest {Path(manifest).name}", "split": "by patient, seeded, 70 / 15 / 15 %",
                         "augmentation": ["crop centre: centroid or any lesion voxel", "rotation up to 12 deg",
                                          "scale 0.9-1.1", "MONAI gamma and noise"]},
            "limits": ["Input: three sagittal slices 5 mm apart through the lesion, 96 x 96 mm."]}
    return fit_and_bundle(sets, classes, out, card,
                          {"generation_seconds": time.perf_counter() - t0, "command": command, "cases": patients},
                          backbone=backbone, steps=steps, batch=batch, lr=lr, seed=seed, augmented=augmented,
                          max_minutes=max_minutes, device=device, resume=resume, progress=progress, n_boot=n_boot,
                          init_weights=init_weights, freeze_steps=freeze_steps)


def fit_and_bundle(sets: dict, classes: list, out: Path, card: dict, summary_extra: dict, backbone: str, steps: int,
                   batch: int, lr: float, seed: int, augmented: int, max_minutes=None, device=None, resume=True,
                   progress=None, n_boot: int = 2000, init_weights=None, freeze_steps: int = 0) -> dict:
    """Train on ``sets`` (train / validation / test crops with labels, lesion regions and groups),
    test, measure Grad-CAM localisation (target layer chosen on validation), and write ``out/model``
    with ``card`` completed (network, recipe, metrics, training record)."""
    import torch

    import spineai
    from spineai.deep.bundle import save_torch_bundle
    from spineai.deep.cam import default_target_layer
    from spineai.deep.training import run_record
    from spineai.imaging.classifier import (choose_cam_layer, evaluate, network_spec, predict_probabilities,
                                            train_classifier)

    spec = network_spec(backbone, 2, RECIPE["slices"], len(classes), RECIPE["shape"])
    trained = train_classifier(spec, sets["train"]["x"], sets["train"]["y"], sets["validation"]["x"],
                               sets["validation"]["y"], out, steps=steps, batch=batch, lr=lr, seed=seed,
                               device=device, progress=progress, max_minutes=max_minutes, resume=resume,
                               init_weights=init_weights, freeze_steps=freeze_steps)
    summary = {**trained.summary, **summary_extra}
    if summary["stopped"] == "paused":
        return summary
    net = trained.network.cpu().eval()
    test, val = sets["test"], sets["validation"]
    p_test = predict_probabilities(net, torch.as_tensor(test["x"]))
    p_val = predict_probabilities(net, torch.as_tensor(val["x"]))
    report = evaluate(p_test, test["y"], classes, groups=test["group"], n_boot=n_boot, seed=seed,
                      thresholds_from=(p_val, val["y"]))
    deepest = default_target_layer(net, (1, RECIPE["slices"], *RECIPE["shape"]))
    if all(r.any() for r in val["region"]) and all(r.any() for r in test["region"]):
        choice = choose_cam_layer(net, val["x"], val["region"])  # on validation lesions; the test stays unseen
        layer = choice["layer"]
        loc = {m: localisation(net, test["x"], test["y"], test["region"], classes, m, layer)
               for m in ("gradcam", "gradcam++")}
        loc["deepest_layer_gradcam"] = {"layer": deepest, **localisation(net, test["x"], test["y"], test["region"],
                                                                          classes, "gradcam", deepest)}
        loc["layer"], loc["layer_choice_on_validation"] = layer, choice["mean_ratio_by_layer"]
    else:  # lesions given by clicks: no region to measure against
        layer, loc = deepest, {"layer": deepest, "not_measured": "some lesions have no mask"}
    card = {**card, "task": TASK, "classes": classes, "engine_version": spineai.__version__,
            "network": spec, "backbone": backbone, "preprocessing": RECIPE, "cam_layer": layer,
            "metrics": {"test": report, "gradcam_localisation_test": loc}}
    card["training"] = {
        **card.get("training", {}), "cases": summary["cases"],
        "lesions": {"train": int(len(sets["train"]["y"]) // max(augmented, 1)), "validation": int(len(val["y"])),
                    "test": int(len(test["y"]))},
        "crops_per_training_lesion": augmented, "steps": steps, "best_step": summary["best_step"],
        "stopped": summary["stopped"], "batch": batch, "learning_rate": lr, "seed": seed,
        "balance": summary["balance"], "initial_weights": summary["initial_weights"],
        "frozen_backbone_steps": summary["freeze_steps"], "loss": "cross-entropy", "optimizer": "AdamW, warm-up then cosine decay",
        **run_record(summary["train_seconds"] + summary.get("generation_seconds", 0.0), summary["command"],
                     summary["device"])}
    bundle = out / "model"
    save_torch_bundle(card, net, bundle, overwrite=True)
    (out / "metrics.json").write_text(json.dumps(card["metrics"], indent=2))
    m = report["metrics"]
    lines = [f"test ({len(test['y'])} lesions, {len(summary['cases']['test'])} unseen cases): " + ", ".join(
        f"{k} {m[k]['value']:.3f} [{m[k]['ci_low']:.3f}, {m[k]['ci_high']:.3f}]" for k in ("accuracy", "auc", "f1")),
        f"confusion (rows true {'/'.join(classes)}): " + str(report["confusion"])]
    lines += [f"Grad-CAM ({layer}) mass in lesion vs its share, {c}: {v['mass_inside']} vs {v['area_share']} "
              f"(ratio {v['ratio_mean']})" for c, v in loc.get("gradcam", {}).items()]
    return {**summary, "bundle": str(bundle), "card": card, "report": lines}


def ship_bundle(bundle: str | Path, models_dir: Path | None = None, registry: Path | None = None) -> dict:
    """``spineai train-image-classifier --ship``: the bundle into the package, pinned in the registry."""
    from spineai.deep.bundle import ship_torch_bundle

    def description(card):
        acc = card["metrics"]["test"]["metrics"]["accuracy"]
        return (f"DEMONSTRATION: SD / MET / STB from three sagittal MR slices ({card['backbone']}), trained on "
                f"generated lesions in real spines; test accuracy {acc['value']:.3f} on generated lesions; "
                "meaningless for real patients.")

    return ship_torch_bundle(bundle, description, models_dir, registry)


