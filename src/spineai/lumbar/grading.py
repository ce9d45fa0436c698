"""Grading one study with a lumbar grading bundle: probabilities for 5 conditions x 5 levels x 3
grades, with the explanations (slice attention, series weights, Grad-CAM per level) and the
outputs (JSON, CSV in the challenge's submission format, one picture per level).

Level positions come from the study's label coordinates when it has them (as RSNA data does), else
from the disc localiser ``spineai.lumbar.levels.locate_discs`` on a sagittal series.
"""

from __future__ import annotations

import csv
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from spineai.errors import SpineAIError
from spineai.lumbar import CONDITIONS, LEVELS, SERIES_DESCRIPTIONS, SERIES_ROLES, SEVERITIES, target_columns
from spineai.lumbar.preprocess import CROPS, canal_points_from_discs, prepare_volume, study_crops
from spineai.lumbar.study import Study
from spineai.progress import report

MODEL_ID = "spineai-lumbar-demo"
TASK = "lumbar-grading"
DEMONSTRATION_NOTICE = ("DEMONSTRATION model trained on synthetic studies: its grades mean nothing for a "
                        "real patient")


@dataclass
class LumbarGrade:
    study_id: str
    probabilities: np.ndarray  # (25, 3), condition-major
    levels: dict  # level -> LPS point used (canal centre)
    level_source: str
    slice_attention: np.ndarray  # (levels, series, slices)
    series_weights: np.ndarray  # (levels, series): fusion weights, 0 for an absent series
    crops: np.ndarray  # (levels, series, slices, H, W), NaN where absent
    heatmaps: dict = field(default_factory=dict)  # level -> {role: (slices, H, W) Grad-CAM in [0, 1]}
    explained: dict = field(default_factory=dict)  # level -> condition its heatmaps explain
    warnings: list = field(default_factory=list)
    series_present: list = field(default_factory=list)
    model: str = ""
    demonstration: bool = False
    seconds: dict = field(default_factory=dict)

    def grade(self, condition: str, level: str) -> np.ndarray:
        return self.probabilities[CONDITIONS.index(condition) * len(LEVELS) + LEVELS.index(level)]

    def rows(self) -> list:
        """One row per level and condition: the three probabilities and the most likely grade."""
        out = []
        for level in LEVELS:
            for c in CONDITIONS:
                p = self.grade(c, level)
                out.append({"level": level, "condition": c, **{s: float(v) for s, v in zip(SEVERITIES, p)},
                            "most_likely": SEVERITIES[int(np.argmax(p))]})
        return out

    def worst_grade(self, level: str) -> int:
        """The highest most-likely grade over the level's conditions (0 Normal/Mild .. 2 Severe)."""
        return max(int(np.argmax(self.grade(c, level))) for c in CONDITIONS)

    def to_dict(self) -> dict:
        return {
            "study_id": self.study_id, "model": self.model, "demonstration": self.demonstration,
            "notice": DEMONSTRATION_NOTICE if self.demonstration else "",
            "series_present": self.series_present, "warnings": self.warnings, "level_source": self.level_source,
            "levels": {lv: [round(float(v), 2) for v in p] for lv, p in self.levels.items()},
            "grades": self.rows(),
            "explanations": {lv: {"heatmap_condition": self.explained.get(lv),
                                  "series_weights": {r: round(float(self.series_weights[li, ri]), 4)
                                                     for ri, r in enumerate(SERIES_ROLES)},
                                  "slice_attention": {r: [round(float(v), 4) for v in self.slice_attention[li, ri]]
                                                      for ri, r in enumerate(SERIES_ROLES) if r in self.series_present}}
                             for li, lv in enumerate(LEVELS) if lv in self.levels},
            "seconds": {k: round(v, 4) for k, v in self.seconds.items()},
        }


def load_grader(model: Optional[str] = None):
    """The grading bundle (a path or registry id; default the shipped demonstration model)."""
    from spineai.deep.bundle import load_torch_bundle

    return load_torch_bundle(model or MODEL_ID, task=TASK)


