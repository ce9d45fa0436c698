"""Task-neutral image classifiers: networks by name, crops in patient space, training, evaluation,
and Grad-CAM heatmaps laid back onto the source image's voxels.

Used by the MR lesion classifier (``spineai.imaging.lesion``) and the radiograph classifiers; 2D and
3D, any number of classes. A classifier is a torch bundle (``spineai.deep.bundle``) whose card holds
the network (``network``), the class names (``classes``) and, for volume inputs, the crop recipe
(``preprocessing``, see ``sample_crop``).

Networks never download weights: ``pretrained`` is always off, and a start from other weights is a
local file (``load_initial_weights``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from spineai.errors import SpineAIError
from spineai.image import Volume

# ---- networks --------------------------------------------------------------------------------------

# name -> (card "network" entry builder, prefix of the head's parameters: what stays trainable while
# the backbone is frozen). Sizes are MONAI's standard ones, except "resnet-small" (the fast default).
_RESNETS = {"resnet-small": ("basic", [1, 1, 1, 1], [16, 32, 64, 128]),
            "resnet18": ("basic", [2, 2, 2, 2], [64, 128, 256, 512]),
            "resnet34": ("basic", [3, 4, 6, 3], [64, 128, 256, 512]),
            "resnet101": ("bottleneck", [3, 4, 23, 3], [64, 128, 256, 512])}
BACKBONES = tuple(_RESNETS) + ("efficientnet-b0", "efficientnet-b3", "densenet121", "vit")


def network_spec(backbone: str, spatial_dims: int, in_channels: int, num_classes: int,
                 input_size: Sequence[int]) -> dict:
    """The card's ``network`` entry for a named backbone: ``{"class", "args", "head"}``."""
    if spatial_dims not in (2, 3):
        raise SpineAIError(f"image classifiers are 2D or 3D, not {spatial_dims}D")
    if num_classes < 2:
        raise SpineAIError(f"a classifier needs at least 2 classes, got {num_classes}")
    size = [int(s) for s in input_size]
    if len(size) != spatial_dims:
        raise SpineAIError(f"input size {size} does not have {spatial_dims} dimensions")
    if backbone in _RESNETS:
        block, layers, planes = _RESNETS[backbone]
        small = backbone == "resnet-small"
        args = {"block": block, "layers": layers, "block_inplanes": planes, "spatial_dims": spatial_dims,
                "n_input_channels": in_channels, "num_classes": num_classes,
                "conv1_t_size": 5 if small else 7, "conv1_t_stride": 1 if small else 2}
        return {"class": "monai.networks.nets.ResNet", "args": args, "head": "fc"}
    if backbone.startswith("efficientnet-"):
        args = {"model_name": backbone, "pretrained": False, "spatial_dims": spatial_dims,
                "in_channels": in_channels, "num_classes": num_classes}
        return {"class": "monai.networks.nets.EfficientNetBN", "args": args, "head": "_fc"}
    if backbone == "densenet121":
        args = {"spatial_dims": spatial_dims, "in_channels": in_channels, "out_channels": num_classes}
        return {"class": "monai.networks.nets.DenseNet121", "args": args, "head": "class_layers"}
    if backbone == "vit":
        patch = [16 if s >= 128 else 8 for s in size]
        if any(s % p for s, p in zip(size, patch)):
            raise SpineAIError(f"the ViT needs an input size divisible by its patch size {patch}, got {size}")
        args = {"spatial_dims": spatial_dims, "in_channels": in_channels, "num_classes": num_classes,
                "img_size": size, "patch_size": patch}
        return {"class": "spineai.imaging.vit.ViTClassifier", "args": args, "head": "head"}
    raise SpineAIError(f"unknown backbone {backbone!r} (choose from {', '.join(BACKBONES)})")


def build_classifier(spec: dict):
    """The network of a ``network_spec`` entry (``head`` is SpineAI's, not the network's argument)."""
    from spineai.deep.bundle import build_network

    return build_network({k: v for k, v in spec.items() if k != "head"})


