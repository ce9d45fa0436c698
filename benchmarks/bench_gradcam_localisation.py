"""Does Grad-CAM look at the lesion? Per image model, per class and per method, on generated lesions in
cases that no model saw in training.

    SPINEAI_TEST_DATA=../shared/data python benchmarks/bench_gradcam_localisation.py \
        [--crops RUN/lesions-test.npz] [BUNDLE ...]

BUNDLE: bundle folders or zips, or installed ids (default: the shipped ``spineai-lesion-demo``). Every
model is measured on the same test lesions: the cached crops of a training run (``--crops``, from
``spineai train-image-classifier``; checked to hold the test cases of the demonstration split), or
else generated afresh in those cases (about two minutes).

Two measures, each printed beside its named baseline, a map that ignores where the lesion is:
- mass ratio: the heatmap's mass inside the lesion / the lesion's share of the crop (baseline 1.0; the
  best possible value is 1 / share: all the mass inside);
- pointing game: how often the heatmap's peak lies inside the lesion (baseline: the lesion's share).
Each model uses the Grad-CAM layer that its training chose on validation lesions (``cam_layer``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run from a checkout without installing


def _test_crops(crops: str | None, folder: Path):
    from spineai.imaging.lesion_data import lesion_examples
    from spineai.imaging.lesion_training import DEFAULTS, RECIPE, split_demo_cases
    from spineai.segment.body_training import case_names

    test_names = split_demo_cases(case_names(folder), DEFAULTS["seed"])[2]
    if crops:
        with np.load(crops, allow_pickle=False) as z:
            sets = {k: z[k] for k in ("x", "y", "region", "group")}
        if not set(sets["group"].tolist()) <= set(test_names):
            sys.exit(f"{crops} holds lesions of cases outside the demonstration test split")
        return sets
    print(f"generating test lesions in {len(test_names)} unseen cases ...", flush=True)
    return lesion_examples(folder, test_names, RECIPE, DEFAULTS["per_class"], DEFAULTS["seed"] + 2)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundles", nargs="*", default=["spineai-lesion-demo"])
    ap.add_argument("--crops", help="a run's lesions-test.npz (else generated)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    root = os.environ.get("SPINEAI_TEST_DATA")
    folder = Path(root or "", "spine-mr-bodies")
    if not root or not folder.is_dir():
        print("SPINEAI_TEST_DATA/spine-mr-bodies is missing: the generated lesions are drawn into its real bodies")
        return 2
    import torch

    from spineai.deep.bundle import load_torch_bundle
    from spineai.imaging.lesion_training import localisation

    torch.set_num_threads(args.threads)
    test = _test_crops(args.crops, folder)
    print(f"{len(test['y'])} test lesions from {len(set(test['group'].tolist()))} unseen cases\n")
    header = (f"{'model':28s} {'backbone':16s} {'layer':22s} {'method':10s} {'class':5s} {'share':>6s} "
              f"{'ratio':>6s} {'1/share':>8s} {'peak in':>8s} {'/share':>7s}")
    print(header)
    print("-" * len(header))
    for ref in args.bundles:
        bundle = load_torch_bundle(ref)
        card, net = bundle.card, bundle.network.eval()
        name = f"{card.get('id', ref)} {card.get('version', '')}".strip()
        for method in ("gradcam", "gradcam++"):
            rows = localisation(net, test["x"], test["y"], test["region"], card["classes"], method, card["cam_layer"])
            for cls, r in rows.items():
                share = r["area_share"]
                # ratio: a lesion-blind map gives 1.00, all the mass inside 1/share; peak in: a lesion-blind
                # map's peak lands inside as often as the lesion's share
                print(f"{name:28s} {card.get('backbone', '?'):16s} {card['cam_layer']:22s} {method:10s} {cls:5s} "
                      f"{share:6.3f} {r['ratio_mean']:6.2f} {1 / share:8.1f} {r['peak_inside_rate']:8.2f} "
                      f"{r['peak_inside_rate'] / share:6.1f}x", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
