"""What a worker does for one case: plain dict in, plain dict out, so the same function runs inline,
in a local worker process or on a Dask worker. Only the parent writes the database.

Steps, in order: ``segment`` (the lesion grown from the manifest's seed), ``features`` (the 31
radiomic features of the mask: a reviewed annotation, else the manifest's mask file, else the
segment step's), ``classify`` (a radiomic model bundle's probabilities from those features).
"""

from __future__ import annotations

import time
from collections import OrderedDict

from spineai.errors import SpineAIError

STEPS = ("segment", "features", "classify")
ORDINARY = (SpineAIError, OSError, RuntimeError, ValueError, MemoryError)

# Per worker process: a few volumes (manifests are usually grouped by image), parameter sets, bundles.
_volumes: "OrderedDict[str, object]" = OrderedDict()
_bundles: dict = {}


def parse_steps(text) -> list[str]:
    steps = [s.strip() for s in (text.split(",") if isinstance(text, str) else text) if s.strip()]
    unknown = [s for s in steps if s not in STEPS]
    if unknown or not steps:
        raise SpineAIError(f"unknown step(s) {', '.join(unknown) or '(none given)'}: choose from {', '.join(STEPS)}")
    return [s for s in STEPS if s in steps]  # always in pipeline order


def _volume(path: str):
    from spineai.image import read_volume

    if path not in _volumes:
        if len(_volumes) >= 4:
            _volumes.popitem(last=False)
        _volumes[path] = read_volume(path)
    _volumes.move_to_end(path)
    return _volumes[path]


def bundle(model: str):
    from spineai.models import load_bundle

    if model not in _bundles:
        _bundles[model] = load_bundle(model)
    return _bundles[model]


def run_case(task: dict) -> dict:
    """Run ``task['steps']`` for one case. A failing step is reported with its error and ends the
    case; the steps before it are kept."""
    from spineai.image import Volume
    from spineai.cohort.store import pack_mask, unpack_mask

    out = {"id": task["id"], "steps": [], "mask": None, "features": None, "prediction": None}
    mask = None
    stored = task.get("stored_mask")
    features = task.get("stored_features")
    for step in task["steps"]:
        start = time.perf_counter()
        detail: dict = {}
        try:
            image = _volume(task["image"])
            if step == "segment":
                from spineai.image import seed_to_index
                from spineai.segment import segment

                seed = seed_to_index(image, task["seed"], "ras")
                mask = segment(image, seed, mode="lesion", details=detail)
                shape, data, sha, voxels = pack_mask(mask.array)
                out["mask"] = {"source": "segment", "shape": shape, "data": data, "sha256": sha, "voxels": voxels}
                detail["seed_ijk"] = list(seed)
            elif step == "features":
                from spineai.radiomics import extract_features

                label = task["label"]
                if mask is not None or stored is not None:
                    array = mask.array if mask is not None else unpack_mask(stored["shape"], stored["data"])
                    if array.shape != image.array.shape:
                        raise SpineAIError(f"the stored mask has shape {array.shape}, the image {image.array.shape}")
                    mask_volume, label = Volume(array, image.spacing, image.origin, image.direction), 1
                elif task.get("mask"):
                    mask_volume = _volume(task["mask"])
                else:
                    raise SpineAIError("the case has a seed but no mask: add 'segment' to --steps")
                result = extract_features(image, mask_volume, label, task["params"])
                features = {"values": {k: float(v) for k, v in result.values.items()},
                            "provenance": result.provenance}
                out["features"] = {**features, "parameter_set": str(task["params"]),
                                   "parameter_sha256": task["params_sha256"]}
            elif step == "classify":
                if features is None:
                    raise SpineAIError("classify needs the features: add 'features' to --steps")
                b = bundle(task["model"])
                pred = b.predict(features["values"])
                out["prediction"] = {"model_id": b.id, "model_version": b.version, "model_sha256": b.sha256 or "",
                                     "demonstration": b.is_demonstration, "probabilities": pred.probabilities,
                                     "predicted_class": pred.predicted_class,
                                     "in_distribution": pred.ood.in_distribution, "warnings": pred.warnings}
        except Exception as exc:  # noqa: BLE001 - one case's failure, even a bug, must not stop the cohort
            message = str(exc) if isinstance(exc, SpineAIError) else f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, ORDINARY):
                message = "internal error: " + message
            out["steps"].append({"step": step, "status": "failed", "key": task["keys"][step], "error": message,
                                 "seconds": time.perf_counter() - start, "detail": detail})
            break
        out["steps"].append({"step": step, "status": "done", "key": task["keys"][step],
                             "seconds": time.perf_counter() - start, "detail": detail})
    return out
