"""Scoliosis screening of one frontal radiograph: milliseconds per film, split by stage.

    python benchmarks/bench_radiograph.py [--films 20] [--model ID_OR_PATH] [--device cpu|cuda] [--size 256]

Generates N films (``spineai.imaging.radiograph_synth``, 256 x 256 as in the study; a third with
scoliosis) outside the timed region, loads the model (default: the shipped demonstration), and after
one untimed warm-up times per film, in the same process:
- the baseline: preprocessing + one plain forward pass under ``torch.no_grad()`` (what a classifier
  without explanation costs);
- ``classify_radiograph``: preprocessing, forward + backward for Grad-CAM (probabilities from the
  same pass), the map back onto the film's pixels, and the Cobb angle from the measured centre line.
Prints medians, each stage, and the ratio of the whole to the baseline. ``--device cuda`` runs the
network on the GPU; without CUDA it says so and uses the CPU.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run from a checkout without installing

from spineai.imaging.radiograph_classifier import classify_radiograph, film_input, load_radiograph_model  # noqa: E402
from spineai.imaging.radiograph_synth import generate_radiograph  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--films", type=int, default=20)
    ap.add_argument("--size", type=int, default=256, help="film size in pixels (default 256, the study's)")
    ap.add_argument("--model", default=None, help="scoliosis bundle (default: the shipped demonstration)")
    ap.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    args = ap.parse_args(argv)
    import torch

    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: torch sees no CUDA GPU here; measuring on the CPU instead")
        device = "cpu"
    bundle = load_radiograph_model(args.model, device)
    net_device = next(bundle.network.parameters()).device
    films = [generate_radiograph(10.0 + 40 * (n % 3 == 0), seed=n, size=args.size) for n in range(args.films)]
    volumes = [f.volume() for f in films]
    size = bundle.card["preprocessing"]["input_size"]
    print(f"model {bundle.card['id']} {bundle.card['version']} ({bundle.card['training']['backbone']}, input {size}), "
          f"{args.films} films of {args.size} x {args.size}, device {net_device}"
          + (f" ({torch.cuda.get_device_name(net_device)})" if net_device.type == "cuda" else
             f", torch {torch.__version__}, {torch.get_num_threads()} threads, load {os.getloadavg()[0]:.2f}"))

    def baseline(film):
        with torch.no_grad():
            x = film_input(film.image, size)[None].to(net_device)
            p = torch.softmax(bundle.network(x), 1)[0, 1].item()
        return p

    def sync():
        if net_device.type == "cuda":
            torch.cuda.synchronize()

    baseline(films[0])
    classify_radiograph(bundle, volumes[0])  # warm-up: the Grad-CAM hooks, first calls
    base_t, full_t, stages = [], [], {}
    for film, vol in zip(films, volumes):
        sync()
        t0 = time.perf_counter()
        baseline(film)
        sync()
        base_t.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        res = classify_radiograph(bundle, vol)
        sync()
        full_t.append(time.perf_counter() - t0)
        for k, v in res.seconds.items():
            stages.setdefault(k, []).append(v)
    base, full = statistics.median(base_t) * 1000, statistics.median(full_t) * 1000
    print(f"baseline (preprocess + plain forward, no_grad): {base:8.1f} ms per film (median)")
    print(f"classify_radiograph (+ Grad-CAM + Cobb angle):  {full:8.1f} ms per film (median)")
    for k, v in stages.items():
        print(f"    {k:22s} {statistics.median(v) * 1000:8.1f} ms")
    print(f"ratio whole / baseline: {full / base:.2f}x; films per second: {1000 / full:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
