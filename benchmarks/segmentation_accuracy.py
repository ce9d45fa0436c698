"""Segmentation accuracy: lesion mode on the synthetic phantoms, body mode on the real samples.

    .venv/bin/python benchmarks/segmentation_accuracy.py [--seeds 8]
    .venv/bin/python benchmarks/segmentation_accuracy.py --sweep [--seeds 2] [--sizes 0.6,1]
    SPINEAI_TEST_DATA=../shared/data .venv/bin/python benchmarks/segmentation_accuracy.py --real

Every case runs twice in the same process: as shipped, and with one step as it was before
(``--against``): ``ball-start`` (default) starts a vertebral body's level set from a small ball
around the seed instead of the opened in-window region (``start_reach_mm=0``; lesion mode is the same
both ways); ``settle`` stops the level set once settled (``settle_share=0.5``: half the cap, then the
cap unless a probe shows that the front no longer grows: see ``classic._evolve``);
``slab-bound-always`` bounds the slab cut's half-window by the region's spread on every click, not
only where the statistics ball straddled an endplate (``classic._STRADDLE_RATIO = 0``); ``no-regrow`` keeps
a lesion's first front even where its region is not what the click sits in (``classic._FOREIGN_SPREADS =
inf``: see ``classic._regrow_from_the_click``). Both scores, both
times, their ratio (other / shipped, > 1: shipped is faster) and the level-set iterations of each
(probes included; a cost that machine load does not blur) are printed.

--sweep: lesion sizes 0.6, 1, 2, 4 cm (or those of --sizes) x slice thickness 1 and 4 mm (0.9 mm
in-plane), each kind.
--cuts: the 3 mm CT cropped at every slice through each vertebra (L2, L1, T12), keeping either side;
the click is the tests' anterior-half seed of what remains, where that lies in the vertebral body
(the anterior half of the uncut vertebra); share of the mask inside the vertebra's label, by the
number of body slices left.
--lumbar: vertebral-body mode at the centre click of every body of the learned model's 13
validation cases (spine-mr-bodies, 1 mm lumbar MR, 73 bodies; the classic method's columns in the
README's learned-model table): Dice to the body.

Phantoms: Dice of the lesion-mode mask to the true lesion, per kind and phantom seed. Phantoms and
--sweep also print how many of its robust spreads a lesion's first region (where larger than the full
statistics ball) lies from the click's 2 mm ball: above classic._FOREIGN_SPREADS it is grown again.
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

from dataclasses import replace  # noqa: E402

import spineai.segment.classic as classic  # noqa: E402
from spineai.image import dice  # noqa: E402
from spineai.phantom import LESION_KINDS, make_spine_phantom  # noqa: E402
from spineai.segment import segment  # noqa: E402

NOW = dict(classic._MODES)
SHIPPED = (NOW, {})
# Each variant: (mode parameters, module constants of classic set for its runs).
AGAINST = {"ball-start": ({mode: replace(p, start_reach_mm=0.0) for mode, p in NOW.items()}, {}),
           "settle": ({mode: replace(p, settle_share=0.5) for mode, p in NOW.items()}, {}),
           "slab-bound-always": (NOW, {"_STRADDLE_RATIO": 0.0}),
           "no-regrow": (NOW, {"_FOREIGN_SPREADS": float("inf")})}
OTHER, NAME = AGAINST["ball-start"], "ball-start"  # set by --against


ITERATIONS = []  # level-set iterations of each ITK run (probes included): a cost free of machine load


def _count_iterations():
    import SimpleITK as sitk

    execute = sitk.ThresholdSegmentationLevelSetImageFilter.Execute

    def counted(self, *args):
        out = execute(self, *args)
        ITERATIONS.append(self.GetElapsedIterations())
        return out

    sitk.ThresholdSegmentationLevelSetImageFilter.Execute = counted


_count_iterations()

APART = []  # per lesion click: spreads between the click's 2 mm ball and a first region larger than the full ball


def _record_apart():
    measure = classic._click_against_region

    def recorded(*args):
        out = measure(*args)
        APART.append(out[2])
        return out

    classic._click_against_region = recorded


_record_apart()


def timed(image, seed, mode="lesion", variant=SHIPPED):
    """(mask, seconds) with the variant's mode parameters and constants."""
    modes, constants = variant
    saved = {name: getattr(classic, name) for name in constants}
    classic._MODES = modes
    for name, value in constants.items():
        setattr(classic, name, value)
    try:
        t0 = time.perf_counter()
        return segment(image, seed, mode=mode), time.perf_counter() - t0
    finally:
        classic._MODES = NOW
        for name, value in saved.items():
            setattr(classic, name, value)


def both(image, seed, score, mode="lesion"):
    """Score and seconds as shipped, then with the --against variant; NaN for a refused click.

    The level-set iterations of both runs (shipped, other) are left in ITERATIONS_BOTH; the
    shipped run's click-to-region spreads (lesion mode), in APART_SHIPPED."""
    from spineai.errors import SpineAIError

    out, its, aparts = [], [], []
    for variant in (SHIPPED, OTHER):
        ITERATIONS.clear()
        APART.clear()
        try:
            mask, sec = timed(image, seed, mode, variant)
            out += [score(mask.array), sec]
        except SpineAIError:
            out += [float("nan"), float("nan")]
        its.append(sum(ITERATIONS))
        aparts.append(list(APART))
    ITERATIONS_BOTH[:] = its
    APART_SHIPPED[:] = aparts[0]
    return out


