"""Features cost against image size: the same lesion in images of 1.3 M, 10 M and 42 M voxels.

    python benchmarks/bench_features_scaling.py [--repeats 7]
    SPINEAI_BENCH_SRC=/path/to/other/src python benchmarks/bench_features_scaling.py   # another version

One 2 cm lesion (phantom MET lesion, its own voxels and mask) is placed at the centre of int16
volumes of 128 x 128 x 80, 256 x 256 x 160 and 512 x 512 x 160 voxels (0.5 x 0.5 x 1 mm); the
rest is phantom-like noise, so the region and its bounding box are identical in every size and
only the work outside them differs. For each size: median time of
``spineai.radiomics.extract_features`` over N runs after a warm-up, and the tracemalloc peak of
one run; the ratio 42 M / 1.3 M is the figure the issue's target (within 2x) reads.

Then the command line's fixed costs, each in a fresh interpreter: ``import spineai.cli`` plus
building the ``features`` parser, whether it imports ``spineai.models``, and ``load_parameters``
of the shipped set (parsing and schema validation).

``SPINEAI_BENCH_SRC`` points the script at another checkout's ``src`` (the "before" figures
come from commit 6595506's).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

SRC = os.environ.get("SPINEAI_BENCH_SRC") or str(Path(__file__).resolve().parents[1] / "src")
sys.path.insert(0, SRC)

from spineai.image import Volume  # noqa: E402
from spineai.radiomics import extract_features  # noqa: E402

SHAPES_KJI = [(80, 128, 128), (160, 256, 256), (160, 512, 512)]


def _lesion():
    """A 2 cm MET lesion's image block and mask, cut from the default phantom."""
    from spineai.phantom import make_spine_phantom

    ph = make_spine_phantom(seed=1, lesion_kind="MET")
    m = ph.lesion_mask.array > 0
    box = tuple(slice(int(a.min()) - 2, int(a.max()) + 3) for a in np.nonzero(m))
    return ph.image.array[box].copy(), m[box].astype(np.uint8)


def _volumes(shape, block, mask):
    rng = np.random.default_rng(0)
    image = (400 + 30 * rng.standard_normal(shape)).astype(np.int16)
    labels = np.zeros(shape, np.uint8)
    at = tuple(slice(n // 2 - b // 2, n // 2 - b // 2 + b) for n, b in zip(shape, block.shape))
    image[at] = block
    labels[at] = mask
    geom = dict(spacing=(0.5, 0.5, 1.0), origin=(10.0, -20.0, 30.0))
    return Volume(image, **geom), Volume(labels, **geom)


def _fresh(code: str) -> str:
    env = dict(os.environ, PYTHONPATH=SRC)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          check=True).stdout.strip()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args(argv)

    block, mask = _lesion()
    print(f"engine from {SRC}; lesion {int(mask.sum())} voxels in a {block.shape[::-1]} (i, j, k) box; "
          f"{os.cpu_count()} CPU(s), load average {os.getloadavg()[0]:.2f}")
    rows = []
    for shape in SHAPES_KJI:
        image, labels = _volumes(shape, block, mask)
        first = extract_features(image, labels)  # warm-up: PyRadiomics import, parameter set
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            result = extract_features(image, labels)
            times.append(time.perf_counter() - t0)
        assert result.values == first.values
        tracemalloc.start()
        extract_features(image, labels)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        rows.append((int(np.prod(shape)), statistics.median(times), peak, result.values))
        print(f"{rows[-1][0] / 1e6:5.1f} M voxels: features median {rows[-1][1] * 1000:6.1f} ms "
              f"(min {min(times) * 1000:.1f}), traced peak {peak / 2**20:6.1f} MiB")
    same = all(r[3] == rows[0][3] for r in rows)
    print(f"42 M / 1.3 M: time {rows[-1][1] / rows[0][1]:.2f}x, memory {rows[-1][2] / max(rows[0][2], 1):.2f}x "
          f"(target within 2x); values identical across sizes: {same}")

    # Fixed costs of one `spineai features` run, each in a fresh interpreter.
    parser_ms = _fresh(
        "import sys, time; t = time.perf_counter(); import spineai.cli as c\n"
        "p = c.build_parser(['features']) if c.build_parser.__code__.co_argcount else c.build_parser()\n"
        "print(round((time.perf_counter() - t) * 1000, 1), 'spineai.models' in sys.modules)")
    print(f"`spineai features` argument parser: {parser_ms.split()[0]} ms from a fresh interpreter; "
          f"imports spineai.models: {parser_ms.split()[1]}")
    load_ms = _fresh(
        "import time; import radiomics, spineai.radiomics as r; t = time.perf_counter()\n"
        "r.load_parameters(r.DEFAULT_PARAMETER_SET); print(round((time.perf_counter() - t) * 1000, 1))")
    print(f"load_parameters({'spineai31-v1'!r}) in a fresh process (PyRadiomics already imported): {load_ms} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
