"""Training and validation of the learned vertebral-body click segmentation.

Data: folders of ``CASE_img.nii.gz`` + ``CASE_bodies.nii.gz`` (one label per vertebral body), such as
``spine-mr-bodies`` (63 real lumbar MR volumes; see its README for the sources to cite). Cases are
split by case, never by patch, into training and validation sets.

Each training example is one body and one simulated click anywhere in its inner half (where the
distance to the body's surface is at least half its largest value), in the DeepGrow / DeepEdit
style; some examples also get "add" clicks anywhere in the body and "remove" clicks in the tissue
around it, as a user's corrective clicks. Augmentation aims at what the training data lacks:
- spatial: rotation, scale, and compression / wedging of the body (fractures), through the patch
  sampler (``spineai.deep.patches``);
- contrast: inversion (T1-dark vs T2-bright marrow), random intensity curves and gamma;
- acquisition: bias field, noise, blur, and thick slices (3-4.5 mm) along a random axis.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from spineai.errors import SpineAIError
from spineai.image import Volume, read_volume

PATCH_SHAPE = (48, 48, 64)  # (S-I, A-P, L-R) voxels: 72 x 72 x 96 mm at 1.5 mm
SPACING_MM = 1.5
GUIDANCE_SIGMA_VOX = 2.0
# The settings of the shipped model (``spineai train-segmentation`` defaults).
TRAIN_DEFAULTS = {"steps": 5000, "batch": 4, "seed": 0, "lr": 2e-3, "val_every": 250, "patience": 8, "workers": 1}
NETWORK = {"class": "monai.networks.nets.UNet",
           "args": {"spatial_dims": 3, "in_channels": 3, "out_channels": 1, "channels": [16, 32, 64, 128, 256],
                    "strides": [2, 2, 2, 2], "num_res_units": 1}}


@dataclass
class Body:
    label: int
    centre_ijk: np.ndarray  # the innermost voxel (largest distance to the surface)
    inner_ijk: np.ndarray  # voxels of the inner half, (n, 3)
    all_ijk: np.ndarray  # a subsample of the body's voxels
    ring_ijk: np.ndarray  # a subsample of voxels 1-6 mm outside the body


@dataclass
class Case:
    name: str
    image: Volume
    labels: Volume
    bodies: list
    image_t: object = None  # torch tensors of the arrays, made once
    labels_t: object = None


def case_names(folder: Path) -> list[str]:
    names = sorted(p.name[: -len("_img.nii.gz")] for p in Path(folder).glob("*_img.nii.gz"))
    if not names:
        raise SpineAIError(f"{folder} holds no CASE_img.nii.gz / CASE_bodies.nii.gz pairs")
    return names


def split_cases(names: Sequence[str], seed: int = 0, val_per_source: dict | None = None) -> tuple[list, list]:
    """Split by case: ``val_per_source`` {name prefix: count} cases of each source go to validation."""
    val_per_source = val_per_source or {"VB2": 4, "VB3": 9}
    rng = np.random.default_rng(seed)
    val = []
    for prefix, count in sorted(val_per_source.items()):
        group = sorted(n for n in names if n.startswith(prefix))
        val += sorted(rng.choice(group, size=min(count, len(group)), replace=False).tolist())
    train = [n for n in names if n not in val]
    return train, sorted(val)


def load_case(folder: Path, name: str, rng: np.random.Generator | None = None) -> Case:
    import torch
    from scipy import ndimage

    image = read_volume(Path(folder) / f"{name}_img.nii.gz")
    labels = read_volume(Path(folder) / f"{name}_bodies.nii.gz")
    rng = rng or np.random.default_rng(0)
    bodies = []
    sp = np.asarray(image.spacing)[::-1]
    for lab, sl in enumerate(ndimage.find_objects(labels.array.astype(np.int32)), start=1):
        if sl is None:
            continue
        pad = [slice(max(s.start - 8, 0), s.stop + 8) for s in sl]
        sub = labels.array[tuple(pad)] == lab
        if sub.sum() < 100:
            continue
        dist = ndimage.distance_transform_edt(sub, sampling=sp)
        off = np.array([p.start for p in pad])
        inner = np.argwhere(dist >= 0.5 * dist.max())
        allv = np.argwhere(sub)
        ring = np.argwhere((ndimage.distance_transform_edt(~sub, sampling=sp) <= 6.0) & ~sub
                           & (ndimage.distance_transform_edt(~sub, sampling=sp) >= 1.0))
        pick = lambda a, n: a[rng.choice(len(a), size=min(n, len(a)), replace=False)]  # noqa: E731
        centre = np.unravel_index(np.argmax(dist), dist.shape)
        bodies.append(Body(lab, (np.array(centre) + off)[::-1], (pick(inner, 4000) + off)[:, ::-1],
                           (pick(allv, 4000) + off)[:, ::-1], (pick(ring, 4000) + off)[:, ::-1]))
    return Case(name, image, labels, bodies, torch.from_numpy(image.array.astype(np.float32)),
                torch.from_numpy(labels.array.astype(np.float32)))


def _lps(image: Volume, ijk) -> np.ndarray:
    m = image.ijk_to_lps_matrix()
    return np.asarray(ijk, float) @ m[:3, :3].T + m[:3, 3]


def _rotation(rng, max_deg=(12.0, 12.0, 20.0)) -> np.ndarray:
    """Random rotation: up to max_deg about the x (L-R), y (A-P) and z (S-I) axes; the largest about
    L-R tilts the spine in the sagittal plane, as lordosis and kyphosis do."""
    ax, ay, az = (np.deg2rad(rng.uniform(-d, d)) for d in (max_deg[2], max_deg[0], max_deg[1]))
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def make_example(case: Case, body: Body, rng: np.random.Generator, augment: bool = True,
                 click_ijk=None, add_ijk=(), remove_ijk=()):
    """(input (3, *PATCH_SHAPE), target (1, *PATCH_SHAPE)) for one body and one simulated click."""
    from spineai.deep.patches import PatchGrid, sample_patch
    from spineai.segment.deep import model_input

    if click_ijk is None:
        click_ijk = body.inner_ijk[rng.integers(len(body.inner_ijk))] if rng.random() > 0.15 else body.centre_ijk
    add, remove = list(add_ijk), list(remove_ijk)
    if augment and not add and rng.random() < 0.3:
        add = list(body.all_ijk[rng.integers(len(body.all_ijk), size=rng.integers(1, 3))])
    if augment and not remove and rng.random() < 0.3:
        remove = list(body.ring_ijk[rng.integers(len(body.ring_ijk), size=rng.integers(1, 3))])
    centre = _lps(case.image, click_ijk)
    if augment:
        s = rng.uniform(0.85, 1.2)
        scale = (s, s, s * (rng.uniform(1.0, 1.4) if rng.random() < 0.25 else 1.0))
        wedge = rng.uniform(-0.35, 0.35) if rng.random() < 0.25 else 0.0
        grid = PatchGrid(tuple(centre), PATCH_SHAPE, SPACING_MM, _rotation(rng), scale, wedge)
    else:
        grid = PatchGrid(tuple(centre), PATCH_SHAPE, SPACING_MM)
    values, inside = sample_patch(case.image, grid, case.image_t)
    target, _ = sample_patch(case.labels, grid, case.labels_t, mode="nearest")
    target = (target == body.label).float()
    if augment:
        values = _acquisition_augment(values, inside, rng)
    x = model_input(case.image, grid, [_lps(case.image, p) for p in [click_ijk] + add],
                    [_lps(case.image, p) for p in remove], GUIDANCE_SIGMA_VOX, raw=(values, inside))
    if augment:
        x[0] = _contrast_augment(x[0], inside, rng)
    return x, target[None]


def _acquisition_augment(values, inside, rng, spacing_mm: float = SPACING_MM):
    """Bias field, thick slices (3 or 4.5 mm) along a random axis, blur: before normalisation, as in
    the scanner. ``spacing_mm``: the patch's spacing (slices of a non-integer number of voxels are
    averaged over fractional voxels)."""
    import torch
    from monai.transforms import RandBiasField, RandGaussianSmooth

    v = values[None]
    if rng.random() < 0.35:
        t = RandBiasField(coeff_range=(0.1, 0.4), prob=1.0)
        t.set_random_state(int(rng.integers(2**31)))
        v = torch.as_tensor(t(v)) * (v.abs().max() > 0)
    if rng.random() < 0.35:
        axis = 3 if rng.random() < 0.6 else int(rng.integers(1, 3))  # mostly L-R: sagittal slices
        f = int(rng.integers(2, 4)) * 1.5 / spacing_mm  # 3 or 4.5 mm slices, in patch voxels
        if f == int(f):
            k = [1, 1, 1]
            k[axis - 1] = int(f)
            low = torch.nn.functional.avg_pool3d(v[None], kernel_size=k, stride=k, ceil_mode=True)
        else:
            size = list(v.shape[1:])
            size[axis - 1] = max(1, int(np.ceil(size[axis - 1] / f)))
            low = torch.nn.functional.adaptive_avg_pool3d(v[None], size)
        v = torch.nn.functional.interpolate(low, size=v.shape[1:], mode="trilinear", align_corners=False)[0]
    if rng.random() < 0.2:
        t = RandGaussianSmooth(sigma_x=(0.3, 1.0), sigma_y=(0.3, 1.0), sigma_z=(0.3, 1.0), prob=1.0)
        t.set_random_state(int(rng.integers(2**31)))
        v = torch.as_tensor(t(v))
    return v[0] * inside


def _contrast_augment(img, inside, rng):
    """After normalisation to [0, 1]: inversion, a random monotone or non-monotone curve, noise."""
    import torch
    from monai.transforms import RandAdjustContrast, RandHistogramShift

    v = img[None].clamp(0, 1)
    if rng.random() < 0.35:
        v = 1.0 - v
    if rng.random() < 0.4:
        t = RandHistogramShift(num_control_points=(4, 8), prob=1.0)
        t.set_random_state(int(rng.integers(2**31)))
        v = torch.as_tensor(t(v))
    if rng.random() < 0.4:
        t = RandAdjustContrast(gamma=(0.6, 1.7), prob=1.0)
        t.set_random_state(int(rng.integers(2**31)))
        v = torch.as_tensor(t(v))
    if rng.random() < 0.35:
        v = v + torch.from_numpy(rng.normal(0, rng.uniform(0.02, 0.08), size=v.shape).astype(np.float32))
    return v[0] * inside


def validation_examples(cases: Sequence[Case], per_body: int = 2, seed: int = 1):
    """Fixed validation patches (no augmentation): the centre click and ``per_body - 1`` inner clicks."""
    import torch

    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for case in cases:
        for body in case.bodies:
            clicks = [body.centre_ijk] + [body.inner_ijk[rng.integers(len(body.inner_ijk))] for _ in range(per_body - 1)]
            for c in clicks:
                x, y = make_example(case, body, rng, augment=False, click_ijk=c)
                xs.append(x)
                ys.append(y)
    return torch.stack(xs), torch.stack(ys)


def patch_dice(network, xs, ys, batch: int = 8, device=None) -> float:
    import torch

    device = device or next(network.parameters()).device
    scores = []
    with torch.no_grad():
        for s in range(0, len(xs), batch):
            p = network(xs[s:s + batch].to(device)).float().cpu() > 0
            t = ys[s:s + batch] > 0.5
            inter = (p & t).flatten(1).sum(1).float()
            denom = (p.flatten(1).sum(1) + t.flatten(1).sum(1)).float().clamp(min=1)
            scores += (2 * inter / denom).tolist()
    return float(np.mean(scores))


def train_body_model(data: str | Path, out: str | Path, steps: int = 5000, batch: int = 4, seed: int = 0,
                     lr: float = 2e-3, val_every: int = 250, patience: int = 8, max_minutes: Optional[float] = None,
                     device: str | None = None, resume: bool = True, val_per_source: dict | None = None,
                     workers: int = 1, progress=None, command: str = "") -> dict:
    """Train (or resume) the body click model; write ``out/model`` (the bundle) and the log.

    Returns a summary dict; when ``max_minutes`` runs out first, the run is 'paused' at a checkpoint and
    no bundle is written yet (run the same command again to continue)."""
    import torch
    from monai.losses import DiceCELoss

    from spineai.deep.bundle import build_network
    from spineai.deep.device import describe, select_device
    from spineai.deep.training import TrainConfig, train

    from monai.data import set_track_meta

    set_track_meta(False)  # plain tensors from MONAI transforms: metadata tracking costs more than the transforms
    dev = select_device(device)
    torch.manual_seed(seed)
    names = case_names(Path(data))
    train_names, val_names = split_cases(names, seed, val_per_source)
    t0 = time.perf_counter()
    load_rng = np.random.default_rng(seed)
    report_ = progress or (lambda *a: None)
    cases = []
    for n, name in enumerate(train_names + val_names):
        report_(n, len(names), f"loading {name}")
        cases.append(load_case(Path(data), name, load_rng))
    train_cases = cases[: len(train_names)]
    val_cases = cases[len(train_names):]
    val_x, val_y = validation_examples(val_cases, per_body=2, seed=seed + 1)
    load_seconds = time.perf_counter() - t0

    def sample_batch(rng):
        xs, ys = [], []
        for _ in range(batch):
            case = train_cases[rng.integers(len(train_cases))]
            body = case.bodies[rng.integers(len(case.bodies))]
            x, y = make_example(case, body, rng)
            xs.append(x)
            ys.append(y)
        return torch.stack(xs), torch.stack(ys)

    network = build_network(NETWORK)
    loss = DiceCELoss(sigmoid=True)
    cfg = TrainConfig(steps=steps, lr=lr, val_every=val_every, patience=patience, seed=seed, max_minutes=max_minutes,
                      workers=workers)
    result = train(network, sample_batch, loss, lambda net: {"val_dice": patch_dice(net, val_x, val_y)},
                   out, cfg, dev, progress, resume)
    summary = {"stopped": result.stopped, "steps": result.steps_done, "best_step": result.best_step,
               "best_val_patch_dice": result.best_metric, "train_seconds": result.seconds,
               "load_seconds": load_seconds, "device": result.trained_on or describe(dev), "train_cases": train_names,
               "validation_cases": val_names, "batch": batch, "seed": seed, "lr": lr, "command": command}
    if result.stopped == "paused":
        return summary
    network.load_state_dict(result.best_state)
    network.eval()
    return {**summary, "network": network}


# ---- validation on whole images, through the same path users take -------------------------------

def innermost_voxel(mask: np.ndarray) -> tuple[int, int, int]:
    """(i, j, k) of the voxel farthest inside a mask: the centre of a vertebral body."""
    from scipy import ndimage

    k, j, i = np.unravel_index(int(np.argmax(ndimage.distance_transform_edt(mask))), mask.shape)
    return int(i), int(j), int(k)


def _dice_precision(mask: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    inter = float((mask & truth).sum())
    return 2 * inter / max(1.0, float(mask.sum() + truth.sum())), inter / max(1.0, float(mask.sum()))


def _corrective_click(mask: np.ndarray, truth: np.ndarray, spacing_kji):
    """The click a user would give next: at the innermost voxel of the largest error region, 'add' for a
    missed part, 'remove' for a part taken in wrongly; None when no error region is 1 mL or more."""
    from scipy import ndimage

    best = None
    for kind, err in (("add", truth & ~mask), ("remove", mask & ~truth)):
        err = ndimage.binary_opening(err)  # a one-voxel rim is no place to click
        labels, n = ndimage.label(err)
        if not n:
            continue
        sizes = ndimage.sum(err, labels, range(1, n + 1))
        lab = int(np.argmax(sizes)) + 1
        if best is None or sizes[lab - 1] > best[0]:
            best = (sizes[lab - 1], kind, labels == lab)
    if best is None or best[0] * float(np.prod(spacing_kji)) < 1000.0:
        return None
    dist = ndimage.distance_transform_edt(best[2], sampling=spacing_kji)
    k, j, i = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return best[1], (int(i), int(j), int(k))


def choose_postprocessing(segmenter, cases: Sequence[Case], thresholds=(0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7)) -> dict:
    """The probability threshold, with or without left-right mirror averaging (only for a gain of 0.005
    or more), that gives the best mean Dice for centre clicks on ``cases`` (training cases: the validation cases stay unseen). The
    network's map is a 1.5 mm map sampled at 1 mm and finer, so 0.5 need not be where the reference
    masks' surface lies."""
    from spineai.segment.deep import mask_from_probability

    scores = {}
    for flip in (False, True):
        segmenter.flip_average = flip
        for case in cases:
            for body in case.bodies:
                truth = case.labels.array == body.label
                click = tuple(int(v) for v in body.centre_ijk)
                values, box, _ = segmenter.probability(case.image, click)
                for t in thresholds:
                    m = mask_from_probability(values, box, truth.shape, t, click).astype(bool)
                    scores.setdefault((flip, t), []).append(_dice_precision(m, truth)[0])
    means = {k: float(np.mean(v)) for k, v in scores.items()}
    best_single = max((k for k in means if not k[0]), key=means.get)
    best_flip = max((k for k in means if k[0]), key=means.get)
    # Mirror averaging costs 1.6x the network's time: only worth it for a clear gain.
    flip, threshold = best_flip if means[best_flip] >= means[best_single] + 0.005 else best_single
    segmenter.flip_average, segmenter.threshold = flip, threshold
    return {"threshold": threshold, "flip_average": flip, "chosen_on": [c.name for c in cases],
            "mean_dice": {f"{'mirror-averaged' if f else 'single'} {t}": round(v, 4) for (f, t), v in means.items()}}