ITERATIONS_BOTH = [0, 0]
APART_SHIPPED: list = []


def apart() -> str:
    """The shipped lesion click's first region against the click's 2 mm ball, in the region's robust
    spreads (classic._regrow_from_the_click grows again above _FOREIGN_SPREADS); '-' where the region
    was smaller than the full statistics ball, so the test did not run."""
    return f"{APART_SHIPPED[0]:6.2f}" if APART_SHIPPED else "     -"


NEIGHBOURS = [(1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1)]


def phantoms(n_seeds: int) -> None:
    print(f"kind  seed   Dice shipped {NAME}   s/call shipped {NAME}   ratio   level-set iterations shipped {NAME}   "
          "click-region spreads")
    for kind in LESION_KINDS:
        for s in range(n_seeds):
            ph = make_spine_phantom(seed=s, lesion_kind=kind)
            d, t, d0, t0 = both(ph.image, ph.lesion_center_ijk, lambda m: dice(m, ph.lesion_mask.array))
            print(f"{kind:4s}  {s:4d}   {d:.3f}    {d0:.3f}   {t:.3f}      {t0:.3f}  {t0 / t:.2f}   "
                  f"{ITERATIONS_BOTH[0]:5d}  {ITERATIONS_BOTH[1]:5d}   {apart()}", flush=True)


def sweep(n_seeds: int, sizes_cm=(0.6, 1.0, 2.0, 4.0)) -> None:
    """Lesion size x slice thickness; a refused click (SpineAIError) counts as Dice 0."""
    import numpy as np

    print(f"slice  size    kind  seed   Dice shipped {NAME}   s/call shipped {NAME}   ratio   level-set iterations shipped "
          f"{NAME}   click-region spreads")
    for slice_mm in (1.0, 4.0):
        for size_cm in sizes_cm:
            for kind in LESION_KINDS:
                for s in range(n_seeds):
                    ph = make_spine_phantom(seed=s, lesion_kind=kind, lesion_radius_mm=5.0 * size_cm,
                                            shape_ijk=(200, 267, int(round(72 / slice_mm))),
                                            spacing=(0.9, 0.9, slice_mm))
                    d, t, d0, t0 = both(ph.image, ph.lesion_center_ijk, lambda m: dice(m, ph.lesion_mask.array))
                    d, d0 = np.nan_to_num(d), np.nan_to_num(d0)
                    print(f"{slice_mm:.0f} mm   {size_cm:.1f} cm  {kind:4s}  {s:4d}   {d:.3f}    {d0:.3f}   "
                          f"{t:.3f}      {t0:.3f}  {t0 / t:.2f}   {ITERATIONS_BOTH[0]:5d}  {ITERATIONS_BOTH[1]:5d}   "
                          f"{apart()}", flush=True)


def _real_cases(option: str):
    """Testing/engine/test_segment_real.py, where the real cases are defined once; exits without the shared data."""
    if not os.environ.get("SPINEAI_TEST_DATA"):
        sys.exit(f"{option} needs SPINEAI_TEST_DATA pointing at the shared data folder (../shared/data)")
    sys.path[:0] = [str(ROOT / "Testing"), str(ROOT / "Testing" / "engine")]
    import test_segment_real

    return test_segment_real


def real() -> None:
    cases = _real_cases("--real")
    import numpy as np
    from shared_data import shared_data_path
    from spineai.image import read_volume

    def measure(image, click, score):
        i, j, k = click
        ref = both(image, click, score, "vertebral-body")
        its = list(ITERATIONS_BOTH)
        off = np.array([both(image, (i + a, j + b, k + c), score, "vertebral-body") for a, b, c in NEIGHBOURS])
        return (*ref, off[:, 0].min(), float(np.median(off[:, 0])), off[:, 2].min(), float(np.median(off[:, 2])), *its)

    print(f"case                       measure       reference click: shipped {NAME}   one voxel off (min / median): "
          f"shipped          {NAME}          s/call shipped {NAME}   ratio   level-set iterations shipped {NAME}")

    def show(name, what, r):
        print(f"{name:26s} {what:13s} {r[0]:.3f}  {r[2]:.3f}                                {r[4]:.3f} / {r[5]:.3f}  "
              f"{r[6]:.3f} / {r[7]:.3f}   {r[1]:.3f}      {r[3]:.3f}  {r[3] / r[1]:.2f}   "
              f"{r[8]:5d}  {r[9]:5d}", flush=True)

    image = read_volume(shared_data_path("spine-samples", "sub-mri_label-6_T2w.nii.gz"))
    vert = read_volume(shared_data_path("spine-samples", "sub-mri_seg-vert_label-6_msk.nii.gz")).array
    sub = read_volume(shared_data_path("spine-samples", "sub-mri_seg-subreg_label-6_msk.nii.gz")).array
    for level in (6, 7):
        body = (vert == level) & (sub == 49)
        show(f"T2 1.5 mm C{level}", "Dice body", measure(image, cases.deepest_voxel(body),
                                                         lambda m: dice(m.astype(bool), body)))
    for name, (image, _, verts) in (("MR 3 mm", cases._mr_vertebrae()), ("CT 3 mm", cases._ct_vertebrae())):
        for n, v in enumerate(verts):
            show(f"{name} vertebra {n}", "inside label", measure(
                image, cases.anterior_half_seed(image, v), lambda m, v=v: float((m.astype(bool) & v).sum() / m.sum())))
    for name, image, vert, seed in cases.cut_vertebrae():
        show(f"CT cut: {name}", "inside label", measure(
            image, seed, lambda m, v=vert: float((m.astype(bool) & v).sum() / m.sum())))