def load_initial_weights(network, path: str | Path) -> dict:
    """Start from a local weights file (safetensors, or a torch state dict read with
    ``weights_only=True``): every tensor whose name and shape fit is copied; the rest (usually the
    head, sized for other classes) keeps its initialisation. Nothing is downloaded."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise SpineAIError(f"initial weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
            state = state.get("state_dict", state) if isinstance(state, dict) else state
    except Exception as exc:  # any unreadable file: one clear message
        raise SpineAIError(f"initial weights file {path} is unreadable ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict):
        raise SpineAIError(f"initial weights file {path} holds no state dict")
    own = network.state_dict()
    fit = {k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    if not fit:
        raise SpineAIError(f"none of the {len(state)} tensors in {path} fits this network (names or shapes differ)")
    network.load_state_dict(fit, strict=False)
    return {"file": path.name, "tensors_loaded": len(fit), "tensors_in_network": len(own)}


# ---- crops in patient space ---------------------------------------------------------------------------

CROP_KINDS = ("sagittal-slices", "volume")


def check_recipe(recipe: dict) -> dict:
    """The crop recipe of a card, checked. ``kind`` 'sagittal-slices': ``slices`` parallel sagittal
    slices ``slice_spacing_mm`` apart are the channels of a 2D image of ``shape`` (S-I, A-P) pixels;
    'volume': one channel, ``shape`` (S-I, A-P, L-R) voxels. ``spacing_mm`` in-plane; intensities
    scaled so that the ``percentiles`` of the crop's in-image voxels map to 0 and 1."""
    try:
        kind = recipe["kind"]
        shape = [int(s) for s in recipe["shape"]]
        spacing = float(recipe["spacing_mm"])
    except (KeyError, TypeError, ValueError):
        raise SpineAIError("the model card's 'preprocessing' needs 'kind', 'shape' and 'spacing_mm'") from None
    if kind not in CROP_KINDS:
        raise SpineAIError(f"unknown crop kind {kind!r} in the model card (known: {', '.join(CROP_KINDS)})")
    if len(shape) != (2 if kind == "sagittal-slices" else 3) or min(shape) < 8 or spacing <= 0:
        raise SpineAIError(f"the model card's crop shape {shape} or spacing {spacing} does not fit kind {kind!r}")
    return {"kind": kind, "shape": shape, "spacing_mm": spacing, "slices": int(recipe.get("slices", 1)),
            "slice_spacing_mm": float(recipe.get("slice_spacing_mm", spacing)),
            "percentiles": [float(p) for p in recipe.get("percentiles", (1.0, 99.0))]}


def crop_grid(recipe: dict, centre_lps, rotation=None, scale: float = 1.0):
    """The ``PatchGrid`` of a crop centred on ``centre_lps``; rotation and scale for augmentation."""
    from spineai.deep.patches import PatchGrid

    r = check_recipe(recipe)
    if r["kind"] == "sagittal-slices":
        shape = (r["shape"][0], r["shape"][1], r["slices"])
        sx = r["slice_spacing_mm"] / r["spacing_mm"]
    else:
        shape, sx = tuple(r["shape"]), 1.0
    return PatchGrid(tuple(float(c) for c in centre_lps), shape, r["spacing_mm"], rotation,
                     (sx * scale, scale, scale))


def sample_crop(volume: Volume, recipe: dict, centre_lps, rotation=None, scale: float = 1.0, array=None):
    """The network input (C, *spatial) torch tensor of a crop and its grid. Sampling on the grid in
    patient space is the resampling step (one interpolation, exactly invertible for the heatmap)."""
    from spineai.deep.patches import robust_normalise, sample_patch

    r = check_recipe(recipe)
    grid = crop_grid(r, centre_lps, rotation, scale)
    values, inside = sample_patch(volume, grid, array)
    if not inside.any():
        raise SpineAIError("the crop around the lesion lies entirely outside the image")
    x = robust_normalise(values, inside, *r["percentiles"])
    if r["kind"] == "sagittal-slices":
        return x.permute(2, 0, 1).contiguous(), grid  # (slices, S-I, A-P)
    return x[None], grid


def heatmap_to_volume(heatmap, grid, volume: Volume) -> Volume:
    """A crop's heatmap (spatial shape of the network input) as a float32 volume on ``volume``'s
    own voxels, 0 outside the crop. A 2D map of sagittal slices covers the slab from its first to its
    last slice."""
    import torch

    from spineai.deep.patches import patch_to_volume

    heat = torch.as_tensor(np.asarray(heatmap, np.float32))
    nz, ny, nx = grid.shape
    if heat.dim() == 2 and tuple(heat.shape) == (nz, ny):
        heat = heat[:, :, None].expand(nz, ny, nx)
    if tuple(heat.shape) != (nz, ny, nx):
        raise SpineAIError(f"heatmap shape {tuple(heat.shape)} does not fit the crop {grid.shape}")
    values, box = patch_to_volume(heat.contiguous(), grid, volume)
    out = np.zeros(volume.array.shape, np.float32)
    if values.size:
        out[box] = np.clip(values, 0.0, 1.0)  # interpolation round-off must not leave [0, 1]
    return volume.with_array(out)