def evaluate_clicks(segmenter, cases: Sequence[Case], jitter_clicks: int = 3, seed: int = 7, classic: bool = True,
                    overlay_dir: Path | None = None, progress=None) -> list[dict]:
    """Every body of every case: the centre click and ``jitter_clicks`` clicks anywhere in its inner
    half, through the learned method (and the classic one on the same clicks); one corrective click
    after the centre click. Returns one row per click."""
    from spineai.segment.classic import segment as classic_segment

    rng = np.random.default_rng(seed)
    rows = []
    total = sum(len(c.bodies) for c in cases)
    done = 0
    for case in cases:
        sp = np.asarray(case.image.spacing)[::-1]
        shown = []
        for body in case.bodies:
            truth = case.labels.array == body.label
            clicks = [("centre", tuple(int(v) for v in body.centre_ijk))]
            clicks += [("inner-half", tuple(int(v) for v in body.inner_ijk[rng.integers(len(body.inner_ijk))]))
                       for _ in range(jitter_clicks)]
            for kind, click in clicks:
                row = {"case": case.name, "body": body.label, "click": kind, "i": click[0], "j": click[1], "k": click[2]}
                t0 = time.perf_counter()
                mask = segmenter.segment(case.image, click).mask.array.astype(bool)
                row["deep_seconds"] = time.perf_counter() - t0
                row["deep_dice"], row["deep_precision"] = _dice_precision(mask, truth)
                if kind == "centre":
                    shown.append((truth, mask))
                    fix = _corrective_click(mask, truth, sp)
                    if fix is not None:
                        adds = [fix[1]] if fix[0] == "add" else []
                        removes = [fix[1]] if fix[0] == "remove" else []
                        fixed = segmenter.segment(case.image, click, adds, removes).mask.array.astype(bool)
                        row["corrective_click"] = fix[0]
                        row["corrected_dice"] = _dice_precision(fixed, truth)[0]
                if classic:
                    t0 = time.perf_counter()
                    try:
                        cmask = classic_segment(case.image, click, mode="vertebral-body").array.astype(bool)
                        row["classic_dice"], row["classic_precision"] = _dice_precision(cmask, truth)
                    except SpineAIError as exc:
                        row["classic_dice"], row["classic_precision"], row["classic_error"] = 0.0, 0.0, str(exc)
                    row["classic_seconds"] = time.perf_counter() - t0
                rows.append(row)
            done += 1
            if progress:
                progress(done, total, f"validating {case.name}")
        if overlay_dir is not None:
            overlay_case(case, shown, Path(overlay_dir) / f"{case.name}.png")
    return rows