def study_levels(study: Study, device=None, localiser_model=None) -> tuple[dict, str, list]:
    """(level -> canal point, where they came from, warnings)."""
    notes = []
    if study.levels:
        levels, source = dict(study.levels), "label coordinates"
    else:
        sagittal = study.series.get("sagittal_t2") or study.series.get("sagittal_t1")
        if sagittal is None:
            raise SpineAIError(f"study {study.study_id}: no level positions: it has no label coordinates and no "
                               "sagittal series for the disc localiser")
        try:
            from spineai.lumbar.levels import locate_discs
        except ImportError:
            raise SpineAIError(f"study {study.study_id}: no label coordinates, and this installation has no disc "
                               "localiser (spineai.lumbar.levels): give the level positions") from None
        discs = locate_discs(sagittal.volume.to_sitk(), device=device, model=localiser_model)
        levels, source = canal_points_from_discs(discs), f"disc localiser on {sagittal.description}"
    absent = [lv for lv in LEVELS if lv not in levels]
    if absent:
        notes.append(f"level(s) {', '.join(absent)} not found: graded from the prior of the model's "
                     "padding only (treat those grades as unknown)")
    return levels, source, notes


def predict(network, x: np.ndarray, device=None, batch: int = 16):
    """Probabilities (N, 25, 3), slice attention (N, L, R, S), series weights (N, L, R) for inputs x."""
    import torch

    device = device or next(network.parameters()).device
    probs, att, wts = [], [], []
    network.eval()
    with torch.no_grad():
        for s in range(0, len(x), batch):
            logits = network(torch.as_tensor(x[s:s + batch]).float().to(device))
            probs.append(torch.softmax(logits.float(), -1).cpu().numpy())
            att.append(network.last_slice_attention.float().cpu().numpy())
            wts.append(network.last_series_weights.float().cpu().numpy())
    return np.concatenate(probs), np.concatenate(att), np.concatenate(wts)


def explain_levels(network, x: np.ndarray, probabilities: np.ndarray, device=None) -> tuple[dict, dict]:
    """Grad-CAM of each level's most severe condition on each present series: (heatmaps, explained)."""
    import torch

    from spineai.deep.cam import explain
    from spineai.lumbar.network import view_for

    device = device or next(network.parameters()).device
    xt = torch.as_tensor(x[None]).float().to(device)
    with torch.no_grad():
        emb, present, _ = network.embed(xt)
    heatmaps, explained = {}, {}
    for li, level in enumerate(LEVELS):
        if not bool(present[0, li].any()):
            continue
        expected = [float(probabilities[ci * len(LEVELS) + li] @ np.arange(3)) for ci in range(len(CONDITIONS))]
        ci = int(np.argmax(expected))
        explained[level] = CONDITIONS[ci]
        heatmaps[level] = {}
        for ri, role in enumerate(SERIES_ROLES):
            if not bool(present[0, li, ri]):
                continue
            view = view_for(network, ri).use(emb, present, li, ci)
            crop = torch.nan_to_num(xt[:, li, ri])[:, None]  # (1, 1, S, H, W)
            result = explain(view, crop, target_layer=f"net.features.{ri}")
            heatmaps[level][role] = result.heatmap[0]
    return heatmaps, explained


