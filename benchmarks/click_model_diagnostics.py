"""Where does the body-click model lose its Dice? The diagnostics behind issue 11's analysis.

    SPINEAI_TEST_DATA=../shared/data python benchmarks/click_model_diagnostics.py ceiling
    SPINEAI_TEST_DATA=../shared/data python benchmarks/click_model_diagnostics.py tta [--model M]
    SPINEAI_TEST_DATA=../shared/data python benchmarks/click_model_diagnostics.py finetune --out RUN \
        [--steps 1500] [--clean 0.5] [--lr 3e-4]

ceiling: each reference body mask of three validation cases sent onto the model's patch grid (1.5,
  1.2 and 1.0 mm) and back through the same sampler as inference (``sample_patch`` /
  ``patch_to_volume``): the Dice a perfect network could reach on that grid; and the mask against
  itself smoothed by a 1 mm Gaussian (how rough the references are).
tta: the shipped model on every 6th training case (where its threshold is chosen; the validation
  cases stay unseen), centre clicks: one patch (the baseline) against the mean of 5 patch grids
  shifted by half a voxel, and left-right mirror averaging.
finetune: continue the shipped weights with a share ``--clean`` of un-augmented examples at a low
  learning rate (``spineai.deep.training.train``: checkpoints, resumable), then validate on the
  model's 13 validation cases as ``spineai train-segmentation`` does (centre + one inner click).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run from a checkout without installing


def _data() -> Path:
    folder = Path(os.environ.get("SPINEAI_TEST_DATA", ""), "spine-mr-bodies")
    if not folder.is_dir():
        sys.exit("SPINEAI_TEST_DATA/spine-mr-bodies is missing")
    return folder


def _dice(a, b) -> float:
    return 2.0 * float((a & b).sum()) / max(1.0, float(a.sum() + b.sum()))


def ceiling(args) -> None:
    from scipy import ndimage

    from spineai.deep.patches import PatchGrid, patch_to_volume, sample_patch
    from spineai.image import Volume, read_volume
    from spineai.segment.body_training import PATCH_SHAPE, SPACING_MM

    extent = np.asarray(PATCH_SHAPE, float) * SPACING_MM  # the patch's mm extent, kept at every spacing
    for case in ("VB2_09", "VB3_01", "VB3_39"):
        lab = read_volume(_data() / f"{case}_bodies.nii.gz")
        m = lab.ijk_to_lps_matrix()
        row = []
        for spacing in (1.5, 1.2, 1.0):
            scores = []
            for label in np.unique(lab.array)[1:]:
                mask = lab.array == label
                k, j, i = np.argwhere(mask).mean(0)
                grid = PatchGrid(tuple((m @ np.array([i, j, k, 1.0]))[:3]),
                                 tuple(int(round(e / spacing)) for e in extent), spacing)
                patch, _ = sample_patch(Volume(mask.astype(np.float32), lab.spacing, lab.origin, lab.direction), grid)
                values, box = patch_to_volume(patch, grid, lab)
                back = np.zeros(mask.shape, bool)
                back[box] = values >= 0.5
                scores.append(_dice(back, mask))
            row.append(f"{spacing} mm grid {np.mean(scores):.4f} (min {np.min(scores):.3f})")
        smooth = []
        for label in np.unique(lab.array)[1:]:
            mask = lab.array == label
            smooth.append(_dice(ndimage.gaussian_filter(mask.astype(np.float32), 1.0 / min(lab.spacing)) >= 0.5, mask))
        print(f"{case}: round trip {', '.join(row)}; 1 mm-smoothed mask {np.mean(smooth):.4f}", flush=True)


def tta(args) -> None:
    import torch

    from spineai.deep.patches import PatchGrid, patch_to_volume
    from spineai.segment import body_training as bt
    from spineai.segment.deep import ClickSegmenter, mask_from_probability

    seg = ClickSegmenter(args.model, "cpu")
    shifts = [np.zeros(3)] + [0.5 * seg.spacing * np.array(s) for s in
                              ([1, 1, 1], [-1, -1, -1], [1, -1, 1], [-1, 1, -1])]
    scores = {"one patch (baseline)": [], "5 shifted grids": [], "mirror-averaged": []}
    for name in seg.bundle.card["training"]["train_cases"][::6]:
        case = bt.load_case(_data(), name)
        image, m = case.image, case.image.ijk_to_lps_matrix()
        whole = tuple(slice(0, n) for n in image.array.shape)
        for body in case.bodies:
            truth = case.labels.array == body.label
            click = tuple(int(v) for v in body.centre_ijk)
            centre = (m @ np.append(np.asarray(click, float), 1.0))[:3]
            maps = []
            for s in shifts:
                grid = PatchGrid(tuple(centre + s), seg.shape, seg.spacing)
                x = seg.inputs(image, grid, [centre], [])
                with torch.inference_mode():
                    p = torch.sigmoid(seg.network(torch.stack([x, x.flip(-1)]))[:, 0].float())
                for q in (p[0], p[1].flip(-1)):
                    values, box = patch_to_volume(q, grid, image)
                    full = np.zeros(truth.shape, np.float32)
                    full[box] = values
                    maps.append(full)
            for key, chosen in (("one patch (baseline)", maps[:1]), ("5 shifted grids", maps[0::2]),
                                ("mirror-averaged", maps[:2])):
                mask = mask_from_probability(np.mean(chosen, 0), whole, truth.shape, seg.threshold, click)
                scores[key].append(_dice(mask.astype(bool), truth))
        print(name, {k: round(float(np.mean(v)), 4) for k, v in scores.items()}, flush=True)
    base = np.mean(scores["one patch (baseline)"])
    for key, v in scores.items():
        print(f"{key:22s} mean Dice {np.mean(v):.4f} ({np.mean(v) - base:+.4f}), {len(v)} bodies")


def finetune(args) -> None:
    import torch
    from monai.data import set_track_meta
    from monai.losses import DiceCELoss

    from spineai.deep.bundle import load_torch_bundle, save_torch_bundle
    from spineai.deep.training import TrainConfig, train
    from spineai.progress import TextProgress
    from spineai.segment import body_training as bt
    from spineai.segment.deep import ClickSegmenter

    set_track_meta(False)
    bundle = load_torch_bundle(args.model)
    net, card = bundle.network, bundle.card
    names = card["training"]["train_cases"] + card["training"]["validation_cases"]
    rng = np.random.default_rng(0)
    cases = [bt.load_case(_data(), n, rng) for n in names]
    train_cases, val_cases = cases[:len(card["training"]["train_cases"])], cases[len(card["training"]["train_cases"]):]
    vx, vy = bt.validation_examples(val_cases, per_body=2, seed=1)
    print(f"shipped weights: validation patch Dice {bt.patch_dice(net, vx, vy):.4f}", flush=True)

    def sample_batch(rng):
        xs, ys = [], []
        for _ in range(int(card["training"]["batch"])):
            case = train_cases[rng.integers(len(train_cases))]
            x, y = bt.make_example(case, case.bodies[rng.integers(len(case.bodies))], rng,
                                   augment=bool(rng.random() >= args.clean))
            xs.append(x)
            ys.append(y)
        return torch.stack(xs), torch.stack(ys)

    cfg = TrainConfig(steps=args.steps, lr=args.lr, warmup=20, val_every=250, patience=8, seed=11)
    result = train(net, sample_batch, DiceCELoss(sigmoid=True), lambda n: {"val_dice": bt.patch_dice(n, vx, vy)},
                   Path(args.out), cfg, torch.device("cpu"), TextProgress("fine-tune"), True)
    print(f"{result.stopped}: best validation patch Dice {result.best_metric:.4f} at step {result.best_step}")
    if result.stopped == "paused":
        return
    net.load_state_dict(result.best_state)
    save_torch_bundle(card, net.eval(), Path(args.out) / "model", overwrite=True)
    rows = bt.evaluate_clicks(ClickSegmenter(str(Path(args.out) / "model"), "cpu"), val_cases, jitter_clicks=1,
                              classic=False)
    print(json.dumps(bt.summarise(rows), indent=1))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="what", required=True)
    sub.add_parser("ceiling")
    p = sub.add_parser("tta")
    p.add_argument("--model", default="spineai-body-click")
    p = sub.add_parser("finetune")
    p.add_argument("--model", default="spineai-body-click")
    p.add_argument("--out", required=True, help="run folder (checkpoints; the same command resumes)")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--clean", type=float, default=0.5, help="share of examples without augmentation")
    p.add_argument("--lr", type=float, default=3e-4)
    args = ap.parse_args(argv)
    {"ceiling": ceiling, "tta": tta, "finetune": finetune}[args.what](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