def summarise(rows: list[dict]) -> dict:
    """Mean and minimum Dice and precision per click kind and method; corrective-click effect."""
    out = {}
    for kind in ("centre", "inner-half"):
        sel = [r for r in rows if r["click"] == kind]
        if not sel:
            continue
        for method in ("deep", "classic"):
            if f"{method}_dice" not in sel[0]:
                continue
            d = np.array([r[f"{method}_dice"] for r in sel])
            pr = np.array([r[f"{method}_precision"] for r in sel])
            out[f"{method}_{kind}"] = {"clicks": len(sel), "mean_dice": round(float(d.mean()), 4),
                                       "min_dice": round(float(d.min()), 4), "below_0.80": int((d < 0.8).sum()),
                                       "mean_precision": round(float(pr.mean()), 4),
                                       "min_precision": round(float(pr.min()), 4)}
    fixed = [r for r in rows if "corrected_dice" in r]
    if fixed:
        gain = np.array([r["corrected_dice"] - r["deep_dice"] for r in fixed])
        out["corrective_click"] = {"bodies_given_one": len(fixed), "improved": int((gain > 0.005).sum()),
                                   "worse": int((gain < -0.005).sum()), "mean_dice_gain": round(float(gain.mean()), 4)}
    sec = [r["deep_seconds"] for r in rows]
    out["deep_seconds_median"] = round(float(np.median(sec)), 3)
    return out


