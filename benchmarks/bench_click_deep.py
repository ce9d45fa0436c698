"""One click on a 1 mm lumbar MR: learned body segmentation, split by stage, beside the classic method.

    SPINEAI_TEST_DATA=../shared/data python benchmarks/bench_click_deep.py [--repeats 7] [--device cpu|cuda]
    SPINEAI_TEST_DATA=../shared/data python benchmarks/bench_click_deep.py --ood
    SPINEAI_TEST_DATA=../shared/data python benchmarks/bench_click_deep.py --validation [--device cuda] [--classic]

Reads a validation case of the shipped model (one it never trained on) from
SPINEAI_TEST_DATA/spine-mr-bodies, then times N clicks at the centre of each of its vertebral bodies:
``spineai.segment.segment(image, seed, 'vertebral-body', method='deep')`` with its stages (resample
the patch + guidance, network, back-projection onto the image's grid + clean-up), and the baseline,
``method='classic'`` (the level set), on the same clicks, in the same process. The first call of each
is an untimed warm-up (model loading, the first network call). Prints the medians, the ratio deep /
classic, and the Dice of each to the reference body.

--ood: accuracy out of the training distribution, on the shared samples, with the cases and clicks of
Testing/engine/test_segment_real.py: cervical T2 C6 / C7 at 1.5 mm (Dice to the body) and the 3 mm
TotalSegmentator MR vertebrae (share of the mask inside the vertebra's label), deep beside classic.

--validation: every body of the model's 13 validation cases (centre click + 3 inner-half clicks + one
corrective click, as at training time) on the chosen device: the card's figures, re-measured, so a
GPU run shows that the GPU gives the CPU's accuracy, and its time per click. With --classic, the classic
method on the same clicks too (the card's classic columns were measured with the level set of its
training commit; this re-measures them for the current one).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run from a checkout without installing

from spineai.deep.bundle import load_torch_bundle  # noqa: E402
from spineai.image import dice  # noqa: E402
from spineai.segment import segment  # noqa: E402
from spineai.segment.body_training import innermost_voxel  # noqa: E402
from spineai.segment.deep import DEFAULT_MODEL  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--device", default=None, help="auto (default), cpu or cuda")
    ap.add_argument("--case", default=None, help="case name (default: the first validation case of the model)")
    ap.add_argument("--ood", action="store_true", help="accuracy on the out-of-distribution shared samples instead")
    ap.add_argument("--validation", action="store_true", help="the card's validation figures, re-measured on --device")
    ap.add_argument("--classic", action="store_true", help="with --validation: the classic method on the same clicks too")
    args = ap.parse_args(argv)
    root = os.environ.get("SPINEAI_TEST_DATA")
    if not root:
        sys.exit("set SPINEAI_TEST_DATA to the shared data folder (../shared/data)")
    if args.ood:
        return out_of_distribution(args.device)
    if args.validation:
        return validation(Path(root, "spine-mr-bodies"), args.device, args.classic)
    import torch

    from spineai.image import read_volume

    card = load_torch_bundle(DEFAULT_MODEL).card
    case = args.case or card["training"]["validation_cases"][0]
    folder = Path(root, "spine-mr-bodies")
    image = read_volume(folder / f"{case}_img.nii.gz")
    labels = read_volume(folder / f"{case}_bodies.nii.gz").array
    print(f"case {case} (validation: never trained on), {image.size_ijk} voxels of {image.spacing} mm, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, load {os.getloadavg()[0]:.2f}")
    bodies = [int(v) for v in np.unique(labels) if v]
    clicks = {b: innermost_voxel(labels == b) for b in bodies}
    segment(image, clicks[bodies[0]], "vertebral-body", method="deep", device=args.device)  # warm-up
    segment(image, clicks[bodies[0]], "vertebral-body", method="classic")
    stages, deep_t, classic_t, d_dice, c_dice = {}, [], [], [], []
    device = "?"
    for _ in range(args.repeats):
        for b in bodies:
            details: dict = {}
            t0 = time.perf_counter()
            m = segment(image, clicks[b], "vertebral-body", method="deep", device=args.device, details=details)
            deep_t.append(time.perf_counter() - t0)
            device = details["device"]
            for k, v in details["timings"].items():
                stages.setdefault(k, []).append(v)
            t0 = time.perf_counter()
            c = segment(image, clicks[b], "vertebral-body", method="classic")
            classic_t.append(time.perf_counter() - t0)
            if len(d_dice) < len(bodies):
                d_dice.append(dice(m.array, labels == b))
                c_dice.append(dice(c.array, labels == b))
    med = statistics.median
    print(f"device: {device}; {len(deep_t)} clicks ({len(bodies)} bodies x {args.repeats})")
    print("stage              median s")
    for k, v in stages.items():
        print(f"  {k:16s} {med(v):.3f}")
    print(f"deep click total   {med(deep_t):.3f} s (max {max(deep_t):.3f}); target <= 1 s on this CPU")
    print(f"baseline classic   {med(classic_t):.3f} s  -> deep / classic = {med(deep_t) / med(classic_t):.2f}")
    print(f"Dice to the body   deep {np.mean(d_dice):.3f} (min {min(d_dice):.3f}), classic {np.mean(c_dice):.3f} "
          f"(min {min(c_dice):.3f})")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


def validation(folder: Path, device, classic: bool = False) -> int:
    import json

    from spineai.segment.body_training import evaluate_clicks, load_case, summarise
    from spineai.segment.deep import segmenter

    seg = segmenter(device=device)
    names = seg.bundle.card["training"]["validation_cases"]
    cases = [load_case(folder, n, np.random.default_rng(0)) for n in names]
    seg.segment(cases[0].image, tuple(int(v) for v in cases[0].bodies[0].centre_ijk))  # warm-up
    t0 = time.perf_counter()
    summary = summarise(evaluate_clicks(seg, cases, classic=classic))
    print(f"device {seg.device}; {len(cases)} validation cases, {sum(len(c.bodies) for c in cases)} bodies, "
          f"{time.perf_counter() - t0:.1f} s")
    print(json.dumps(summary, indent=1))
    print("card (measured at training time):", json.dumps(
        {k: seg.bundle.card["metrics"]["validation"][k]["mean_dice"] for k in ("deep_centre", "deep_inner-half")}))
    return 0


def out_of_distribution(device) -> int:
    root = Path(__file__).resolve().parents[1]
    sys.path[:0] = [str(root / "Testing"), str(root / "Testing" / "engine")]
    import test_segment_real as cases  # the cases and clicks are defined once, in the tests
    from shared_data import shared_data_path

    from spineai.image import read_volume

    def run(image, click, score):
        return [score(segment(image, click, "vertebral-body", method=m, device=device).array.astype(bool))
                for m in ("deep", "classic")]

    print("case                 measure        deep    classic")
    image = read_volume(shared_data_path("spine-samples", "sub-mri_label-6_T2w.nii.gz"))
    vert = read_volume(shared_data_path("spine-samples", "sub-mri_seg-vert_label-6_msk.nii.gz")).array
    sub = read_volume(shared_data_path("spine-samples", "sub-mri_seg-subreg_label-6_msk.nii.gz")).array
    for level in (6, 7):
        body = (vert == level) & (sub == 49)
        d, c = run(image, cases.deepest_voxel(body), lambda m: dice(m, body))
        print(f"T2 1.5 mm C{level}           Dice body      {d:.3f}   {c:.3f}")
    image, _, verts = cases._mr_vertebrae()
    for n, v in enumerate(verts):
        d, c = run(image, cases.anterior_half_seed(image, v), lambda m, v=v: float((m & v).sum() / max(1, m.sum())))
        print(f"MR 3 mm vertebra {n}     inside label   {d:.3f}   {c:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
