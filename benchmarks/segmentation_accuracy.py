"""Segmentation accuracy: lesion mode on the synthetic phantoms, body mode on the real samples.

    .venv/bin/python benchmarks/segmentation_accuracy.py [--seeds 8]
    SPINEAI_TEST_DATA=../shared/data .venv/bin/python benchmarks/segmentation_accuracy.py --real

Phantoms: Dice of the lesion-mode mask to the true lesion, per kind and phantom seed.
--real: vertebral-body mode on the public samples in SPINEAI_TEST_DATA/spine-samples, with the
cases and seeds of Testing/engine/test_segment_real.py: the reference click and the six clicks
one voxel off it (T2 C6 / C7: Dice to the body mask; MR and CT whole vertebrae: share of the mask
inside the vertebra's label, without `within`).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from spineai.image import dice  # noqa: E402
from spineai.phantom import LESION_KINDS, make_spine_phantom  # noqa: E402
from spineai.segment import segment  # noqa: E402

NEIGHBOURS = [(1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1)]


def phantoms(n_seeds: int) -> None:
    seeds = range(n_seeds)
    print("kind  " + " ".join(f"  s{s}  " for s in seeds) + "   min    mean s/call")
    for kind in LESION_KINDS:
        scores, seconds = [], []
        for s in seeds:
            ph = make_spine_phantom(seed=s, lesion_kind=kind)
            t0 = time.perf_counter()
            mask = segment(ph.image, ph.lesion_center_ijk, mode="lesion")
            seconds.append(time.perf_counter() - t0)
            scores.append(dice(mask.array, ph.lesion_mask.array))
        print(f"{kind:4s}  " + " ".join(f"{d:.3f} " for d in scores)
              + f"  {min(scores):.3f}  {sum(seconds) / len(seconds):.3f}")


def real() -> None:
    if not os.environ.get("SPINEAI_TEST_DATA"):
        sys.exit("--real needs SPINEAI_TEST_DATA pointing at the shared data folder (../shared/data)")
    # The cases are defined once, in the tests.
    sys.path[:0] = [str(ROOT / "Testing"), str(ROOT / "Testing" / "engine")]
    import numpy as np
    import test_segment_real as cases
    from shared_data import shared_data_path
    from spineai.image import read_volume

    def measure(image, click, score):
        i, j, k = click
        seconds = []
        for _ in range(5):  # the reference click, timed (median of 5; the first run warms up)
            t0 = time.perf_counter()
            mask = segment(image, click, mode="vertebral-body")
            seconds.append(time.perf_counter() - t0)
        ref = score(mask.array.astype(bool))
        off = [score(segment(image, (i + a, j + b, k + c), mode="vertebral-body").array.astype(bool))
               for a, b, c in NEIGHBOURS]
        return ref, min(off), float(np.median(off)), float(np.median(seconds[1:]))

    print("case                 measure        reference click   one voxel off: min  median   s/call")
    image = read_volume(shared_data_path("spine-samples", "sub-mri_label-6_T2w.nii.gz"))
    vert = read_volume(shared_data_path("spine-samples", "sub-mri_seg-vert_label-6_msk.nii.gz")).array
    sub = read_volume(shared_data_path("spine-samples", "sub-mri_seg-subreg_label-6_msk.nii.gz")).array
    for level in (6, 7):
        body = (vert == level) & (sub == 49)
        ref, lo, med, sec = measure(image, cases.deepest_voxel(body), lambda m: dice(m, body))
        print(f"T2 1.5 mm C{level}           Dice body      {ref:.3f}             {lo:.3f}  {med:.3f}    {sec:.3f}")
    for name, (image, _, verts) in (("MR 3 mm", cases._mr_vertebrae()), ("CT 3 mm", cases._ct_vertebrae())):
        for n, v in enumerate(verts):
            ref, lo, med, sec = measure(image, cases.anterior_half_seed(image, v),
                                        lambda m, v=v: float((m & v).sum() / m.sum()))
            print(f"{name} vertebra {n}     inside label   {ref:.3f}             {lo:.3f}  {med:.3f}    {sec:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=8, help="phantom seeds 0..N-1 (default 8)")
    parser.add_argument("--real", action="store_true", help="body mode on the real samples instead")
    args = parser.parse_args()
    real() if args.real else phantoms(args.seeds)


if __name__ == "__main__":
    main()
