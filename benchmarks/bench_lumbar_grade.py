"""Grading one lumbar study (3 series, DICOM) with the shipped demonstration grader, split by stage.

    python benchmarks/bench_lumbar_grade.py [--repeats 5] [--device cpu|cuda] [--model ID_OR_PATH]

Writes one synthetic study in the RSNA layout (``spineai.lumbar.synthetic``, seed 0: sagittal T1
17 x 170 x 125, sagittal T2 17 x 170 x 125, axial T2 about 50 x 108 x 108 voxels, DICOM files) to a
temporary folder, then times N repetitions of what ``spineai lumbar grade`` does after start-up:
read the study (DICOM + CSVs) -> level positions (label coordinates) -> normalisation + the 5 x 3
level crop stacks -> the network -> Grad-CAM per level and series (15 maps). One untimed warm-up
first (model loading, torch's first calls). Prints the median of each stage, the total against the
issue's targets (5 s on CPU, 0.5 s on a GPU), and, for the reading stage, the engine's reader beside
SimpleITK / GDCM reading the same three series (``spineai.image.read_volume``), in the same process.

--device cuda runs the network and Grad-CAM on the GPU; without CUDA it says so and uses the CPU.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run from a checkout without installing


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    ap.add_argument("--model", default=None, help="grading bundle (default: the shipped demonstration)")
    args = ap.parse_args(argv)
    import torch

    from spineai.deep.device import describe, select_device
    from spineai.image import read_volume
    from spineai.lumbar.grading import grade_study, load_grader
    from spineai.lumbar.study import open_rsna, read_rsna_study
    from spineai.lumbar.synthetic import generate_dataset

    import importlib.util

    have_sitk = importlib.util.find_spec("SimpleITK") is not None  # the baseline reader (absent on bare GPU machines)

    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: torch sees no CUDA GPU here; timing on the CPU instead")
        args.device = "cpu"
    device = select_device(args.device)
    bundle = load_grader(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        root = generate_dataset(Path(tmp) / "rsna", 1, seed=0)
        folders = sorted((root / "train_images" / "1000").iterdir())
        files = sum(len(list(f.iterdir())) for f in folders)
        print(f"one synthetic study: {len(folders)} series, {files} DICOM files; model {bundle.card['id']} "
              f"{bundle.card['version']}{' (DEMONSTRATION)' if bundle.is_demonstration else ''}; device {describe(device)}")
        stages: dict = {}
        gdcm = []
        for n in range(args.repeats + 1):
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                study = read_rsna_study(open_rsna(root), "1000")
            t_read = time.perf_counter() - t0
            result = grade_study(study, bundle, device=device)
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for f in folders if have_sitk else ():
                read_volume(f)
            t_gdcm = time.perf_counter() - t0
            if n == 0:
                continue  # warm-up
            times = {"read DICOM + CSVs": t_read, **{k: v for k, v in result.seconds.items() if k != "load_model"}}
            for k, v in times.items():
                stages.setdefault(k, []).append(v)
            gdcm.append(t_gdcm)
    med = {k: statistics.median(v) for k, v in stages.items()}
    total = sum(med.values())
    for k, v in med.items():
        print(f"  {k:<20} {v:7.3f} s")
    target = 0.5 if device.type == "cuda" else 5.0
    print(f"  {'total':<20} {total:7.3f} s   (target {target} s on {device.type}: total / target = {total / target:.2f})")
    g = statistics.median(gdcm)
    if not have_sitk:
        print("reading stage: SimpleITK is not installed here, so no GDCM baseline")
    else:
        print(f"reading stage: engine reader {med['read DICOM + CSVs']:.3f} s vs SimpleITK/GDCM read_volume of the same "
              f"3 series {g:.3f} s (engine / GDCM = {med['read DICOM + CSVs'] / g:.2f}; the engine's also maps instance numbers "
              "and tolerates damaged files)")
    print(f"median of {args.repeats} runs after one warm-up; grading without Grad-CAM would take "
          f"{total - med.get('explain', 0):.3f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