# ---- inference ------------------------------------------------------------------------------------

def predict_probabilities(network, x, batch: int = 32, device=None) -> np.ndarray:
    """Softmax probabilities (N, classes) for inputs (N, C, ...), in eval mode, without gradients."""
    import torch

    device = device or next(network.parameters()).device
    was = network.training
    network.eval()
    out = []
    with torch.no_grad():
        for s in range(0, len(x), batch):
            out.append(torch.softmax(network(x[s:s + batch].to(device)).float(), 1).cpu())
    network.train(was)
    return torch.cat(out).numpy()


@dataclass
class Explanation:
    probabilities: np.ndarray  # (classes,)
    classes: list
    predicted: str
    heatmap: Volume  # on the source volume's voxels, [0, 1]
    crop_heatmap: np.ndarray  # the map on the network's input grid
    crop: object  # torch tensor, the network input (C, ...)
    grid: object  # PatchGrid of the crop
    method: str
    target_layer: str
    class_index: int
    seconds: dict = field(default_factory=dict)


def explain_crop(bundle, volume: Volume, centre_lps, method: str = "gradcam", class_index: Optional[int] = None,
                 target_layer: Optional[str] = None) -> Explanation:
    """Crop, classify and Grad-CAM in one pass; the heatmap is returned on ``volume``'s geometry."""
    from spineai.deep.cam import explain

    card = bundle.card
    t0 = time.perf_counter()
    x, grid = sample_crop(volume, card["preprocessing"], centre_lps)
    t1 = time.perf_counter()
    result = explain(bundle.network, x[None], class_index=class_index, method=method,
                     target_layer=target_layer or card.get("cam_layer"))
    t2 = time.perf_counter()
    heat = heatmap_to_volume(result.heatmap[0], grid, volume)
    t3 = time.perf_counter()
    classes = list(card["classes"])
    p = result.probabilities[0]
    return Explanation(p, classes, classes[int(np.argmax(p))], heat, result.heatmap[0], x, grid, method,
                       result.target_layer, result.class_index[0],
                       {"crop": t1 - t0, "classify_and_cam": t2 - t1, "heatmap_to_volume": t3 - t2})


# ---- data splits -----------------------------------------------------------------------------------

def split_by_group(groups: Sequence[str], y: Sequence[int], fractions: Sequence[float] = (0.7, 0.15, 0.15),
                   seed: int = 0) -> list:
    """Index arrays (train, validation, test, ...) with no group (patient, source case) in two parts.
    Groups are dealt per class of their first example, so every part gets every class when there are
    enough groups; a part without some class is reported, not hidden."""
    groups = np.asarray([str(g) for g in groups])
    y = np.asarray(y, int)
    if len(groups) != len(y):
        raise SpineAIError(f"{len(groups)} group ids for {len(y)} examples")
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise SpineAIError(f"split fractions must add up to 1, got {list(fractions)}")
    rng = np.random.default_rng(seed)
    uniq, first = np.unique(groups, return_index=True)
    parts: list = [[] for _ in fractions]
    for c in np.unique(y):
        members = uniq[y[first] == c]
        members = members[rng.permutation(len(members))]
        cuts = np.round(np.cumsum(fractions)[:-1] * len(members)).astype(int)
        for part, chunk in zip(parts, np.split(members, cuts)):
            part += chunk.tolist()
    out = [np.flatnonzero(np.isin(groups, p)) for p in parts]
    for n, idx in enumerate(out):
        missing = sorted(set(np.unique(y).tolist()) - set(y[idx].tolist()))
        if fractions[n] > 0 and missing:
            raise SpineAIError(f"too few groups: split part {n} gets no example of class(es) {missing}")
    return out


# ---- training --------------------------------------------------------------------------------------

