"""Lumbar degeneration grading the way the RSNA 2024 Lumbar Spine Degenerative Classification
challenge defined it: 5 conditions x 5 disc levels, each Normal/Mild, Moderate or Severe.

- ``metric``: the challenge's score (sample-weighted log loss per condition group + any-severe-spinal).
- ``study``: reading a study (RSNA layout, or series given as folders / NIfTI files), tolerant of a
  missing, unknown or damaged series.
- ``preprocess``: intensity normalisation, histogram equalisation, level crops resampled in patient
  space (slice selection), clinical tabular data with explicit imputation and one-hot encoding.
- ``synthetic``: generated studies in the RSNA layout with narrowing of known severity per level.
- ``network`` / ``grading`` / ``training``: the multi-series grader, its explanations and its training.
- ``levels`` / ``levels_training``: ``locate_discs`` finds and names the five disc levels on MR (a learned
  locator trained on real spines), used when a study has no label coordinates.

Nothing here imports torch or MONAI at import time.
"""

from __future__ import annotations

LEVELS = ("L1/L2", "L2/L3", "L3/L4", "L4/L5", "L5/S1")
# Order of the 25 outputs and of train.csv's columns: condition-major, as the challenge lists them.
CONDITIONS = (
    "spinal_canal_stenosis",
    "left_neural_foraminal_narrowing",
    "right_neural_foraminal_narrowing",
    "left_subarticular_stenosis",
    "right_subarticular_stenosis",
)
SEVERITIES = ("Normal/Mild", "Moderate", "Severe")
# Series roles, in the order the network takes them, with the RSNA series_description of each.
SERIES_ROLES = ("sagittal_t1", "sagittal_t2", "axial_t2")
SERIES_DESCRIPTIONS = {"sagittal_t1": "Sagittal T1", "sagittal_t2": "Sagittal T2/STIR", "axial_t2": "Axial T2"}


def level_key(level: str) -> str:
    """'L4/L5' -> 'l4_l5' (the suffix of train.csv's columns)."""
    return level.lower().replace("/", "_")


def target_columns() -> list:
    """The 25 label columns of train.csv, in output order."""
    return [f"{c}_{level_key(lv)}" for c in CONDITIONS for lv in LEVELS]


def condition_title(condition: str) -> str:
    """'left_neural_foraminal_narrowing' -> 'Left Neural Foraminal Narrowing' (train_label_coordinates.csv)."""
    return " ".join(w.capitalize() for w in condition.split("_"))