def grade_study(study: Study, model=None, device=None, explain: bool = True, histogram_equalisation: Optional[bool] = None,
                localiser_model=None, progress=None) -> LumbarGrade:
    """Grade a study with a bundle (``model``: a TorchBundle, a path or a registry id)."""
    from spineai.deep.bundle import TorchBundle
    from spineai.deep.device import select_device

    times = {}
    t0 = time.perf_counter()
    bundle = model if isinstance(model, TorchBundle) else load_grader(model)
    dev = device if hasattr(device, "type") else select_device(device)  # a torch.device, or a choice
    network = bundle.network.to(dev)
    eq = bool(bundle.card.get("preprocessing", {}).get("histogram_equalisation", False)) \
        if histogram_equalisation is None else histogram_equalisation
    times["load_model"] = time.perf_counter() - t0
    report(progress, 1, 5, "finding the levels")
    t0 = time.perf_counter()
    levels, source, notes = study_levels(study, device, localiser_model)
    times["levels"] = time.perf_counter() - t0
    report(progress, 2, 5, "cropping the levels")
    t0 = time.perf_counter()
    volumes = {r: prepare_volume(s.volume, eq) for r, s in study.series.items()}
    x = study_crops(volumes, levels)
    times["preprocess"] = time.perf_counter() - t0
    report(progress, 3, 5, "grading")
    t0 = time.perf_counter()
    probs, att, wts = predict(network, x[None], dev)
    times["network"] = time.perf_counter() - t0
    heatmaps, explained = {}, {}
    if explain:
        report(progress, 4, 5, "explaining (Grad-CAM per level)")
        t0 = time.perf_counter()
        heatmaps, explained = explain_levels(network, x, probs[0], dev)
        times["explain"] = time.perf_counter() - t0
    report(progress, 5, 5, "done")
    card = bundle.card
    return LumbarGrade(study.study_id, probs[0], levels, source, att[0], wts[0], x, heatmaps, explained,
                       list(study.warnings) + notes, [r for r in SERIES_ROLES if r in study.series],
                       f"{card.get('id', '?')} {card.get('version', '')}".strip(), bool(card.get("demonstration")), times)


# ---- outputs ------------------------------------------------------------------------------------

def submission_rows(study_id: str, probabilities: np.ndarray) -> list:
    """Rows of the challenge's submission format: row_id, normal_mild, moderate, severe."""
    return [{"row_id": f"{study_id}_{col}", "normal_mild": f"{p[0]:.6f}", "moderate": f"{p[1]:.6f}",
             "severe": f"{p[2]:.6f}"} for col, p in zip(target_columns(), probabilities)]


def write_grade(result: LumbarGrade, out: str | os.PathLike, overwrite: bool = False, pictures: bool = True) -> list:
    """``out/grades.json``, ``out/grades.csv`` (submission format) and ``out/level_L4-L5.png`` per level."""
    out = Path(out)
    names = ["grades.json", "grades.csv"] + ([f"level_{lv.replace('/', '-')}.png" for lv in LEVELS] if pictures else [])
    existing = [n for n in names if (out / n).exists()]
    if existing and not overwrite:
        raise SpineAIError(f"{out} already holds {', '.join(existing)}: choose another folder or pass --overwrite")
    from spineai.output import atomic_write

    def write_csv(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=["row_id", "normal_mild", "moderate", "severe"])
            w.writeheader()
            w.writerows(submission_rows(result.study_id, result.probabilities))

    text = json.dumps(result.to_dict(), indent=1)
    atomic_write(out / "grades.json", lambda tmp: tmp.write_text(text, encoding="utf-8"), overwrite=overwrite)
    atomic_write(out / "grades.csv", write_csv, overwrite=overwrite)
    written = [out / "grades.json", out / "grades.csv"]
    if pictures:
        for li, level in enumerate(LEVELS):
            if level in result.levels:
                path = out / f"level_{level.replace('/', '-')}.png"
                atomic_write(path, lambda tmp, li=li: level_picture(result, li, tmp), overwrite=overwrite)
                written.append(path)
    return written