def default_augment(x, rng: np.random.Generator):
    """Mild, orientation-preserving augmentation of one input (C, ...): in half the cases a rotation up
    to 10 deg and a scale of 0.9-1.1 (one torch resampling), then MONAI's random gamma and noise.
    Tasks with their own physics pass their own function."""
    import torch

    dims = x.dim() - 1
    if rng.random() < 0.5:
        from scipy.spatial.transform import Rotation

        if dims == 2:
            a = np.deg2rad(rng.uniform(-10, 10))
            rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        else:
            rot = Rotation.from_rotvec(np.deg2rad(rng.uniform(-10, 10, 3)) / np.sqrt(3)).as_matrix()
        theta = np.concatenate([rot * rng.uniform(0.9, 1.1), np.zeros((dims, 1))], 1)
        theta_t = torch.as_tensor(theta, dtype=torch.float32)[None]
        grid = torch.nn.functional.affine_grid(theta_t, [1, *x.shape], align_corners=False)
        x = torch.nn.functional.grid_sample(x[None].float(), grid, padding_mode="zeros", align_corners=False)[0]
    for t in _intensity_augmenters():
        t.set_random_state(int(rng.integers(2**31)))
        x = torch.as_tensor(t(x))
    return x


_AUGMENTERS: list = []


def _intensity_augmenters():
    """MONAI's random gamma and noise, made once per process (making them costs more than using them)."""
    if not _AUGMENTERS:
        from monai.transforms import RandAdjustContrast, RandGaussianNoise

        _AUGMENTERS.extend([RandAdjustContrast(prob=0.4, gamma=(0.7, 1.5)), RandGaussianNoise(prob=0.3, std=0.05)])
    return _AUGMENTERS


@dataclass
class ClassifierTraining:
    network: object
    summary: dict


def _ready_for_training(network, head: str) -> None:
    """Two MONAI EfficientNet defaults that break short trainings: its head starts uniform in
    +-1/sqrt(classes) (2-class logits of about +-16, a first loss of 2-4), so the head starts near
    zero; its batch norms keep running statistics with momentum 0.01, so after a few hundred steps
    the eval-mode network still uses statistics close to their initial values, its features vanish
    and every input gets the same output; momentum 0.1 (torch's default) tracks them in ~30 steps.
    Momentum is not part of the weights: a bundle loads the same."""
    import torch

    for name, module in network.named_modules():
        if isinstance(module, torch.nn.Linear) and (name == head or name.startswith(head + ".")):
            torch.nn.init.normal_(module.weight, std=0.01)
            torch.nn.init.zeros_(module.bias)
        elif isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and (module.momentum or 0) < 0.1:
            module.momentum = 0.1


def class_weights(y: np.ndarray, num_classes: int) -> np.ndarray:
    """Inverse-frequency weights, mean 1 over the examples: each class counts as much in the loss."""
    counts = np.bincount(np.asarray(y, int), minlength=num_classes).astype(float)
    if (counts == 0).any():
        raise SpineAIError(f"the training set has no example of class(es) {np.flatnonzero(counts == 0).tolist()}")
    return counts.sum() / (num_classes * counts)


