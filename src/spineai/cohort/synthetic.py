"""A generated cohort on disk (phantom images, manifest), for the tests, the benchmark and trying
the cohort commands without patient data. Every case is a demonstration, not a patient."""

from __future__ import annotations

import csv
from pathlib import Path

SMALL = {"shape_ijk": (112, 144, 16), "spacing": (1.5, 1.5, 3.0)}  # the smallest field of view a phantom takes


def write_synthetic_cohort(folder, n_cases: int, seed: int = 0, masks: str = "alternate", size: str = "small",
                           cases_per_patient: int = 2) -> Path:
    """Write ``n_cases`` phantom cases (SD / MET / STB in turn) and ``folder/manifest.csv``: id,
    patient_id, image, mask (``masks``: 'all', 'none' or 'alternate' cases), seed (the lesion
    centre, RAS), diagnosis and two clinical columns (age; CRP, higher in SD, some missing)."""
    import numpy as np

    from spineai.image import write_volume
    from spineai.phantom import make_spine_phantom

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    kinds = ("SD", "MET", "STB")
    rows = []
    for n in range(n_cases):
        kind = kinds[n % 3]
        p = make_spine_phantom(seed=seed * 1000 + n, lesion_kind=kind, **(SMALL if size == "small" else {}))
        cid = f"case{n:03d}"
        write_volume(p.image, folder / f"{cid}_img.nii.gz")
        with_mask = masks == "all" or (masks == "alternate" and n % 2 == 1)
        if with_mask:
            write_volume(p.lesion_mask, folder / f"{cid}_mask.nii.gz")
        crp = rng.normal(60 if kind == "SD" else 20, 15)
        rows.append({"id": cid, "patient_id": f"P{n // cases_per_patient:03d}", "image": f"{cid}_img.nii.gz",
                     "mask": f"{cid}_mask.nii.gz" if with_mask else "",
                     "seed": " ".join(f"{v:.3f}" for v in p.lesion_center_ras), "diagnosis": kind,
                     "age": f"{rng.normal(62, 12):.0f}", "crp": "" if n % 7 == 3 else f"{crp:.1f}"})
    manifest = folder / "manifest.csv"
    with manifest.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return manifest
