"""Training and validation of the lumbar disc-level locator (``spineai.lumbar.levels``).

Data: ``spine-mr-bodies`` (folders of ``CASE_img.nii.gz`` + ``CASE_bodies.nii.gz``, every body
labelled, the lowest being L5; see its README for the sources to cite). The split is the body-click
model's (``spineai.segment.body_training.split_cases``, same seed), so no case that either model was
validated on was trained on by the other.

Each example is one field of view at 2 mm on LPS axes (192 x 128 x 64 mm, S-I x A-P x L-R), shifted,
rotated and scaled at random, labelled background / body / L5. Augmentation is the body-click
model's (contrast inversion, random curves, gamma, noise, bias field, blur, 3-4.5 mm slices),
plus random cuts of the field of view above the bodies and below L5, so that the network cannot
take L5 to be "the lowest body 24 mm above the image's edge" (these images are cropped so).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from spineai.errors import SpineAIError
from spineai.image import Volume, read_volume
from spineai.lumbar.levels import CLASSES, LUMBAR_DISCS, TASK, LevelLocator, LevelResult, reference_levels

PATCH_SHAPE = (96, 64, 32)  # (S-I, A-P, L-R) voxels: 192 x 128 x 64 mm at 2 mm
SPACING_MM = 2.0
TRAIN_DEFAULTS = {"steps": 1000, "batch": 2, "seed": 0, "lr": 3e-3, "val_every": 250, "patience": 4}
NETWORK = {"class": "monai.networks.nets.UNet",
           "args": {"spatial_dims": 3, "in_channels": 1, "out_channels": len(CLASSES), "channels": [8, 16, 32, 64, 96],
                    "strides": [2, 2, 2, 2], "num_res_units": 1}}
MODEL_ID = "spineai-lumbar-levels"
MODEL_VERSION = "1.0.0"


@dataclass
class LevelCase:
    name: str
    image: Volume
    classes: Volume  # 0 background, 1 body, 2 L5
    reference: LevelResult
    image_t: object = None
    classes_t: object = None


def load_level_case(folder: Path, name: str) -> LevelCase:
    import torch

    image = read_volume(Path(folder) / f"{name}_img.nii.gz")
    labels = read_volume(Path(folder) / f"{name}_bodies.nii.gz")
    ref = reference_levels(labels)
    from scipy import ndimage

    values = [int(v) for v in np.unique(labels.array) if v != 0]
    kji = np.array(ndimage.center_of_mass(labels.array > 0, labels.array, values))
    m = labels.ijk_to_lps_matrix()
    l5 = values[int(np.argmin((kji[:, ::-1] @ m[:3, :3].T + m[:3, 3])[:, 2]))]  # the lowest body (LPS z is superior)
    classes = (labels.array > 0).astype(np.uint8) + (labels.array == l5).astype(np.uint8)
    cls = labels.with_array(classes)
    return LevelCase(name, image, cls, ref, torch.from_numpy(image.array.astype(np.float32)),
                     torch.from_numpy(classes.astype(np.float32)))


def make_example(case: LevelCase, rng: np.random.Generator, augment: bool = True):
    """(input (1, *PATCH_SHAPE), target (1, *PATCH_SHAPE) class indices) for one field of view."""
    import torch

    from spineai.deep.patches import PatchGrid, robust_normalise, sample_patch
    from spineai.lumbar.levels import whole_image_grid
    from spineai.segment.body_training import _acquisition_augment, _contrast_augment, _rotation

    centre = np.array(whole_image_grid(case.image, SPACING_MM).centre_lps, float)
    l5s1 = np.asarray(case.reference.discs["L5/S1"], float)
    if augment:
        centre = centre + rng.uniform(-12, 12, size=3) * np.array([0.5, 1.0, 2.5])
        # L5/S1 stays at least 30 mm inside the field of view's lower edge.
        centre[2] = min(centre[2], l5s1[2] + PATCH_SHAPE[0] * SPACING_MM / 2 - 30.0)
        s = rng.uniform(0.85, 1.15)
        grid = PatchGrid(tuple(centre), PATCH_SHAPE, SPACING_MM, _rotation(rng), (s, s, s))
    else:
        centre[2] = min(centre[2], l5s1[2] + PATCH_SHAPE[0] * SPACING_MM / 2 - 30.0)
        grid = PatchGrid(tuple(centre), PATCH_SHAPE, SPACING_MM)
    values, inside = sample_patch(case.image, grid, case.image_t)
    target, _ = sample_patch(case.classes, grid, case.classes_t, mode="nearest")
    if augment:
        z_l5s1 = float(grid.lps_to_patch_index(l5s1[None])[0, 2])
        keep = torch.ones(PATCH_SHAPE[0])
        if rng.random() < 0.5:  # less below L5: 6-24 mm of sacrum instead of the data's 24
            keep[: max(0, int(z_l5s1 - rng.uniform(3, 12)))] = 0
        if rng.random() < 0.3:  # the field of view ends somewhere above L4
            top = int(z_l5s1 + rng.uniform(45, 110) / SPACING_MM)
            keep[max(top, 0):] = 0
        inside = inside * keep[:, None, None]
        values = _acquisition_augment(values * inside, inside, rng, SPACING_MM)
    img = robust_normalise(values, inside)
    if augment:
        img = _contrast_augment(img, inside, rng)
    return img[None].float(), (target * inside).round().long()[None]


def disc_rows(case_name: str, result: LevelResult, reference: LevelResult) -> list[dict]:
    """One row per reference lumbar disc: found, distance (mm), correctly named (the found point's
    nearest reference disc, counting the discs above L1 and the top body's upper endplate too, is
    the one of its name)."""
    from spineai.lumbar.levels import discs_from_bodies

    every = {k: np.asarray(v, float) for k, v in discs_from_bodies(reference.bodies).items()}
    every["above the top body"] = np.asarray(reference.bodies[0].upper_endplate, float)
    rows = []
    for level in LUMBAR_DISCS:
        if level not in reference.discs:
            continue
        ref = np.asarray(reference.discs[level], float)
        row = {"case": case_name, "level": level, "found": level in result.discs, "distance_mm": float("nan"),
               "named_correctly": False, "ref_x": ref[0], "ref_y": ref[1], "ref_z": ref[2]}
        if row["found"]:
            p = np.asarray(result.discs[level], float)
            nearest = min(every, key=lambda k: np.linalg.norm(every[k] - p))
            row.update(distance_mm=float(np.linalg.norm(p - ref)), named_correctly=nearest == level,
                       x=p[0], y=p[1], z=p[2])
        rows.append(row)
    return rows


def summarise_rows(rows: Sequence[dict]) -> dict:
    d = np.array([r["distance_mm"] for r in rows if r["found"]])
    return {"discs": len(rows), "found": int(sum(r["found"] for r in rows)),
            "named_correctly": round(float(np.mean([r["named_correctly"] for r in rows])), 4) if rows else 0.0,
            "median_mm": round(float(np.median(d)), 2) if d.size else None,
            "p95_mm": round(float(np.percentile(d, 95)), 2) if d.size else None,
            "max_mm": round(float(d.max()), 2) if d.size else None}


def evaluate_locator(loc: LevelLocator, cases: Sequence[LevelCase], progress=None) -> tuple[list, list]:
    """Locate the discs of each case through the user's path (whole image, own geometry); returns
    (disc rows, per-case rows with seconds)."""
    rows, per_case = [], []
    for n, case in enumerate(cases):
        t0 = time.perf_counter()
        try:
            result = loc.locate(case.image)
        except SpineAIError:
            result = LevelResult({}, [])
        seconds = time.perf_counter() - t0
        case_rows = disc_rows(case.name, result, case.reference)
        rows += case_rows
        per_case.append({"case": case.name, "bodies_found": " ".join(b.name for b in result.bodies),
                         "seconds": round(seconds, 3), **summarise_rows(case_rows)})
        if progress:
            progress(n + 1, len(cases), f"validating {case.name}")
    return rows, per_case


def _score(summary: dict) -> float:
    """Higher is better: naming first, then distance."""
    if not summary["found"]:
        return -1.0
    return summary["named_correctly"] - summary["median_mm"] / 100.0 - summary["p95_mm"] / 1000.0


def train_levels_model(data: str | Path, out: str | Path, steps: int = 1000, batch: int = 2, seed: int = 0,
                       lr: float = 3e-3, val_every: int = 250, patience: int = 4, max_minutes: Optional[float] = None,
                       device: Optional[str] = None, resume: bool = True, progress=None, command: str = "") -> dict:
    """Train (or resume) the locator; returns a summary with the best network (or 'paused')."""
    import torch
    from monai.data import set_track_meta
    from monai.losses import DiceCELoss

    from spineai.deep.bundle import build_network
    from spineai.deep.device import describe, select_device
    from spineai.deep.training import TrainConfig, train
    from spineai.segment.body_training import case_names, split_cases

    set_track_meta(False)
    dev = select_device(device)
    torch.manual_seed(seed)
    names = case_names(Path(data))
    train_names, val_names = split_cases(names, seed)
    t0 = time.perf_counter()
    cases = []
    for n, name in enumerate(train_names + val_names):
        if progress:
            progress(n, len(names), f"loading {name}")
        cases.append(load_level_case(Path(data), name))
    train_cases, val_cases = cases[: len(train_names)], cases[len(train_names):]
    load_seconds = time.perf_counter() - t0

    def sample_batch(rng):
        pairs = [make_example(train_cases[rng.integers(len(train_cases))], rng) for _ in range(batch)]
        return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])

    def validate(net):
        rows, _ = evaluate_locator(LevelLocator(network=net, card={}, device=str(dev.type)), val_cases)
        s = summarise_rows(rows)
        return {"val_score": _score(s), "val_named": s["named_correctly"], "val_median_mm": s["median_mm"],
                "val_p95_mm": s["p95_mm"]}

    network = build_network(NETWORK)
    loss = DiceCELoss(to_onehot_y=True, softmax=True)
    cfg = TrainConfig(steps=steps, lr=lr, val_every=val_every, patience=patience, seed=seed, max_minutes=max_minutes,
                      monitor="val_score")
    result = train(network, sample_batch, loss, validate, out, cfg, dev, progress, resume)
    summary = {"stopped": result.stopped, "steps": result.steps_done, "best_step": result.best_step,
               "best_val_score": result.best_metric, "train_seconds": result.seconds, "load_seconds": load_seconds,
               "device": describe(dev), "train_cases": train_names, "validation_cases": val_names, "batch": batch,
               "seed": seed, "lr": lr, "command": command, "val_cases_loaded": val_cases}
    if result.stopped == "paused":
        return summary
    network.load_state_dict(result.best_state)
    network.eval()
    return {**summary, "network": network}


def levels_card(summary: dict, metrics: Optional[dict] = None) -> dict:
    import spineai
    from spineai.deep.training import run_record
    from spineai.segment.body_training import DATA_CITATIONS

    return {
        "id": MODEL_ID, "version": MODEL_VERSION, "task": TASK, "engine_version": spineai.__version__,
        "demonstration": False, "classes": list(CLASSES), "levels": list(LUMBAR_DISCS),
        "intended_use": "Research use: find and name the lumbar discs (L1/L2 to L5/S1) on sagittal or 3D lumbar MR, "
                        "e.g. to place crops for degeneration grading. Not a medical device; check the names.",
        "network": NETWORK,
        "preprocessing": {"spacing_mm": SPACING_MM, "axes": "LPS (x L, y P, z S)", "field_of_view": "the whole image",
                          "percentiles": [1.0, 99.0], "training_patch_shape": list(PATCH_SHAPE)},
        "postprocessing": "bodies: P(body) + P(L5) >= 0.5 interpolated to 1 mm, opened by a 3 mm ball (cuts thin "
                          "bridges across discs), parts >= 2 mL; L5: the body with the highest mean P(L5) (>= 0.5, "
                          "else the lowest); bodies above named upward; discs halfway between endplate centres, "
                          "L5/S1 at L5's lower endplate centre",
        "postprocessing_note": "The opening was added after the first validation showed neighbouring bodies merged "
                               "(89 % named correctly without it); its radius (3 mm) was set once, not tuned.",
        "training": {
            "data": "spine-mr-bodies: 63 real lumbar MR volumes, every vertebral body labelled, 1 mm isotropic",
            "citations": DATA_CITATIONS,
            "split": "by case, seeded: the same split as spineai-body-click (split_cases, seed 0)",
            "train_cases": summary["train_cases"], "validation_cases": summary["validation_cases"],
            "steps": summary["steps"], "best_step": summary["best_step"], "stopped": summary["stopped"],
            "batch": summary["batch"], "learning_rate": summary["lr"], "seed": summary["seed"],
            "loss": "Dice + cross-entropy over background / body / L5 (MONAI DiceCELoss, softmax)",
            "optimizer": "AdamW, warm-up then cosine decay",
            "selection": "the validation with the best share of correctly named discs, then distance",
            "augmentation": ["shift +-6 / 12 / 30 mm (L-R / A-P / S-I)", "rotation up to 20 deg (sagittal) / 12 deg",
                             "scale 0.85-1.15", "field of view cut 6-24 mm below L5 (50 %) and above L4 (30 %)",
                             "bias field", "thick slices 3-4.5 mm", "blur", "contrast inversion",
                             "random intensity curves", "gamma 0.6-1.7", "Gaussian noise"],
            **run_record(summary["train_seconds"], summary["command"], summary["device"]),
        },
        "metrics": metrics or {},
        "limits": [
            "Trained on 50 healthy adult lumbar spines (water-fat and T2 MR) whose images end 24 mm below L5: T1, "
            "STIR, thick slices and other fields of view are covered only by augmentation.",
            "Naming counts up from L5: transitional vertebrae (sacralised L5, lumbarised S1) and a sixth lumbar "
            "vertebra are not recognised; fractures, listhesis and scoliosis were not in the data.",
            "Reference discs come from the body masks (halfway between endplate centres), not from disc annotations.",
        ],
    }


def train_and_bundle(data: str | Path, out: str | Path, progress=None, command: str = "", **train_args) -> dict:
    """``spineai train-lumbar-levels``: train or resume; then validate on the held-out cases
    through the user's path and write the bundle (``out/model``), ``validation_discs.csv``,
    ``validation_cases.csv`` and ``metrics.json``."""
    import csv
    import json

    from spineai.deep.bundle import save_torch_bundle

    out = Path(out)
    summary = train_levels_model(data, out, progress=progress, command=command, **train_args)
    val_cases = summary.pop("val_cases_loaded")
    if summary["stopped"] == "paused":
        return summary
    network = summary.pop("network")
    bundle_path = out / "model"
    save_torch_bundle(levels_card(summary), network, bundle_path, overwrite=True)
    loc = LevelLocator(str(bundle_path), train_args.get("device"))
    rows, per_case = evaluate_locator(loc, val_cases, progress)
    for name, table in (("validation_discs.csv", rows), ("validation_cases.csv", per_case)):
        keys = list(dict.fromkeys(k for r in table for k in r))
        with open(out / name, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=keys)
            writer.writeheader()
            writer.writerows(table)
    per_level = {lv: summarise_rows([r for r in rows if r["level"] == lv]) for lv in LUMBAR_DISCS}
    metrics = {"validation": {"cases": len(val_cases), **summarise_rows(rows),
                              "seconds_per_study_median": round(float(np.median([c["seconds"] for c in per_case])), 3)},
               "per_level": per_level, "per_case": per_case}
    save_torch_bundle(levels_card(summary, metrics), network, bundle_path, overwrite=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    v = metrics["validation"]
    report = [f"{v['cases']} unseen cases, {v['discs']} discs: {v['named_correctly'] * 100:.1f} % named correctly, "
              f"median {v['median_mm']} mm, 95th percentile {v['p95_mm']} mm"]
    return {**summary, "bundle": str(bundle_path), "metrics": metrics, "report": report}


def ship_levels_bundle(bundle: str | Path, models_dir: Path | None = None, registry: Path | None = None) -> dict:
    """``spineai train-lumbar-levels --ship``: the bundle into the package, pinned in the registry."""
    from spineai.deep.bundle import ship_torch_bundle

    def description(card):
        v = card.get("metrics", {}).get("validation", {})
        return (f"Lumbar disc levels L1/L2-L5/S1 on MR (3D U-Net at 2 mm, body / L5 labels); on {v.get('cases', '?')} "
                f"unseen cases {v.get('named_correctly', 0) * 100:.1f} % named correctly, median {v.get('median_mm', '?')} "
                f"mm, 95th percentile {v.get('p95_mm', '?')} mm.")

    return ship_torch_bundle(bundle, description, models_dir, registry)