def train_classifier(spec: dict, train_x, train_y, val_x, val_y, out: str | Path, steps: int = 600,
                     batch: int = 16, lr: float = 1e-3, seed: int = 0, balance: str = "sampling",
                     freeze_steps: int = 0, init_weights: Optional[str] = None,
                     augment: Optional[Callable] = default_augment, device=None, progress=None,
                     max_minutes: Optional[float] = None, resume: bool = True, val_every: int = 50,
                     patience: int = 8) -> ClassifierTraining:
    """Train a classifier on in-memory inputs (N, C, ...) with ``spineai.deep.training.train``.

    ``balance``: 'sampling' (each batch draws classes equally), 'weights' (inverse-frequency class
    weights in the loss) or 'none'. ``freeze_steps`` > 0: first only the head trains (the backbone
    frozen, as when starting from ``init_weights``), then all layers, in a second stage from the first
    stage's best weights. The best weights (validation log-loss) are kept. When ``max_minutes`` runs
    out, the run pauses at a checkpoint (``summary['stopped'] == 'paused'``); the same call resumes.
    """
    import torch

    from spineai.deep.device import describe, select_device
    from spineai.deep.training import TrainConfig, train

    from monai.data import set_track_meta

    set_track_meta(False)  # plain tensors from MONAI transforms: metadata tracking costs more than the transforms
    if balance not in ("sampling", "weights", "none"):
        raise SpineAIError(f"unknown balance {balance!r} (choose sampling, weights or none)")
    train_x, val_x = torch.as_tensor(train_x).float(), torch.as_tensor(val_x).float()
    train_y, val_y = np.asarray(train_y, int), np.asarray(val_y, int)
    k = int(spec["args"].get("num_classes", spec["args"].get("out_channels", 0)))
    if len(train_x) != len(train_y) or len(val_x) != len(val_y):
        raise SpineAIError("inputs and labels differ in number")
    if len(val_y) == 0:
        raise SpineAIError("training needs a validation set (it picks the best weights on it)")
    weights = class_weights(train_y, k)
    dev = select_device(device)
    torch.manual_seed(seed)
    network = build_classifier(spec)
    _ready_for_training(network, spec.get("head", ""))
    init = load_initial_weights(network, init_weights) if init_weights else None
    by_class = [np.flatnonzero(train_y == c) for c in range(k)]
    loss = torch.nn.CrossEntropyLoss(weight=torch.tensor(weights, dtype=torch.float32, device=dev)
                                     if balance == "weights" else None)

    def sample_batch(rng):
        if balance == "sampling":
            idx = [by_class[c][rng.integers(len(by_class[c]))] for c in rng.integers(k, size=batch)]
        else:
            idx = rng.integers(len(train_y), size=batch)
        xs = [augment(train_x[i], rng) if augment else train_x[i] for i in idx]
        return torch.stack(xs).float(), torch.as_tensor(train_y[idx], dtype=torch.long)

    def validate(net):
        p = predict_probabilities(net, val_x, device=dev)
        nll = -np.log(np.clip(p[np.arange(len(val_y)), val_y], 1e-7, 1)).mean()
        return {"val_neg_log_loss": -float(nll), "val_accuracy": float((p.argmax(1) == val_y).mean())}

    out = Path(out)
    stages = [("head", freeze_steps), ("all", steps)] if freeze_steps > 0 else [("all", steps)]
    history, seconds, stopped, best_metric, best_step = [], 0.0, "finished", float("nan"), 0
    for name, n_steps in stages:
        head = spec.get("head", "")
        for pname, param in network.named_parameters():
            param.requires_grad_(name == "all" or pname.startswith(head + "."))
        cfg = TrainConfig(steps=n_steps, lr=lr, warmup=min(50, n_steps // 10 + 1), val_every=val_every,
                          patience=patience, seed=seed, max_minutes=max_minutes, monitor="val_neg_log_loss",
                          background_batches=False)
        result = train(network, sample_batch, loss, validate, out / f"stage-{name}", cfg, dev, progress, resume)
        history += [{**r, "stage": name} for r in result.history]
        seconds += result.seconds
        stopped, best_metric, best_step = result.stopped, result.best_metric, result.best_step
        network.load_state_dict(result.best_state)
        if stopped == "paused":
            break
    for param in network.parameters():
        param.requires_grad_(True)
    network.eval()
    summary = {"stopped": stopped, "best_step": best_step, "best_val_log_loss": -best_metric, "history": history,
               "train_seconds": seconds, "device": describe(dev), "steps": steps, "freeze_steps": freeze_steps,
               "batch": batch, "lr": lr, "seed": seed, "balance": balance, "initial_weights": init,
               "class_weights": weights.round(4).tolist(), "train_examples": int(len(train_y)),
               "validation_examples": int(len(val_y))}
    return ClassifierTraining(network, summary)


# ---- evaluation ------------------------------------------------------------------------------------

def evaluate(probs: np.ndarray, y: Sequence[int], classes: Sequence[str], groups: Optional[Sequence[str]] = None,
             n_boot: int = 1000, seed: int = 0, thresholds_from: Optional[tuple] = None) -> dict:
    """ACC, AUC, F1, sensitivity, specificity, Brier with bootstrap 95 % CIs (over groups when given),
    the confusion matrix (rows true, columns predicted), per-class calibration, and decision
    thresholds per class (one-vs-rest: Youden, sensitivity 0.9, precision 0.9) chosen on
    ``thresholds_from`` = (probs, y) (validation data) and applied to these."""
    from spineai.models.evaluation import calibration_curve, choose_threshold, confusion, metrics_with_ci

    probs, y = np.asarray(probs, float), np.asarray(y, int)
    groups_a = None if groups is None else np.asarray([str(g) for g in groups])
    out = {"classes": list(classes), "n": int(len(y)), "per_class_n": np.bincount(y, minlength=len(classes)).tolist(),
           "metrics": metrics_with_ci(probs, y, n_boot=n_boot, seed=seed, groups=groups_a),
           "confusion": confusion(probs, y),
           "calibration": {c: calibration_curve(probs[:, i], y == i, bins=5) for i, c in enumerate(classes)}}
    if thresholds_from is not None:
        vp, vy = np.asarray(thresholds_from[0], float), np.asarray(thresholds_from[1], int)
        out["thresholds"] = {}
        for i, c in enumerate(classes if len(classes) > 2 else classes[1:]):
            i = i if len(classes) > 2 else 1
            rules = {}
            for rule, target in (("youden", None), ("recall", 0.9), ("precision", 0.9)):
                try:
                    chosen = choose_threshold(vp[:, i], vy == i, rule, target)
                except SpineAIError as exc:
                    rules[f"{rule}{'' if target is None else f'@{target}'}"] = {"error": str(exc)}
                    continue
                pred, pos = probs[:, i] >= chosen["threshold"], y == i
                rules[f"{rule}{'' if target is None else f'@{target}'}"] = {
                    "threshold": chosen["threshold"],
                    "test_sensitivity": float((pred & pos).sum() / max(pos.sum(), 1)),
                    "test_specificity": float((~pred & ~pos).sum() / max((~pos).sum(), 1))}
            out["thresholds"][c] = rules
    return out


def cam_layer_candidates(network, input_shape: Sequence[int], scales: int = 3) -> list:
    """The deepest layer at each of the last ``scales`` feature-map sizes (more than one voxel across):
    the Grad-CAM target layers worth comparing, coarse (semantic) to finer (sharper maps). A module
    that runs more than once per pass (the activation a bottleneck block reuses after each of its
    convolutions, EfficientNet's shared swish) is no candidate: its name stands for maps of several
    sizes and depths, and Grad-CAM would pair one call's activation with another's gradient."""
    from collections import Counter

    from spineai.deep.cam import spatial_layers

    layers = spatial_layers(network, input_shape)
    calls = Counter(name for name, _ in layers)
    deepest: dict = {}
    for name, shape in layers:
        if calls[name] == 1 and all(s > 1 for s in shape[2:]):
            deepest[tuple(shape[2:])] = name  # later layers of the same size replace earlier ones
    return list(deepest.values())[-scales:]


def choose_cam_layer(network, x, regions, method: str = "gradcam", scales: int = 3) -> dict:
    """The Grad-CAM target layer whose maps put the most mass inside ``regions`` (masks on the
    input grid, one per input), relative to the regions' share: choose it on validation data."""
    import torch

    from spineai.deep.cam import explain

    x = torch.as_tensor(x)
    scores = {}
    for layer in cam_layer_candidates(network, (1,) + tuple(x.shape[1:]), scales):
        maps = explain(network, x, method=method, target_layer=layer).heatmap
        scores[layer] = float(np.mean([heatmap_localisation(m, r)["ratio"] for m, r in zip(maps, regions)]))
    return {"layer": max(scores, key=scores.get), "mean_ratio_by_layer": {k: round(v, 3) for k, v in scores.items()}}


def heatmap_localisation(heatmap: np.ndarray, region: np.ndarray) -> dict:
    """How much of a heatmap's mass lies in ``region`` (a boolean mask on the same grid), against the
    region's share of the grid: the ratio is 1 for a map that ignores where the region is. Also
    whether the map's peak lies in the region (the "pointing game"; chance = the region's share)."""
    heatmap = np.asarray(heatmap, float)
    region = np.asarray(region, bool)
    if heatmap.shape != region.shape:
        raise SpineAIError(f"heatmap {heatmap.shape} and region {region.shape} differ in shape")
    total = heatmap.sum()
    share = float(region.mean())
    mass = float(heatmap[region].sum() / total) if total > 0 else 0.0
    return {"mass_inside": mass, "area_share": share, "ratio": mass / share if share > 0 else float("nan"),
            "peak_inside": bool(total > 0 and region.flat[int(np.argmax(heatmap))])}