def level_picture(result: LumbarGrade, li: int, path: Path) -> None:
    """Each present series' crop at this level (its most attended slice) with the Grad-CAM overlay,
    and the level's grades."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    level = LEVELS[li]
    roles = [r for r in SERIES_ROLES if np.isfinite(result.crops[li, SERIES_ROLES.index(r), 0, 0, 0])]
    fig, axes = plt.subplots(2, max(1, len(roles)), figsize=(3.0 * max(1, len(roles)), 5.6), squeeze=False)
    for n, role in enumerate(roles):
        ri = SERIES_ROLES.index(role)
        s = int(np.argmax(result.slice_attention[li, ri]))
        crop = result.crops[li, ri, s]
        off = CROPS[role].offsets_mm[s]
        for row in range(2):
            axes[row, n].imshow(crop, cmap="gray", vmin=0, vmax=1)
            axes[row, n].axis("off")
        heat = result.heatmaps.get(level, {}).get(role)
        if heat is not None:
            axes[1, n].imshow(heat[s], cmap="jet", alpha=0.45, vmin=0, vmax=1)
        axes[0, n].set_title(f"{SERIES_DESCRIPTIONS[role]}\nslice {off:+.0f} mm (attention "
                             f"{result.slice_attention[li, ri, s]:.2f}), weight {result.series_weights[li, ri]:.2f}",
                             fontsize=7)
        axes[1, n].set_title(f"Grad-CAM: {result.explained.get(level, '').replace('_', ' ')}", fontsize=7)
    for n in range(len(roles), axes.shape[1]):
        axes[0, n].axis("off")
        axes[1, n].axis("off")
    lines = [f"{c.replace('_', ' ')}: " + " / ".join(f"{v:.2f}" for v in result.grade(c, level)) for c in CONDITIONS]
    title = f"study {result.study_id}, {level} (P normal-mild / moderate / severe)\n" + "\n".join(lines)
    if result.demonstration:
        title = DEMONSTRATION_NOTICE + "\n" + title
    fig.suptitle(title, fontsize=7, color="darkred" if result.demonstration else "black")
    fig.tight_layout(rect=(0, 0, 1, 0.78))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def heatmap_on_volume(result: LumbarGrade, role: str, volume) -> np.ndarray:
    """Every level's Grad-CAM for ``role`` placed on ``volume``'s voxels (float32 like volume.array):
    a voxel takes the map of the crop slice within half a slice gap of it (the maximum where two overlap)."""
    from scipy import ndimage

    from spineai.deep.patches import lps_to_continuous_index

    out = np.zeros(volume.array.shape, np.float32)
    spec = CROPS[role]
    rot = np.asarray(spec.rotation, float).T
    offsets = np.asarray(spec.offsets_mm)
    half_gap = np.min(np.diff(offsets)) / 2 if len(offsets) > 1 else 2.0
    m = np.asarray(volume.direction) @ np.diag(volume.spacing)
    n_px = result.crops.shape[-1]
    for level, maps in result.heatmaps.items():
        if role not in maps:
            continue
        centre = np.asarray(result.levels[level], float)
        reach = (n_px / 2 + 1) * spec.spacing_mm
        span = np.array([[reach, reach, np.abs(offsets).max() + half_gap]])
        corners = centre + (np.array([[a, b, c] for a in (-1, 1) for b in (-1, 1) for c in (-1, 1)]) * span) @ rot.T
        idx = lps_to_continuous_index(volume, corners)
        size = np.asarray(volume.size_ijk)
        lo = np.clip(np.floor(idx.min(0)).astype(int), 0, size)
        hi = np.clip(np.ceil(idx.max(0)).astype(int) + 1, 0, size)
        if np.any(hi <= lo):
            continue
        k, j, i = np.meshgrid(*(np.arange(lo[a], hi[a]) for a in (2, 1, 0)), indexing="ij")
        lps = np.stack([i, j, k], -1).reshape(-1, 3) @ m.T + np.asarray(volume.origin)
        local = (lps - centre) @ rot  # (patch x, patch y, normal) in mm
        px = local[:, :2] / spec.spacing_mm + (n_px - 1) / 2.0
        nearest = np.argmin(np.abs(local[:, 2:3] - offsets[None]), 1)
        near = np.abs(local[:, 2] - offsets[nearest]) <= half_gap
        inside = near & (px >= -0.5).all(1) & (px <= n_px - 0.5).all(1)
        values = np.zeros(len(lps), np.float32)
        heat = maps[role]
        for s in np.unique(nearest[inside]):
            sel = inside & (nearest == s)
            values[sel] = ndimage.map_coordinates(heat[s], [px[sel, 1], px[sel, 0]], order=1, mode="nearest")
        box = out[lo[2]:hi[2], lo[1]:hi[1], lo[0]:hi[0]]
        np.maximum(box, values.reshape(box.shape), out=box)
    return out
