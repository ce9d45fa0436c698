"""Image classifier speed: one lesion (crop + classify + Grad-CAM onto the volume), the backbones at the
issue's sizes, and training throughput with and without mixed precision.

    python benchmarks/bench_image_classifier.py [--repeats 7] [--threads 2] [--device cpu|cuda]
    python benchmarks/bench_image_classifier.py --backbones [--device cuda]
    python benchmarks/bench_image_classifier.py --train-throughput --device cuda

Default: the shipped demonstration model (``spineai-lesion-demo``) on a generated MET lesion in a
test case it never saw (SPINEAI_TEST_DATA/spine-mr-bodies), or on the demo phantom without the
shared data. Times ``spineai.imaging.lesion.classify_lesion`` end to end (median of N after one
untimed warm-up) with its stages, and the baseline in the same process: a plain forward pass of the
network on the same crop; prints the ratio Grad-CAM pass / plain forward.

--backbones: forward and forward + Grad-CAM for ResNet34 3D at 64^3 and 96^3, ResNet101 3D at 64^3,
DenseNet121, EfficientNet-B0 / B3 and the ViT in 2D at 224^2 (3 classes, batch 1, random weights), as
in the issue's table. --train-throughput: training images/s (forward, backward, AdamW step; batch
16) of the 2D backbones and ResNet34 3D 64^3, float32 and, on a GPU, mixed precision.

--device cuda without a CUDA GPU falls back to the CPU and says so.
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


def _device(name):
    import torch

    if name == "cuda" and not torch.cuda.is_available():
        print("--device cuda: torch sees no CUDA GPU here; falling back to the CPU")
        name = "cpu"
    return torch.device(name or "cpu")


def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def _median_time(fn, repeats, device):
    fn()  # warm-up: first call allocations, cuDNN autotuning, hooks
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def lesion_case():
    """(image, mask, where): a generated MET lesion in a test case of the shipped model, or the phantom."""
    from spineai.image import read_volume

    root = os.environ.get("SPINEAI_TEST_DATA")
    folder = Path(root or "/nonexistent", "spine-mr-bodies")
    if folder.is_dir():
        from spineai.deep.bundle import load_torch_bundle
        from spineai.imaging.lesion import DEFAULT_MODEL
        from spineai.imaging.lesion_data import generate_lesion

        case = load_torch_bundle(DEFAULT_MODEL).card["training"]["cases"]["test"][0]
        image = read_volume(folder / f"{case}_img.nii.gz")
        g = generate_lesion(image, read_volume(folder / f"{case}_bodies.nii.gz"), "MET", np.random.default_rng(0))
        return g.image, g.mask, f"generated MET lesion in test case {case} ({image.size_ijk} voxels, {image.spacing} mm)"
    from spineai.phantom import make_spine_phantom

    ph = make_spine_phantom(seed=0, lesion_kind="MET")
    return ph.image, ph.lesion_mask, f"demo phantom ({ph.image.size_ijk} voxels, {ph.image.spacing} mm)"


def per_lesion(repeats, device_name):
    import torch

    from spineai.imaging.classifier import sample_crop
    from spineai.imaging.lesion import classify_lesion, lesion_centre, load_image_model

    device = _device(device_name)
    image, mask, where = lesion_case()
    bundle = load_image_model(device=device.type)
    print(f"{bundle.card['id']} {bundle.card['version']} ({bundle.card['backbone']}, input "
          f"{bundle.card['preprocessing']['slices']} x {bundle.card['preprocessing']['shape']}) on {where}; "
          f"device {device}, {torch.get_num_threads()} threads")
    stages = []

    def whole():
        r = classify_lesion(image, mask=mask, device=device.type)
        stages.append(r.explanation.seconds)

    total = _median_time(whole, repeats, device)
    x, _ = sample_crop(image, bundle.card["preprocessing"], lesion_centre(image, mask))
    x = x[None].to(device)

    def forward():
        with torch.no_grad():
            bundle.network(x)

    fwd = _median_time(forward, max(repeats, 20), device)
    cam = statistics.median(s["classify_and_cam"] for s in stages)
    print(f"per lesion, crop + classify + Grad-CAM + heatmap on the volume: {total * 1000:.1f} ms (median of {repeats}; "
          f"target <= 1000 ms)")
    for key in stages[0]:
        print(f"  {key}: {statistics.median(s[key] for s in stages) * 1000:.1f} ms")
    print(f"baseline, plain forward pass on the same crop: {fwd * 1000:.2f} ms; Grad-CAM pass / forward = "
          f"{cam / fwd:.2f}x (target <= 3x)")


BACKBONES = [("resnet34", 3, (64, 64, 64)), ("resnet34", 3, (96, 96, 96)), ("resnet101", 3, (64, 64, 64)),
             ("densenet121", 2, (224, 224)), ("efficientnet-b0", 2, (224, 224)), ("efficientnet-b3", 2, (224, 224)),
             ("vit", 2, (224, 224))]


def backbones(repeats, device_name):
    import torch

    from spineai.deep.cam import explain
    from spineai.imaging.classifier import build_classifier, network_spec

    device = _device(device_name)
    print(f"backbones, batch 1, 3 classes, random weights; device {device}, {torch.get_num_threads()} threads")
    print(f"{'backbone':<16} {'input':<14} {'forward':>10} {'+Grad-CAM':>10} {'ratio':>6}")
    for name, dims, size in BACKBONES:
        net = build_classifier(network_spec(name, dims, 1, 3, size)).to(device).eval()
        x = torch.randn(1, 1, *size, device=device)

        def forward():
            with torch.no_grad():
                net(x)

        fwd = _median_time(forward, repeats, device)
        cam = _median_time(lambda: explain(net, x), repeats, device)
        shape = "x".join(map(str, size))
        print(f"{name:<16} {f'{dims}D {shape}':<14} {fwd:>9.3f}s {cam:>9.3f}s {cam / fwd:>5.2f}x")
        del net


def train_throughput(device_name, steps: int = 6, batch: int = 16):
    import torch

    from spineai.deep.device import autocast
    from spineai.imaging.classifier import build_classifier, network_spec

    device = _device(device_name)
    print(f"training throughput (forward + backward + AdamW step, batch {batch}); device {device}")
    precisions = ["float32"] + (["mixed"] if device.type == "cuda" else [])
    if device.type != "cuda":
        print("  mixed precision: GPU only (on the CPU autocast is slower than float32)")
    for name, dims, size in [b for b in BACKBONES if b[1] == 2] + [("resnet34", 3, (64, 64, 64))]:
        for precision in precisions:
            net = build_classifier(network_spec(name, dims, 1, 3, size)).to(device).train()
            opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
            scaler = torch.amp.GradScaler("cuda", enabled=precision == "mixed" and not torch.cuda.is_bf16_supported())
            x = torch.randn(batch, 1, *size, device=device)
            y = torch.randint(0, 3, (batch,), device=device)

            def step():
                import contextlib

                with autocast(device) if precision == "mixed" else contextlib.nullcontext():
                    loss = torch.nn.functional.cross_entropy(net(x), y)
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()

            seconds = _median_time(step, steps, device)
            shape = "x".join(map(str, size))
            print(f"  {name:<16} {dims}D {shape:<12} {precision:<8} {batch / seconds:8.1f} images/s")
            del net, opt


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2, as in the issue)")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--backbones", action="store_true", help="the backbones at the issue's sizes")
    ap.add_argument("--train-throughput", action="store_true", help="training images/s, float32 and mixed precision")
    args = ap.parse_args(argv)
    import torch
    from monai.data import set_track_meta

    set_track_meta(False)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    if args.backbones:
        backbones(min(args.repeats, 3) if args.device == "cpu" else args.repeats, args.device)
    elif args.train_throughput:
        train_throughput(args.device)
    else:
        per_lesion(args.repeats, args.device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
