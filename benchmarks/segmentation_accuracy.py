"""Lesion-mode accuracy on the synthetic phantoms: Dice to the true lesion, per kind and seed.

    .venv/bin/python benchmarks/segmentation_accuracy.py [--seeds 8]

The real-data figures (vertebral bodies on MR and CT) are printed by their tests:
    SPINEAI_TEST_DATA=../shared/data .venv/bin/python -m pytest -q -s Testing/engine/test_segment_real.py
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from spineai.image import dice  # noqa: E402
from spineai.phantom import LESION_KINDS, make_spine_phantom  # noqa: E402
from spineai.segment import segment  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=8, help="phantom seeds 0..N-1 (default 8)")
    args = parser.parse_args()
    seeds = range(args.seeds)
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


if __name__ == "__main__":
    main()