def cuts() -> None:
    cases = _real_cases("--cuts")
    import numpy as np

    print(f"vertebra  kept        body slices left  seed (i, j, k)   inside: shipped  {NAME}")
    by_slices: dict = {}
    for name, kept, left, crop, vert, seed in cases.every_cut():
        r = both(crop, seed, lambda m, v=vert: float((m.astype(bool) & v).sum() / m.sum()), "vertebral-body")
        by_slices.setdefault(min(left, 6), []).append((r[0], r[2]))
        print(f"{name:8s}  {kept:10s}  {left:16d}  {str(seed):15s}  {r[0]:.3f}           {r[2]:.3f}", flush=True)
    print(f"\nbody slices left   clicks   >= 0.90 inside: shipped  {NAME}   refused: shipped  {NAME}")
    for left, rs in sorted(by_slices.items()):
        r = np.array(rs)
        print(f"{left if left < 6 else '6 or more':17}  {len(r):6d}   {int((r[:, 0] >= 0.9).sum()):23d}  "
              f"{int((r[:, 1] >= 0.9).sum()):10d}  {int(np.isnan(r[:, 0]).sum()):17d}  {int(np.isnan(r[:, 1]).sum()):8d}")


def lumbar() -> None:
    _real_cases("--lumbar")
    import json

    import numpy as np
    from spineai.bundlefile import CARD, read_bundle
    from spineai.segment.body_training import _dice_precision, load_case
    from spineai.segment.deep import DEFAULT_MODEL

    card = json.loads(read_bundle(DEFAULT_MODEL)[0][CARD])
    folder = Path(os.environ["SPINEAI_TEST_DATA"], "spine-mr-bodies")
    print(f"case     body   Dice shipped {NAME}   s/call shipped {NAME}   level-set iterations shipped {NAME}")
    rows = []
    for name in card["training"]["validation_cases"]:
        case = load_case(folder, name)
        for body in case.bodies:
            truth = case.labels.array == body.label
            d, t, d0, t0 = both(case.image, tuple(int(v) for v in body.centre_ijk),
                                lambda m, truth=truth: _dice_precision(m.astype(bool), truth)[0], "vertebral-body")
            d, d0 = np.nan_to_num(d), np.nan_to_num(d0)
            rows.append((d, d0))
            print(f"{name:8s} {body.label:4d}   {d:.3f}    {d0:.3f}   {t:.3f}      {t0:.3f}   "
                  f"{ITERATIONS_BOTH[0]:5d}  {ITERATIONS_BOTH[1]:5d}", flush=True)
    r = np.array(rows)
    print(f"\n{len(r)} bodies: mean Dice shipped {r[:, 0].mean():.4f}, {NAME} {r[:, 1].mean():.4f}; below 0.80: "
          f"{int((r[:, 0] < 0.8).sum())} / {int((r[:, 1] < 0.8).sum())}; shipped higher by > 0.01 in "
          f"{int((r[:, 0] - r[:, 1] > 0.01).sum())}, lower in {int((r[:, 1] - r[:, 0] > 0.01).sum())}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=8, help="phantom seeds 0..N-1 (default 8)")
    parser.add_argument("--real", action="store_true", help="body mode on the real samples instead")
    parser.add_argument("--sweep", action="store_true", help="lesion size x slice thickness instead")
    parser.add_argument("--sizes", type=lambda v: tuple(float(x) for x in v.split(",")), default=(0.6, 1.0, 2.0, 4.0),
                        help="--sweep's lesion sizes in cm, comma-separated (default 0.6,1,2,4)")
    parser.add_argument("--cuts", action="store_true", help="body mode on the CT cut at every slice instead")
    parser.add_argument("--lumbar", action="store_true", help="body mode on the learned model's lumbar MR validation cases")
    parser.add_argument("--against", choices=sorted(AGAINST), default="ball-start",
                        help="the variant run beside the shipped method (default ball-start)")
    args = parser.parse_args()
    global OTHER, NAME
    OTHER, NAME = AGAINST[args.against], args.against
    (real if args.real else cuts if args.cuts else lumbar if args.lumbar else
     (lambda: sweep(args.seeds, args.sizes)) if args.sweep else (lambda: phantoms(args.seeds)))()


if __name__ == "__main__":
    main()
