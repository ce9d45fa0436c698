"""Click -> lesion mask -> 31 radiomic features: median time, PyRadiomics baseline, peak memory.

    python benchmarks/bench_click_to_features.py [--repeats 9] [--shape 512 512 40] [--spacing 0.5 0.5 4]

Builds a synthetic sagittal spine MR volume (spineai.phantom) with a ~2 cm metastasis-like lesion,
then times, N times over, what a click in the lesion costs: RAS seed -> voxel index ->
``spineai.segment.segment(image, seed, 'lesion')`` -> ``spineai.radiomics.extract_features``.
Beside it, the baseline: PyRadiomics' own ``RadiomicsFeatureExtractor`` extracting the same 31
features (same parameter file) from the same full image and the same mask, in the same process.
The extractor is built once and the SimpleITK images are prepared outside the timed region, so
the baseline is timed at its most favourable. One untimed warm-up run of each comes first (it pays
the PyRadiomics import, about 0.4 s, which a long-lived session such as Slicer pays once).

Peak memory: the tracemalloc peak of one extra, separately run click-to-features pass (numpy,
SimpleITK-to-numpy copies and Python objects; SimpleITK's own C++ buffers are not traced), and
the process's maximum resident set size (which includes building the phantom).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run from a checkout without installing

from spineai.featureset import FEATURES_31  # noqa: E402
from spineai.image import seed_to_index  # noqa: E402
from spineai.phantom import make_spine_phantom  # noqa: E402
from spineai.radiomics import DEFAULT_PARAMETER_SET, extract_features, load_parameters  # noqa: E402


def _segmenter():
    try:
        from spineai.segment import segment
    except ImportError as exc:  # segmentation not available: time the features alone, and say so
        print(f"NOTE: spineai.segment is not importable ({exc}); timing features on the true mask only")
        return None
    return segment


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--shape", type=int, nargs=3, default=(512, 512, 40), metavar=("I", "J", "K"))
    ap.add_argument("--spacing", type=float, nargs=3, default=(0.5, 0.5, 4.0), metavar=("SI", "SJ", "SK"))
    ap.add_argument("--lesion-radius", type=float, default=10.0, help="mm (10 mm radius = ~2 cm lesion)")
    ap.add_argument("--kind", default="MET", choices=("SD", "MET", "STB"))
    ap.add_argument("--phantom-seed", type=int, default=3)
    args = ap.parse_args(argv)

    import radiomics
    from radiomics.featureextractor import RadiomicsFeatureExtractor

    t0 = time.perf_counter()
    ph = make_spine_phantom(
        seed=args.phantom_seed, shape_ijk=tuple(args.shape), spacing=tuple(args.spacing),
        lesion_kind=args.kind, lesion_radius_mm=args.lesion_radius,
    )
    image = ph.image
    n_true = int(ph.lesion_mask.array.sum())
    extent = np.ptp(np.argwhere(ph.lesion_mask.array), axis=0)[::-1] + 1
    print(f"volume {image.size_ijk} voxels ({image.array.dtype}), spacing {image.spacing} mm; built in "
          f"{time.perf_counter() - t0:.1f} s")
    print(f"lesion ({args.kind}): {n_true} voxels, extent {tuple(int(e) for e in extent)} voxels (i, j, k) = "
          f"{tuple(round(float(e * s), 1) for e, s in zip(extent, image.spacing))} mm")
    print(f"PyRadiomics {radiomics.__version__}, parameter set {DEFAULT_PARAMETER_SET}, "
          f"{args.repeats} timed repetitions after one warm-up")
    # Timings on a shared machine depend on what else runs: say how busy it was.
    print(f"{os.cpu_count()} CPU(s), load average {os.getloadavg()[0]:.2f} before timing\n")

    segment = _segmenter()
    seed_ras = ph.lesion_center_ras

    def click():
        t_a = time.perf_counter()
        seed = seed_to_index(image, seed_ras, "ras")
        mask = segment(image, seed, mode="lesion") if segment else ph.lesion_mask
        t_b = time.perf_counter()
        result = extract_features(image, mask)
        t_c = time.perf_counter()
        return mask, result, t_b - t_a, t_c - t_b

    mask, result, *_ = click()  # warm-up (imports, parameter set)
    if segment is not None:
        seg = mask.array > 0
        truth = ph.lesion_mask.array > 0
        dice = 2 * np.count_nonzero(seg & truth) / (np.count_nonzero(seg) + np.count_nonzero(truth))
        print(f"segmented lesion: {int(seg.sum())} voxels, Dice {dice:.3f} to the true mask")
    seg_times, feat_times, totals = [], [], []
    for _ in range(args.repeats):
        _, result, t_seg, t_feat = click()
        seg_times.append(t_seg)
        feat_times.append(t_feat)
        totals.append(t_seg + t_feat)

    # Baseline: the extractor on the full image and the same mask, same 31 features.
    import logging

    logging.getLogger("radiomics").setLevel(logging.ERROR)  # its fixed-bin-count advice, once per extractor
    ps = load_parameters(DEFAULT_PARAMETER_SET)
    sitk_image = image.to_sitk()
    sitk_mask = mask.with_array((mask.array > 0).astype(np.uint8)).to_sitk()

    def time_extractor(additional_info: bool):
        extractor = RadiomicsFeatureExtractor(str(ps.path))
        extractor.settings["additionalInfo"] = additional_info
        out = extractor.execute(sitk_image, sitk_mask, label=1)  # warm-up
        times = []
        for _ in range(args.repeats):
            t_a = time.perf_counter()
            out = extractor.execute(sitk_image, sitk_mask, label=1)
            times.append(time.perf_counter() - t_a)
        return out, times

    # additionalInfo=True is the extractor's default (diagnostics are part of its usual cost).
    baseline, base_times = time_extractor(True)
    _, base_times_nodiag = time_extractor(False)
    rel = max(
        abs(result.values[n] - float(baseline[f"original_{n}"])) / max(abs(float(baseline[f"original_{n}"])), 1e-12)
        for n in FEATURES_31
    )

    tracemalloc.start()
    click()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    max_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB

    med = statistics.median
    t_total, t_seg, t_feat, t_base = med(totals), med(seg_times), med(feat_times), med(base_times)
    what = "click -> mask -> 31 features" if segment else "31 features (true mask; no segmentation)"
    print(f"{what}: median {t_total:.3f} s  (segment {t_seg:.3f} s, features {t_feat:.4f} s; "
          f"min {min(totals):.3f}, max {max(totals):.3f})")
    print(f"baseline, PyRadiomics RadiomicsFeatureExtractor, same 31 features, same image and mask: "
          f"median {t_base:.3f} s")
    print(f"  (the same without its diagnostics, additionalInfo=False: median {med(base_times_nodiag):.3f} s)")
    print(f"features: spineai {t_feat:.4f} s vs extractor {t_base:.3f} s = {t_base / t_feat:.0f}x faster")
    if segment:
        print(f"click -> features: {t_total:.3f} s vs {t_seg + t_base:.3f} s with the extractor "
              f"(ratio {t_total / (t_seg + t_base):.2f})")
    print(f"largest relative difference spineai vs extractor over the 31 features: {rel:.1e}")
    print(f"peak memory: {peak / 2**20:.1f} MiB traced (tracemalloc) during one click-to-features pass; "
          f"process max RSS {max_rss_mb:.0f} MiB")
    target = 0.5
    print(f"load average after timing {os.getloadavg()[0]:.2f}")
    print(f"target median <= {target} s: {'met' if t_total <= target else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
