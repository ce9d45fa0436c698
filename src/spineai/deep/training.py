"""One training loop for every learned SpineAI model.

Reproducible by construction: step ``s`` draws its batch from ``numpy.random.default_rng((seed, s))``
and the learning rate is a pure function of ``s``, so a run resumed from a checkpoint continues
exactly as an uninterrupted one would (no random state to save). A checkpoint (weights, optimizer
moments as safetensors, the step and the log as JSON) is written at every validation; early
stopping watches one validation metric; ``max_minutes`` ends a run cleanly at a checkpoint so that
long trainings go in resumable pieces. The log is a CSV and a PNG of the curves.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

from spineai.progress import ProgressCallback, report

CHECKPOINT = "checkpoint"


@dataclass
class TrainConfig:
    steps: int = 3000
    lr: float = 2e-3
    min_lr_fraction: float = 0.05
    warmup: int = 50
    weight_decay: float = 1e-5
    val_every: int = 150
    patience: int = 8  # validations without improvement before stopping early
    seed: int = 0
    background_batches: bool = True  # worker processes prepare batches while the network trains
    workers: int = 1  # batch-preparing processes; a GPU needs several to be kept busy
    max_minutes: Optional[float] = None
    monitor: str = "val_dice"  # higher is better


@dataclass
class TrainResult:
    best_state: dict
    best_metric: float
    best_step: int
    steps_done: int
    stopped: str  # "finished", "early-stopped" or "paused"
    history: list = field(default_factory=list)
    seconds: float = 0.0
    trained_on: str = ""  # device, cores and data workers of the run that trained it


def add_training_arguments(parser, defaults: dict, names=None) -> None:
    """The options every training command shares: one per default in ``names`` (all of ``defaults``
    but the validation cadence and patience, which stay fixed), ``--max-minutes``, ``--restart``,
    ``--ship`` and ``--device``."""
    from spineai.deep.device import DEVICE_CHOICES

    for name in names or [n for n in defaults if n not in ("val_every", "patience")]:
        value = defaults[name]
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value, help=f"default {value}")
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="pause at a checkpoint after this long; the same command resumes")
    parser.add_argument("--restart", action="store_true", help="ignore an existing checkpoint in --out")
    parser.add_argument("--ship", action="store_true",
                        help="maintainers: copy the bundle into the package and pin its sha256 in the bundled registry")
    parser.add_argument("--device", choices=DEVICE_CHOICES, default=None)


def git_commit() -> str:
    """The commit the engine runs from, for a model card; ``SPINEAI_GIT_COMMIT`` names it where the
    checkout was copied without .git (e.g. to a lent GPU machine)."""
    import subprocess

    if os.environ.get("SPINEAI_GIT_COMMIT"):
        return os.environ["SPINEAI_GIT_COMMIT"]
    root = Path(__file__).resolve().parents[3]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return head + (" (with uncommitted changes)" if dirty else "")


def run_record(seconds: float, command: str, device: Optional[str] = None) -> dict:
    """How a model was made, for its card's training record: the device (when given), the hardware,
    the duration, the command and the git commit."""
    import platform

    record = {} if device is None else {"device": device}
    record.update({"hardware": f"{platform.machine()}, {os.cpu_count()} CPU cores",
                   "duration_minutes": round(seconds / 60, 1), "command": command, "git_commit": git_commit()})
    return record


def report_training(summary: dict, ship: Optional[Callable] = None, lines: Optional[Sequence[str]] = None,
                    kind: str = "bundle") -> int:
    """The end of every training command: say whether it paused or finished and where the bundle is,
    print its report ``lines`` (default ``summary["report"]``), and with ``ship`` (the model's ship
    function; given for ``--ship``) put the bundle into the package. Returns the exit code."""
    if summary["stopped"] == "paused":
        at = f" at step {summary['steps']}" if "steps" in summary else ""
        print(f"paused{at} (--max-minutes): run the same command again to continue")
        return 0
    at = f" at step {summary['steps']}" if "steps" in summary else ""
    best = f" (best step {summary['best_step']})" if "best_step" in summary else ""
    print(f"{summary['stopped']}{at}{best}; {kind} -> {summary['bundle']}")
    for line in summary.get("report", []) if lines is None else lines:
        print(line)
    if ship is not None:
        entry = ship(summary["bundle"])
        print(f"shipped {entry['id']} {entry['version']} -> resources/models/{entry['url']} "
              f"(sha256 {entry['sha256'][:12]}...)")
    return 0


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up, then cosine decay to ``min_lr_fraction`` of the peak at ``cfg.steps``."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    return cfg.lr * (cfg.min_lr_fraction + (1 - cfg.min_lr_fraction) * 0.5 * (1 + math.cos(math.pi * t)))


def train(network, sample_batch: Callable, loss_fn: Callable, validate: Callable, out_dir: str | os.PathLike,
          cfg: TrainConfig, device=None, progress: Optional[ProgressCallback] = None, resume: bool = True) -> TrainResult:
    """Train ``network`` in place; return the best weights (by ``cfg.monitor``) and the log.

    ``sample_batch(rng) -> (inputs, targets)`` (CPU tensors), ``loss_fn(outputs, targets)``,
    ``validate(network) -> dict`` of metrics including ``cfg.monitor``.
    """
    import numpy as np
    import torch

    from spineai.deep.device import autocast, select_device

    device = device or select_device()
    torch.set_flush_denormal(True)  # denormal gradients late in training slow CPU arithmetic many times over
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    network.to(device)
    opt = torch.optim.AdamW(network.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and not torch.cuda.is_bf16_supported())
    from spineai.deep.device import describe

    state = {"step": 0, "best": -math.inf, "best_step": 0, "stale": 0, "history": [], "seconds": 0.0,
             "trained_on": f"{describe(device)}, {os.cpu_count()} CPU cores, {cfg.workers} data worker(s)"}
    best_state = {k: v.detach().cpu().clone() for k, v in network.state_dict().items()}
    ckpt = out / CHECKPOINT
    if resume and (ckpt / "state.json").exists():
        state, best_state = _load_checkpoint(ckpt, network, opt, device)
        report(progress, state["step"], cfg.steps, f"resumed at step {state['step']}")
    start = time.perf_counter()
    base_seconds = state["seconds"]
    losses = []
    stopped = "finished" if state["stale"] < cfg.patience else "early-stopped"
    step = first_step = state["step"]
    batches = iter(_batch_loader(sample_batch, cfg, first_step))
    waited = 0.0
    while step < cfg.steps and stopped == "finished":
        network.train()
        for group in opt.param_groups:
            group["lr"] = learning_rate(cfg, step)
        t_wait = time.perf_counter()
        x, y = next(batches)
        waited += time.perf_counter() - t_wait
        x, y = x.to(device), y.to(device)
        with autocast(device):
            loss = loss_fn(network(x), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        losses.append(float(loss.detach()))
        step += 1
        done_here = step - first_step
        eta = (cfg.steps - step) * (time.perf_counter() - start) / done_here
        report(progress, step, cfg.steps, f"loss {np.mean(losses[-20:]):.4f}, ETA {eta / 60:.1f} min, "
                                          f"{waited / done_here:.2f} s/step waiting for data")
        at_limit = cfg.max_minutes is not None and (time.perf_counter() - start) / 60 >= cfg.max_minutes
        if step % cfg.val_every == 0 or step == cfg.steps or at_limit:
            network.eval()
            with torch.no_grad():
                metrics = validate(network)
            row = {"step": step, "lr": learning_rate(cfg, step - 1), "train_loss": float(np.mean(losses)) if losses else float("nan"),
                   "seconds": base_seconds + time.perf_counter() - start, **{k: float(v) for k, v in metrics.items()}}
            losses = []
            state["history"].append(row)
            value = row[cfg.monitor]
            if value > state["best"]:
                state.update(best=value, best_step=step, stale=0)
                best_state = {k: v.detach().cpu().clone() for k, v in network.state_dict().items()}
            else:
                state["stale"] += 1
            state["step"] = step
            state["seconds"] = row["seconds"]
            state["finished"] = state["stale"] >= cfg.patience or step == cfg.steps
            _save_checkpoint(ckpt, network, opt, state, best_state)
            write_log(state["history"], out)
            if state["stale"] >= cfg.patience:
                stopped = "early-stopped"
                break
            if at_limit and step < cfg.steps:
                stopped = "paused"
                break
    return TrainResult(best_state, state["best"], state["best_step"], step, stopped, state["history"], state["seconds"],
                       state.get("trained_on", ""))


def _batch_loader(sample_batch: Callable, cfg: TrainConfig, first_step: int):
    """Batches for steps first_step.. in order, each from its own seeded generator, so the stream
    is the same with any number of worker processes (the loader hands step indices out and gives
    the batches back in order) and after a resume."""
    import numpy as np
    import torch

    class Steps(torch.utils.data.Dataset):
        def __len__(self):
            return cfg.steps - first_step

        def __getitem__(self, i):
            return sample_batch(np.random.default_rng((cfg.seed, first_step + i)))

    if not cfg.background_batches:
        return (Steps()[i] for i in range(cfg.steps - first_step))
    workers = max(1, int(cfg.workers))
    # Several workers: one thread each, or their thread pools fight over the cores.
    init = (lambda _: torch.set_num_threads(1)) if workers > 1 else None
    return torch.utils.data.DataLoader(Steps(), batch_size=None, shuffle=False, num_workers=workers,
                                       prefetch_factor=4, worker_init_fn=init, persistent_workers=False)


def _save_checkpoint(folder: Path, network, opt, state: dict, best_state: dict) -> None:
    """Written to a temporary folder, then swapped in: a kill mid-write keeps the last checkpoint."""
    import shutil

    import torch
    from safetensors.torch import save_file

    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}, str(tmp / "model.safetensors"))
    save_file({k: v.contiguous() for k, v in best_state.items()}, str(tmp / "best.safetensors"))
    opt_state = opt.state_dict()
    tensors = {}
    for idx, entry in opt_state["state"].items():
        for name, value in entry.items():
            tensors[f"{idx}.{name}"] = value.detach().cpu().contiguous() if hasattr(value, "detach") else torch.tensor(value)
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    meta = {**state, "param_groups": opt_state["param_groups"]}
    (tmp / "state.json").write_text(json.dumps(meta, indent=1))
    old = folder.with_name(folder.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)


def _load_checkpoint(folder: Path, network, opt, device):
    from safetensors.torch import load_file

    from spineai.errors import SpineAIError

    # A finished run's checkpoint may be cut down to state.json + best.safetensors (what a
    # training machine sends back): nothing is left to resume, only the best weights to use.
    try:
        meta = json.loads((folder / "state.json").read_text())
        best = load_file(str(folder / "best.safetensors"))
        complete = not (folder / "optimizer.safetensors").exists()
        if complete and not meta.get("finished"):
            raise ValueError("optimizer.safetensors is missing and the run had not finished")
        network.load_state_dict(best if complete else load_file(str(folder / "model.safetensors")))
        flat = {} if complete else load_file(str(folder / "optimizer.safetensors"))
    except (OSError, ValueError, RuntimeError) as exc:
        raise SpineAIError(f"the checkpoint in {folder} is unreadable or does not fit this network ({exc}); "
                           "start again without --resume or delete it") from None
    if complete:
        meta.pop("param_groups", None)
        network.to(device)
        return meta, best
    per_param: dict = {}
    for key, value in flat.items():
        idx, name = key.split(".", 1)
        per_param.setdefault(int(idx), {})[name] = value
    opt.load_state_dict({"state": per_param, "param_groups": meta.pop("param_groups")})
    network.to(device)
    return meta, best


def write_log(history: list, out_dir: Path) -> None:
    """``training_log.csv`` and ``training_curves.png`` (loss and every validation metric per step)."""
    if not history:
        return
    keys = list(history[0])
    with open(out_dir / "training_log.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [k for k in keys if k not in ("step", "lr", "seconds", "train_loss")]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    steps = [r["step"] for r in history]
    axes[0].plot(steps, [r["train_loss"] for r in history], label="training loss")
    axes[0].set_xlabel("step")
    axes[0].set_title("training loss (mean since the last validation)")
    for k in metrics:
        axes[1].plot(steps, [r[k] for r in history], marker="o", ms=3, label=k)
    axes[1].set_xlabel("step")
    axes[1].set_title("validation (cases never trained on)")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "training_curves.png", dpi=110)
    plt.close(fig)
