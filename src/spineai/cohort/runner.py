"""Runs a cohort: plans what is not done yet, hands cases to workers (this process, local worker
processes, or a Dask cluster) and records each finished case in the database as it arrives."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

from spineai.errors import SpineAIError
from spineai.cohort.manifest import CohortCase
from spineai.cohort.steps import STEPS, run_case
from spineai.cohort.store import CohortDB, file_stamp, key_of
from spineai.progress import ProgressCallback, report


@dataclass
class RunSummary:
    total: int
    already_done: int = 0
    done: int = 0
    failed: list = field(default_factory=list)  # (case id, step, message)
    seconds: float = 0.0
    db_seconds: float = 0.0  # time spent planning and writing the database
    executor: str = "inline"
    workers: int = 1


def plan(db: CohortDB, cases: Sequence[CohortCase], steps: Sequence[str], params: str, params_sha256: str,
         model: str | None, model_sha256: str | None, image_model: str | None = None,
         image_model_sha256: str | None = None) -> tuple[list[dict], int]:
    """The tasks still to run (``(tasks, number of cases already complete)``): for each case, the
    requested steps whose stored input key differs or that are not done, and what they read from
    earlier steps."""
    state = db.steps()
    masks = db.mask_info()
    tasks, complete = [], 0
    for c in cases:
        image = str(c.image)
        annotated = masks.get(c.id, ("", ""))[0] == "annotation"
        keys = {"segment": key_of("segment", image, file_stamp(image), c.seed)}
        if annotated:
            mask_key = ("annotation", masks[c.id][1])
        elif c.mask is not None:
            mask_key = ("file", str(c.mask), file_stamp(c.mask), c.label)
        else:
            mask_key = ("segment", keys["segment"])
        keys["features"] = key_of("features", image, file_stamp(image), mask_key, params_sha256)
        keys["classify"] = key_of("classify", keys["features"], model, model_sha256)
        keys["classify-image"] = key_of("classify-image", image, file_stamp(image), mask_key, c.seed, image_model,
                                        image_model_sha256)
        wanted = [s for s in steps if not (s == "segment" and (annotated or c.mask is not None))]
        pending = [s for s in wanted if state.get((c.id, s)) != ("done", keys[s])]
        if not pending:
            complete += 1
            continue
        pending = wanted[wanted.index(pending[0]):]  # a redone step redoes what follows it
        task = {"id": c.id, "image": image, "mask": str(c.mask) if c.mask else None, "label": c.label,
                "seed": list(c.seed) if c.seed else None, "steps": pending, "keys": keys, "params": params,
                "params_sha256": params_sha256, "model": model, "image_model": image_model}
        if pending[0] != "segment" and mask_key[0] != "file" and {"features", "classify-image"} & set(pending):
            task["stored_mask"] = db.mask_record(c.id)
            if task["stored_mask"] is None:
                task.pop("stored_mask")
        if pending[0] == "classify":
            task["stored_features"] = db.features(c.id)
        tasks.append(task)
    return tasks, complete


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def run_cohort(db: CohortDB, cases: Sequence[CohortCase], steps: Sequence[str], params: str | None = None,
               model: str | None = None, workers: int | None = None, dask: str | None = None,
               progress: ProgressCallback | None = None, on_start: Callable[[int, int], None] | None = None,
               manifest: str | None = None, image_model: str | None = None) -> RunSummary:
    """Run ``steps`` for every case not yet done and record each in ``db``.

    ``workers``: local worker processes (default: the CPU cores this process may use; 1 runs the
    cases in this process). ``dask``: a ``dask.distributed`` scheduler address (``tcp://host:8786``)
    instead; its workers need SpineAI installed and the manifest's paths readable at the same names.
    ``on_start(to_run, already_done)`` is called once the plan is known. ``image_model``: the lesion
    image model of the classify-image step (default the shipped demonstration model)."""
    from spineai.radiomics import DEFAULT_PARAMETER_SET, load_parameters

    steps = [s for s in STEPS if s in steps]
    params = str(params or DEFAULT_PARAMETER_SET)
    params_sha256 = load_parameters(params).sha256  # a bad parameter set fails before any case
    model_sha256 = None
    if "classify" in steps:
        from spineai.cohort.steps import bundle

        if not model:
            raise SpineAIError("the classify step needs a model: --model ID_OR_PATH")
        b = bundle(model)  # a missing or damaged bundle fails before any case
        model_sha256 = b.sha256 or key_of(b.id, b.version)
    image_model_sha256 = None
    if "classify-image" in steps:
        from spineai.imaging.lesion import DEFAULT_MODEL, load_image_model

        image_model = image_model or DEFAULT_MODEL
        # a missing or damaged bundle (or no torch) fails before any case; on the CPU, so that
        # forked workers never inherit a started CUDA context
        b = load_image_model(image_model, "cpu")
        image_model_sha256 = b.sha256 or key_of(b.card.get("id"), b.card.get("version"))
    t0 = time.perf_counter()
    db.register(cases)
    tasks, complete = plan(db, cases, steps, params, params_sha256, model, model_sha256, image_model,
                           image_model_sha256)
    summary = RunSummary(len(cases), already_done=complete, db_seconds=time.perf_counter() - t0)
    workers = max(1, int(workers or default_workers()))
    summary.workers = workers
    summary.executor = "dask" if dask else ("inline" if workers == 1 or len(tasks) <= 1 else "processes")
    if on_start is not None:
        on_start(len(tasks), complete)
    run_id = db.start_run(steps=steps, executor=summary.executor if not dask else f"dask {dask}", workers=workers,
                          manifest=manifest, parameter_set=params,
                          model=", ".join(m for m in (model, image_model) if m) or None)

    def record(result: dict) -> None:
        t = time.perf_counter()
        db.record(result, run_id)
        summary.db_seconds += time.perf_counter() - t
        failed = [s for s in result["steps"] if s["status"] == "failed"]
        if failed:
            summary.failed.append((result["id"], failed[0]["step"], failed[0]["error"]))
        else:
            summary.done += 1
        n = summary.done + len(summary.failed)
        report(progress, n, len(tasks), result["id"] + (" FAILED" if failed else ""))

    start = time.perf_counter()
    if tasks:
        report(progress, 0, len(tasks), "")
    try:
        if summary.executor == "inline":
            for task in tasks:
                record(run_case(task))
        elif summary.executor == "processes":
            _run_processes(tasks, workers, record)
        else:
            summary.workers = _run_dask(tasks, dask, record)
    finally:
        summary.seconds = time.perf_counter() - start
        db.finish_run(run_id, summary.seconds)
    return summary


def _pool_context():
    import multiprocessing

    # fork starts a worker in milliseconds with the engine already imported; elsewhere spawn.
    if sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def _limit_threads(n: int) -> None:
    """A worker's share of the cores: ITK, BLAS / OpenMP and torch size their thread pools to the
    whole machine, so each of several workers would otherwise run as many threads as there are cores."""
    try:
        import SimpleITK as sitk

        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(n)
    except ImportError:
        pass
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(n)
    except ImportError:
        pass
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)


def _worker_init(threads: int = 1) -> None:
    import signal

    from spineai.cohort.lock import close_inherited

    close_inherited()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops the workers
    if sys.platform.startswith("linux"):
        try:  # die with the parent (kill -9 included) instead of computing cases nobody will record
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    _limit_threads(threads)


def _ctrl_c_flag():
    """(event, restore): until ``restore()``, Ctrl-C sets the event instead of raising KeyboardInterrupt
    wherever the main thread happens to be. Raised inside a finaliser (a future or a connection
    being collected), Python prints it and carries on: a run interrupted that way went on to
    finish and exit 0 (seen in CI under load). Off the main thread, no handler can be set."""
    import signal
    import threading

    event = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        return event, lambda: None
    previous = signal.signal(signal.SIGINT, lambda signum, frame: event.set())
    return event, lambda: signal.signal(signal.SIGINT, signal.SIG_DFL if previous is None else previous)


def _run_processes(tasks: list[dict], workers: int, record) -> None:
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    n = min(workers, len(tasks))
    pool = ProcessPoolExecutor(max_workers=n, mp_context=_pool_context(), initializer=_worker_init,
                               initargs=(max(1, (os.cpu_count() or 1) // n),))
    from concurrent.futures.process import BrokenProcessPool

    pending = iter(tasks)
    running: dict = {}
    interrupted, restore = _ctrl_c_flag()
    try:
        # A few cases queued per worker, not the whole cohort: an interrupted run has little in flight.
        for task in pending:
            running[pool.submit(run_case, task)] = task["id"]
            if len(running) >= 2 * workers:
                break
        while running:
            finished, _ = wait(list(running), timeout=0.2, return_when=FIRST_COMPLETED)
            if interrupted.is_set():
                raise KeyboardInterrupt
            for f in finished:
                cid = running.pop(f)
                try:
                    result = f.result()
                except BrokenProcessPool:
                    raise SpineAIError(f"a worker process died (out of memory?) while running case {cid}; the "
                                       f"finished cases are saved: rerun to resume") from None
                record(result)
                nxt = next(pending, None)
                if nxt is not None:
                    running[pool.submit(run_case, nxt)] = nxt["id"]
    except BaseException:
        for proc in list(getattr(pool, "_processes", {}).values()):  # Ctrl-C: stop the workers now
            proc.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        restore()
    pool.shutdown()


def _run_dask(tasks: list[dict], address: str, record) -> int:
    try:
        from distributed import Client, wait
    except ImportError:
        raise SpineAIError("--dask needs dask.distributed: pip install 'spineai[dask]' (or 'dask[distributed]')") from None
    try:
        client = Client(address, timeout=30)
    except (OSError, TimeoutError) as exc:
        raise SpineAIError(f"cannot reach the Dask scheduler at {address} ({exc})") from None
    try:
        threads = max(1, sum(client.nthreads().values()))
        pending = iter(tasks)
        running: dict = {}
        for task in pending:
            running[client.submit(run_case, task, pure=False)] = task
            if len(running) >= 2 * threads:
                break
        while running:
            finished = wait(list(running), return_when="FIRST_COMPLETED").done
            for f in finished:
                task = running.pop(f)
                try:
                    result = f.result()
                except Exception as exc:  # noqa: BLE001 - a lost worker (KilledWorker) fails this case only
                    step = task["steps"][0]
                    result = {"id": task["id"], "steps": [{"step": step, "status": "failed", "key": task["keys"][step],
                                                           "error": f"Dask: {type(exc).__name__}: {exc}",
                                                           "seconds": 0.0}]}
                record(result)
                nxt = next(pending, None)
                if nxt is not None:
                    running[client.submit(run_case, nxt, pure=False)] = nxt
        return threads
    finally:
        client.close()
