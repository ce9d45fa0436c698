"""Cohort throughput with 1 and 2 workers, and the database's share of a case's time.

    python benchmarks/bench_cohort.py                 # 50 cases, full-size phantoms, workers 1 and 2
    python benchmarks/bench_cohort.py --cases 20 --size small --workers 1,2,4
    python benchmarks/bench_cohort.py --folder /tmp/cohort50   # keep the generated cohort, reuse it next time

Writes a synthetic cohort (``spineai.cohort.synthetic``: phantom MR volumes of 192 x 256 x 24
voxels, SD / MET / STB lesions, a seed per case, no mask files) into a temporary folder, then
runs ``spineai.cohort.run_cohort`` with steps segment, features, classify (the demonstration
model) into a fresh database for each worker count, in this process. Baseline: the 1-worker run
(cases in this process, no pool). Reported per run: wall time of the cases, cases per minute,
speed-up over 1 worker, and the time the parent spent planning and writing the database (one
transaction per case, synchronous=FULL) as a share of the run and per case. The 1-worker figure
is the honest overhead (the writes sit on the critical path); with workers the parent writes while
they compute. The load average is printed before and after: the machine is shared, so read the
speed-up only from a quiet run. The steps' own seconds tell why a speed-up falls short: the workers' busy share
(runner overhead) against the compute time per case (slower per case with more workers: the cores
are shared).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from spineai.cohort import CohortDB, read_manifest, run_cohort  # noqa: E402
from spineai.cohort.synthetic import write_synthetic_cohort  # noqa: E402

STEPS = ["segment", "features", "classify"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", type=int, default=50)
    ap.add_argument("--size", choices=("full", "small"), default="full")
    ap.add_argument("--workers", default="1,2", help="comma-separated worker counts (default 1,2)")
    ap.add_argument("--folder", help="where the cohort is written, or read when its manifest is already there "
                                     "(default a temporary folder)")
    args = ap.parse_args(argv)
    counts = [int(w) for w in args.workers.split(",")]
    print(f"cpus available: {len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()}; "
          f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.folder) if args.folder else Path(tmp) / "cohort"
        manifest = folder / "manifest.csv"
        if not manifest.is_file():
            t = time.perf_counter()
            write_synthetic_cohort(folder, args.cases, seed=0, masks="none", size=args.size)
            print(f"{args.cases}-case synthetic cohort ({args.size} phantoms) written in {time.perf_counter() - t:.1f} s")
        cases = read_manifest(manifest)
        print(f"{len(cases)} cases from {manifest}")
        # warm-up: imports, the model bundle and the parameter set, as any long-running process has them
        with CohortDB(":memory:") as db:
            run_cohort(db, cases[:1], STEPS, model="spineai-demo-phantom", workers=1)
        results = {}
        for w in counts:
            with CohortDB(Path(tmp) / f"w{w}.sqlite") as db:
                s = run_cohort(db, cases, STEPS, model="spineai-demo-phantom", workers=w)
                compute = db.db.execute("SELECT sum(seconds) FROM steps").fetchone()[0]
            assert s.done == args.cases, s.failed
            results[w] = s
            base = results[counts[0]].seconds
            print(f"workers {w}: {s.seconds:6.1f} s, {60 * s.done / s.seconds:6.1f} cases/min, speed-up "
                  f"{base / s.seconds:4.2f}x vs {counts[0]} worker(s); database {s.db_seconds:.3f} s = "
                  f"{100 * s.db_seconds / s.seconds:.2f} % of the run, {1000 * s.db_seconds / s.done:.1f} ms per case "
                  f"({s.executor})")
            # Steps' own seconds, summed: the share of the workers' time spent computing cases. Below
            # 100 % is the runner's overhead; a per-case time above the 1-worker run's is contention.
            print(f"           compute {compute / s.done:.3f} s per case; busy {100 * compute / (w * s.seconds):.1f} % "
                  f"of {w} worker(s) x wall time")
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
