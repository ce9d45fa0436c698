"""What a worker does for one case: plain dict in, plain dict out, so the same function runs inline,
in a local worker process or on a Dask worker. Only the parent writes the database.

Steps, in order: ``segment`` (the lesion grown from the manifest's seed), ``features`` (the 31
radiomic features of the mask: a reviewed annotation, else the manifest's mask file, else the
segment step's), ``classify`` (a radiomic model bundle's probabilities from those features),
``classify-image`` (the lesion image model's probabilities, on a crop centred on that mask, or on the
seed when the case has no mask).
"""

from __future__ import annotations

import time
from collections import OrderedDict

from spineai.errors import SpineAIError

STEPS = ("segment", "features", "classify", "classify-image")
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
    from spineai.cohort.store import pack_mask

    out = {"id": task["id"], "steps": [], "mask": None, "features": None, "predictions": {}}
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

                mask_volume, label = _case_mask(task, image, mask, stored)
                if mask_volume is None:
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
                out["predictions"][step] = {"model_id": b.id, "model_version": b.version, "model_sha256": b.sha256 or "",
                                     "demonstration": b.is_demonstration, "probabilities": pred.probabilities,
                                     "predicted_class": pred.predicted_class,
                                     "in_distribution": pred.ood.in_distribution, "warnings": pred.warnings}
            elif step == "classify-image":
                out["predictions"][step] = _classify_image(task, image, *_case_mask(task, image, mask, stored))
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


def _case_mask(task: dict, image, mask, stored):
    """``(mask volume, label value)`` of a case: this run's segment step, else the stored mask (a
    reviewed annotation or an earlier segment step), else the manifest's mask file; ``(None, None)``
    when it has none."""
    from spineai.cohort.store import unpack_mask
    from spineai.image import Volume

    if mask is not None or stored is not None:
        array = mask.array if mask is not None else unpack_mask(stored["shape"], stored["data"])
        if array.shape != image.array.shape:
            raise SpineAIError(f"the stored mask has shape {array.shape}, the image {image.array.shape}")
        return Volume(array, image.spacing, image.origin, image.direction), 1
    if task.get("mask"):
        return _volume(task["mask"]), task["label"]
    return None, None


def _classify_image(task: dict, image, mask_volume, label) -> dict:
    """The lesion image model on a crop centred on the case's lesion (its mask, else its seed)."""
    import numpy as np

    from spineai.imaging.lesion import classify_lesion, load_image_model

    if mask_volume is not None:
        lesion = (np.asarray(mask_volume.array) == label).astype(np.uint8)
        r = classify_lesion(image, mask=mask_volume.with_array(lesion), model=task["image_model"])
    elif task.get("seed"):
        r = classify_lesion(image, seed=task["seed"], model=task["image_model"])
    else:
        raise SpineAIError("classify-image needs the lesion: a mask, a seed or the segment step")
    b = load_image_model(task["image_model"])  # loaded once per process, by classify_lesion
    card = b.card
    return {"model_id": card.get("id", ""), "model_version": card.get("version", ""), "model_sha256": b.sha256 or "",
            "demonstration": r.demonstration, "probabilities": r.probabilities, "predicted_class": r.predicted,
            "in_distribution": None, "warnings": [r.notice] if r.notice else []}