def overlay_case(case: Case, shown, path: Path) -> None:
    """Sagittal slice through the bodies' median centre: reference (green) and learned result (red)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not shown:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    i = int(np.median([b.centre_ijk[0] for b in case.bodies]))
    img = case.image.array[:, :, i]
    fig, ax = plt.subplots(figsize=(3.2, 6))
    ax.imshow(img, cmap="gray", aspect=case.image.spacing[2] / case.image.spacing[1])
    for truth, mask in shown:
        if truth[:, :, i].any():
            ax.contour(truth[:, :, i], [0.5], colors="lime", linewidths=1.0)
        if mask[:, :, i].any():
            ax.contour(mask[:, :, i], [0.5], colors="red", linewidths=0.8)
    ax.set_title(f"{case.name}: reference (green), learned (red)", fontsize=7)
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---- the whole product: train, validate, bundle --------------------------------------------------

MODEL_ID = "spineai-body-click"
MODEL_VERSION = "1.0.0"
DATA_CITATIONS = [
    "Burian E. et al. Lumbar muscle and vertebral bodies segmentation of chemical shift encoding-based water-fat "
    "MRI: the reference database MyoSegmenTUM spine. BMC Musculoskelet Disord 20, 152 (2019)",
    "Zukic D. et al. Robust detection and segmentation for diagnosis of vertebral diseases using routine MR images. "
    "Comput Graph Forum 33, 190-204 (2014)",
    "Prepared as in the FastCleverSeg collection: Ramos J. S. et al. Magn Reson Imaging 109, 134-146 (2024)",
]


def body_card(summary: dict, metrics: dict | None = None, threshold: float = 0.5, flip_average: bool = False) -> dict:
    from spineai.deep.training import run_record

    import spineai

    return {
        "id": MODEL_ID, "version": MODEL_VERSION, "task": "click-segmentation", "structure": "vertebral body",
        "engine_version": spineai.__version__, "demonstration": False,
        "intended_use": "Research use: segment the vertebral body under a click on sagittal or 3D spine MR. "
                        "Not a medical device; review every mask.",
        "network": NETWORK,
        "preprocessing": {"spacing_mm": SPACING_MM, "patch_shape": list(PATCH_SHAPE), "patch_axes": "LPS (x L, y P, z S)",
                          "patch_centre": "the first click", "percentiles": [1.0, 99.0],
                          "guidance": "channel 2: Gaussian blobs at the click and add clicks; channel 3: at remove clicks",
                          "guidance_sigma_vox": GUIDANCE_SIGMA_VOX, "threshold": threshold, "flip_average": flip_average,
                          "postprocessing_rule": "threshold and mirror averaging with the best mean Dice of centre "
                                                 "clicks on every 6th training case"},
        "training": {
            "data": "spine-mr-bodies: 63 real lumbar MR volumes, every vertebral body labelled, 1 mm isotropic",
            "citations": DATA_CITATIONS, "split": "by case, seeded",
            "train_cases": summary["train_cases"], "validation_cases": summary["validation_cases"],
            "steps": summary["steps"], "best_step": summary["best_step"], "stopped": summary["stopped"],
            "batch": summary["batch"], "learning_rate": summary["lr"], "seed": summary["seed"],
            "loss": "Dice + binary cross-entropy (MONAI DiceCELoss)", "optimizer": "AdamW, warm-up then cosine decay",
            "clicks": "one click anywhere in the inner half of the body (15 % at its centre); 30 % add 1-2 clicks "
                      "anywhere in the body, 30 % add 1-2 remove clicks 1-6 mm outside it",
            "augmentation": ["rotation up to 20 deg (sagittal) / 12 deg", "scale 0.85-1.2", "S-I compression up to 1.4x",
                             "wedge +-35 %", "bias field", "thick slices 3-4.5 mm", "blur", "contrast inversion",
                             "random intensity curves", "gamma 0.6-1.7", "Gaussian noise"],
            **run_record(summary["train_seconds"], summary["command"], summary["device"]),
        },
        "metrics": metrics or {},
        "limits": [
            "Trained on healthy adult lumbar spines (water-fat and T2 MR): fractures, lesions, T1, STIR, CT and "
            "cervical or thoracic levels are covered only by augmentation; check the out-of-distribution figures.",
            "The patch covers 96 x 72 x 72 mm (L-R, A-P, S-I) around the click: a body larger than that is cut.",
        ],
    }


def train_and_bundle(data: str | Path, out: str | Path, progress=None, command: str = "", **train_args) -> dict:
    """``spineai train-segmentation``: train or resume; when training ends, validate on the held-out
    cases through the user's path (whole images, original geometry), with the classic method on the
    same clicks, and write the bundle (``out/model``), ``validation_clicks.csv`` and the overlays."""
    import csv
    import json

    from spineai.deep.bundle import save_torch_bundle
    from spineai.segment.deep import ClickSegmenter

    out = Path(out)
    summary = train_body_model(data, out, progress=progress, command=command, **train_args)
    if summary["stopped"] == "paused":
        return summary
    network = summary.pop("network")
    bundle_path = out / "model"
    save_torch_bundle(body_card(summary), network, bundle_path, overwrite=True)
    segmenter = ClickSegmenter(str(bundle_path), train_args.get("device"))
    tuning = choose_postprocessing(segmenter, [load_case(Path(data), name) for name in summary["train_cases"][::6]])
    cases = [load_case(Path(data), name) for name in summary["validation_cases"]]
    rows = evaluate_clicks(segmenter, cases, overlay_dir=out / "overlays", progress=progress)
    first = ["case", "body", "click"]
    keys = first + sorted({k for r in rows for k in r} - set(first))
    with open(out / "validation_clicks.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    metrics = {"validation": {"cases": len(cases), "bodies": sum(len(c.bodies) for c in cases), **summarise(rows)},
               "validation_patch_dice_best": round(summary["best_val_patch_dice"], 4), "postprocessing_choice": tuning}
    save_torch_bundle(body_card(summary, metrics, tuning["threshold"], tuning["flip_average"]), network, bundle_path,
                      overwrite=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    lines = [f"{k}: {v}" for k, v in metrics["validation"].items()]
    return {**summary, "bundle": str(bundle_path), "metrics": metrics, "report": lines}


def ship_bundle(bundle: str | Path, models_dir: Path | None = None, registry: Path | None = None) -> dict:
    """``spineai train-segmentation --ship``: the bundle into the package, pinned in the registry."""
    from spineai.deep.bundle import ship_torch_bundle

    def description(card):
        v = card.get("metrics", {}).get("validation", {})
        return (f"Learned vertebral-body click segmentation (3D U-Net) on MR; validation Dice "
                f"{v.get('deep_centre', {}).get('mean_dice', '?')} (centre click, {v.get('cases', '?')} unseen cases).")

    return ship_torch_bundle(bundle, description, models_dir, registry)


