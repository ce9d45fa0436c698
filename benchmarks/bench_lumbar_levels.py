"""Lumbar disc-level localisation on real MR cases never trained on: accuracy and time per study.

    SPINEAI_TEST_DATA=../shared/data python benchmarks/bench_lumbar_levels.py [--device cpu|cuda] [--repeats 3]

Reads the validation cases of the shipped ``spineai-lumbar-levels`` bundle (the body-click model's
validation cases too) from SPINEAI_TEST_DATA/spine-mr-bodies, locates L1/L2 ... L5/S1 on each through
``spineai.lumbar.levels`` (whole image, its own geometry) and compares them with the reference discs
from the manual body masks (``reference_levels``: halfway between endplate centres; L5/S1 at the
centre of L5's lower endplate). Prints per case and per level: discs found, share correctly named
(the found point's nearest reference disc is the one of its name), median / 95th percentile / largest
distance; then the time per study, split by stage, after one untimed warm-up, on the device asked
for. Baselines in the same process: reading the study's NIfTI file, and, with --device cuda, the
same localisation on the CPU (ratio CPU / GPU). Without CUDA, --device cuda falls back to the CPU and
says so.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run from a checkout without installing

from spineai.image import read_volume  # noqa: E402
from spineai.lumbar.levels import DEFAULT_MODEL, LUMBAR_DISCS, LevelLocator  # noqa: E402
from spineai.lumbar.levels_training import evaluate_locator, load_level_case, summarise_rows  # noqa: E402


def time_studies(loc: LevelLocator, images, repeats: int) -> tuple[list, dict]:
    loc.locate(images[0])  # warm-up: first network call
    totals, stages = [], {}
    for _ in range(repeats):
        for image in images:
            r = loc.locate(image)
            totals.append(r.timings["total"])
            for k, v in r.timings.items():
                stages.setdefault(k, []).append(v)
    return totals, stages


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--model", default=DEFAULT_MODEL, help="bundle path or registry id")
    ap.add_argument("--cases", nargs="*", help="case names (default: the bundle's validation cases)")
    args = ap.parse_args(argv)
    root = os.environ.get("SPINEAI_TEST_DATA")
    if not root:
        sys.exit("set SPINEAI_TEST_DATA to the shared data folder (../shared/data)")
    import torch

    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        print("CUDA was asked for but torch sees no GPU: running on the CPU instead")
        device = "cpu"
    loc = LevelLocator(args.model, device)
    names = args.cases or loc.card["training"]["validation_cases"]
    folder = Path(root, "spine-mr-bodies")
    cases = [load_level_case(folder, n) for n in names]
    print(f"model {loc.name} on {loc.device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"load average {os.getloadavg()[0]:.2f}; {len(cases)} cases, "
          f"{len(set(names) & set(loc.card['training'].get('train_cases', [])))} of them trained on")

    rows, per_case = evaluate_locator(loc, cases)
    print("\ncase     found  named   median  p95    max (mm)  bodies")
    for c in per_case:
        print(f"{c['case']:8s} {c['found']}/{c['discs']}    {c['named_correctly'] * 100:5.1f}%  {c['median_mm']!s:6s} "
              f"{c['p95_mm']!s:6s} {c['max_mm']!s:8s}  {c['bodies_found']}")
    print("\nlevel    found  named   median  p95    max (mm)")
    for level in LUMBAR_DISCS:
        s = summarise_rows([r for r in rows if r["level"] == level])
        print(f"{level:8s} {s['found']}/{s['discs']}  {s['named_correctly'] * 100:5.1f}%  {s['median_mm']!s:6s} "
              f"{s['p95_mm']!s:6s} {s['max_mm']!s}")
    s = summarise_rows(rows)
    print(f"\nall      {s['found']}/{s['discs']}  {s['named_correctly'] * 100:5.1f}%  median {s['median_mm']} mm, "
          f"95th percentile {s['p95_mm']} mm, max {s['max_mm']} mm  (targets: >= 98 %, <= 3 mm, <= 6 mm)")

    images = [c.image for c in cases]
    t0 = time.perf_counter()
    for n in names:
        read_volume(folder / f"{n}_img.nii.gz")
    read_s = (time.perf_counter() - t0) / len(names)
    totals, stages = time_studies(loc, images, args.repeats)
    med = statistics.median
    print(f"\ntime per study on {loc.device} ({len(totals)} = {len(images)} studies x {args.repeats}):")
    for k, v in stages.items():
        print(f"  {k:10s} {med(v):.3f} s")
    print(f"  baseline: reading the NIfTI file {read_s:.3f} s -> locate / read = {med(totals) / read_s:.1f}")
    if loc.device.type == "cuda":
        cpu_totals, _ = time_studies(LevelLocator(args.model, "cpu"), images, 1)
        print(f"  baseline: the same on the CPU {med(cpu_totals):.3f} s -> CPU / GPU = {med(cpu_totals) / med(totals):.1f}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
