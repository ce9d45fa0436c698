"""Radiomic features of a lesion mask: the 31 texture features the classifiers read, with provenance.

One named, versioned PyRadiomics parameter set (``spineai31-v1``, in ``spineai/resources/radiomics``;
its comments give the rationale for every setting) defines the default features; users can pass
their own PyRadiomics parameter file (YAML or JSON) instead.

Speed: PyRadiomics' ``RadiomicsFeatureExtractor`` spends most of its time on the *whole* image
(hashing it for diagnostics, a label-statistics pass, connected components, casts), not on the
texture. For segment-based features on the unfiltered image no voxel outside the ROI's bounding
box can influence a value (co-occurrences, runs, zones and neighbourhoods are all restricted to
ROI voxels, and the extractor itself crops to that box with no padding before it computes them).
So the engine crops image and mask to the box with numpy and runs PyRadiomics' own feature
classes (with their C matrix code) on the crop: the same code on the same voxels, hence the same
values (``Testing/engine/test_radiomics.py`` compares with the extractor to 1e-6). Parameter
files whose results depend on voxels outside the box (filtered image types, resampling,
normalisation, resegmentation) go through the full extractor instead.

PyRadiomics is imported inside the functions (about 0.4 s), so importing this module is cheap.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import logging
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from spineai.errors import SpineAIError
from spineai.featureset import FEATURES_31
from spineai.image import (
    Volume,
    atomic_write,
    check_output_path,
    mask_from_labelmap,
    require_not_mask,
    require_finite,
    require_same_geometry,
)

__all__ = [
    "DEFAULT_PARAMETER_SET", "ParameterSet", "FeatureResult", "parameter_sets", "load_parameters",
    "extract_features", "extract_features_reference", "write_features_csv", "read_features_csv",
]

DEFAULT_PARAMETER_SET = "spineai31-v1"
PARAMETER_SET_DIR = Path(__file__).resolve().parent / "resources" / "radiomics"
PARAMETER_FILE_SUFFIXES = (".yaml", ".yml", ".json")

# CSV layout: optional id column, the features, then provenance columns carrying this prefix so a
# model reading features can tell them apart.
ID_COLUMN = "id"
PROVENANCE_PREFIX = "prov_"

# Engine-wide floor under any parameter set's own minimumROISize: below this a texture matrix holds
# a handful of counts and the values are noise.
MIN_ROI_VOXELS = 8

# PyRadiomics' extractor defaults (RadiomicsFeatureExtractor._getDefaultSettings) that matter here.
_EXTRACTOR_DEFAULTS = {
    "minimumROIDimensions": 2,
    "minimumROISize": None,
    "normalize": False,
    "resampledPixelSpacing": None,
    "interpolator": "sitkBSpline",
    "distances": [1],
    "force2D": False,
    "resegmentRange": None,
    "label": 1,
}
_PYRADIOMICS_DEFAULT_BIN_WIDTH = 25.0


# ---- parameter sets -------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class ParameterSet:
    """A validated PyRadiomics parameter file and what it enables."""

    name: str
    path: Path
    settings: dict  # the file's `setting` block over PyRadiomics' extractor defaults
    image_types: dict  # e.g. {"Original": {}}
    feature_classes: dict  # class -> list of feature names, or None / [] for all of the class
    sha256: str
    builtin: bool = False
    raw: dict = field(default_factory=dict, repr=False)  # the parsed file, as PyRadiomics reads it

    @property
    def bin_count(self) -> int | None:
        value = self.settings.get("binCount")
        return int(value) if value is not None else None

    @property
    def bin_width(self) -> float | None:
        if self.bin_count is not None:
            return None  # PyRadiomics ignores binWidth when binCount is set
        return float(self.settings.get("binWidth", _PYRADIOMICS_DEFAULT_BIN_WIDTH))

    @property
    def resampling(self) -> list[float] | None:
        spacing = self.settings.get("resampledPixelSpacing")
        return [float(s) for s in spacing] if spacing else None

    @property
    def crop_exact(self) -> bool:
        """Whether features depend only on the ROI's bounding box (then the fast cropped path is exact)."""
        s = self.settings
        return (
            set(self.image_types) == {"Original"}
            and not self.image_types.get("Original")  # no per-image-type overrides
            and not self.resampling
            and not s.get("normalize", False)
            and s.get("resegmentRange") is None
            and "shape2D" not in self.feature_classes
        )


def parameter_sets() -> dict[str, Path]:
    """The named parameter sets shipped with SpineAI: name -> file."""
    if not PARAMETER_SET_DIR.is_dir():
        return {}
    return {
        p.stem: p
        for p in sorted(PARAMETER_SET_DIR.iterdir())
        if p.is_file() and p.suffix.lower() in PARAMETER_FILE_SUFFIXES
    }


_PARAMETER_CACHE: dict[tuple[str, str], ParameterSet] = {}


def load_parameters(params: str | os.PathLike = DEFAULT_PARAMETER_SET) -> ParameterSet:
    """A named set (see :func:`parameter_sets`) or a user's PyRadiomics YAML / JSON parameter file."""
    if isinstance(params, ParameterSet):
        return params
    known = parameter_sets()
    if isinstance(params, str) and params in known:
        path, name, builtin = known[params], params, True
    elif isinstance(params, (str, os.PathLike)):
        text = os.fspath(params)
        looks_like_file = (
            not isinstance(params, str)
            or Path(text).suffix.lower() in PARAMETER_FILE_SUFFIXES
            or os.sep in text
            or "/" in text
            or Path(text).exists()
        )
        if not looks_like_file:
            raise SpineAIError(
                f"unknown radiomics parameter set {text!r}; the named sets are: {', '.join(known) or 'none'} "
                "(or pass a PyRadiomics parameter file, .yaml / .yml / .json)"
            )
        path, builtin = Path(text), False
        name = path.stem
        if not path.exists():
            raise SpineAIError(f"the radiomics parameter file {path} does not exist")
        if not path.is_file():
            raise SpineAIError(f"the radiomics parameter file {path} is not a file")
    else:
        raise SpineAIError(
            f"radiomics parameters must be a set name or a file path, got {type(params).__name__}"
        )
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SpineAIError(f"cannot read the radiomics parameter file {path} ({exc.strerror or exc})") from None
    sha256 = hashlib.sha256(data).hexdigest()
    key = (str(path.resolve()), sha256)
    if key not in _PARAMETER_CACHE:
        raw = _parse_parameter_file(path, data)
        if not builtin:  # the shipped sets pass it (a test checks each); it costs ~18 ms a process
            _validate_with_pyradiomics_schema(path, raw)
        settings = dict(_EXTRACTOR_DEFAULTS)
        settings.update(raw.get("setting") or {})
        _PARAMETER_CACHE[key] = ParameterSet(
            name=name,
            path=path,
            settings=settings,
            image_types=dict(raw.get("imageType") or {"Original": {}}),
            feature_classes=dict(raw.get("featureClass") or {}),
            sha256=sha256,
            builtin=builtin,
            raw=raw,
        )
    return _PARAMETER_CACHE[key]


def _parse_parameter_file(path: Path, data: bytes) -> dict:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SpineAIError(f"the radiomics parameter file {path} is not a UTF-8 text file") from None
    try:
        if path.suffix.lower() == ".json":
            raw = json.loads(text)
        else:
            # ruamel.yaml comes with PyRadiomics (through pykwalify, which validates its files).
            from ruamel.yaml import YAML

            raw = YAML(typ="safe", pure=True).load(text)
    except Exception as exc:  # noqa: BLE001  the parsers raise many types; all mean "not valid YAML/JSON"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        kind = "JSON" if path.suffix.lower() == ".json" else "YAML"
        raise SpineAIError(f"cannot parse the radiomics parameter file {path} as {kind}: {first}") from None
    if not isinstance(raw, dict):
        raise SpineAIError(
            f"the radiomics parameter file {path} must hold a mapping with imageType / featureClass / setting "
            f"blocks, got {type(raw).__name__}"
        )
    return raw


def _validate_with_pyradiomics_schema(path: Path, raw: dict) -> None:
    """PyRadiomics' own schema check (the one its extractor runs), with its message made ours."""
    import pykwalify.core
    from radiomics import getParameterValidationFiles

    schema_file, schema_funcs = getParameterValidationFiles()
    log = logging.getLogger("pykwalify")
    old_level, log.level = log.level, logging.CRITICAL  # pykwalify logs each error; we raise them
    try:
        with warnings.catch_warnings():  # pykwalify loads the schema functions with a deprecated importer
            warnings.simplefilter("ignore", DeprecationWarning)
            pykwalify.core.Core(source_data=raw, schema_files=[schema_file], extensions=[schema_funcs]).validate()
    except Exception as exc:  # noqa: BLE001  pykwalify SchemaError and the schema functions' errors
        msg = getattr(exc, "msg", None) or str(exc)
        msg = " ".join(line.strip(" -") for line in str(msg).splitlines() if line.strip(" -"))
        raise SpineAIError(f"invalid PyRadiomics parameter file {path}: {msg}") from None
    finally:
        log.level = old_level


# ---- extraction -----------------------------------------------------------------------------

@dataclass
class FeatureResult:
    """Feature values in their fixed order, and what is needed to reproduce them."""

    values: dict[str, float]
    provenance: dict[str, object]


@contextlib.contextmanager
def _quiet_pyradiomics():
    # PyRadiomics warns about fixed bin count on every extractor (a documented choice here) and
    # logs feature failures itself; failures surface as SpineAIError instead.
    log = logging.getLogger("radiomics")
    old = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        log.setLevel(old)


def _validated_roi(image: Volume, mask: Volume, label: int, ps: ParameterSet):
    """Checks every input; returns the boolean ROI within its bounding box, and the box as slices [k, j, i]."""
    if not isinstance(image, Volume):
        raise SpineAIError(f"the image must be a spineai.image.Volume, got {type(image).__name__}")
    if not isinstance(mask, Volume):
        raise SpineAIError(f"the mask must be a spineai.image.Volume, got {type(mask).__name__}")
    if isinstance(label, bool) or not isinstance(label, (int, np.integer)) or label <= 0:
        raise SpineAIError(f"the mask label must be a positive integer, got {label!r}")
    if image.array.dtype == bool or not np.issubdtype(image.array.dtype, np.number):
        raise SpineAIError(f"the image must hold numbers, got voxels of type {image.array.dtype}")
    require_same_geometry(image, mask, "image", "mask")
    require_finite(image, "image")
    require_not_mask(image)
    box = _label_box(mask.array, int(label))
    if box is None:
        if not mask.array.any():
            raise SpineAIError("the mask is empty: no voxel is non-zero, so there is no region to describe")
        mask_from_labelmap(mask, int(label), what="mask")  # raises, naming the labels there are
        raise SpineAIError(f"label {label} is absent from the mask")
    if np.issubdtype(mask.array.dtype, np.floating):
        mask_from_labelmap(mask, int(label), what="mask")  # refuses fractional values, naming the rule
    roi = mask.array[box] == label
    extent_kji = [s.stop - s.start for s in box]
    n_voxels = int(np.count_nonzero(roi))

    min_voxels = max(MIN_ROI_VOXELS, int(ps.settings.get("minimumROISize") or 0))
    if n_voxels < min_voxels:
        raise SpineAIError(
            f"the mask's label {label} covers {n_voxels} voxel(s): too small for texture features, which need at "
            f"least {min_voxels} voxels with parameter set {ps.name!r}"
        )
    min_dims = int(ps.settings.get("minimumROIDimensions") or 1)
    if sum(e > 1 for e in extent_kji) < min_dims:
        ei, ej, ek = extent_kji[::-1]
        raise SpineAIError(
            f"the mask's label {label} spans {ei} x {ej} x {ek} voxels (i x j x k): parameter set {ps.name!r} "
            f"needs more than one voxel along at least {min_dims} axes"
            + (" (a single-slice region has no 3D texture)" if min_dims == 3 else "")
        )
    return roi, box, n_voxels


def _label_box(labels: np.ndarray, label: int):
    """Bounding box (slices [k, j, i]) of ``labels == label``, or None when no voxel has it.

    Work scales with the region, not the image: the k slabs, then the j rows within them, that hold
    any non-zero voxel are found by reading the array once (as 64-bit words where rows allow), and
    only there is the label compared; a 2 cm lesion in a 42 M-voxel image then costs what it does
    in a small one.
    """
    if labels.dtype.kind not in "biu" or not labels.flags.c_contiguous:
        if np.issubdtype(labels.dtype, np.floating) and not np.isfinite(labels).all():
            return None  # the caller's mask_from_labelmap names the problem
        return _box_of(labels == label)
    nk, nj, _ = labels.shape
    ks = np.flatnonzero(_rows_nonzero(labels.reshape(nk, -1)))
    if not ks.size:
        return None
    slab = labels[ks[0]:ks[-1] + 1]
    js = np.flatnonzero(_rows_nonzero(slab.reshape(len(slab) * nj, -1)).reshape(len(slab), nj).any(axis=0))
    k0, j0 = int(ks[0]), int(js[0])
    box = _box_of(slab[:, j0:int(js[-1]) + 1] == label)
    if box is None:
        return None
    return (slice(box[0].start + k0, box[0].stop + k0), slice(box[1].start + j0, box[1].stop + j0), box[2])


def _rows_nonzero(rows: np.ndarray) -> np.ndarray:
    """Whether each row of a C-contiguous 2D integer array holds a non-zero value."""
    if rows.shape[1] * rows.itemsize % 8 == 0:
        rows = rows.view(np.uint64)
    return rows.any(axis=1)


def _box_of(found: np.ndarray):
    """Bounding box of a boolean array's True voxels from per-axis projections, or None."""
    box = []
    for axis in range(3):
        idx = np.flatnonzero(found.any(axis=tuple(a for a in range(3) if a != axis)))
        if not idx.size:
            return None
        box.append(slice(int(idx[0]), int(idx[-1]) + 1))
    return tuple(box)


def _cropped_sitk(volume: Volume, array: np.ndarray, box) -> "object":
    """A SimpleITK image of ``array`` (already cropped to ``box``) placed where the box lies."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(array)
    image.SetSpacing(volume.spacing)
    image.SetDirection(tuple(volume.direction.ravel()))
    start_ijk = np.array([box[2].start, box[1].start, box[0].start], float)
    origin = np.asarray(volume.origin) + volume.direction @ (np.asarray(volume.spacing) * start_ijk)
    image.SetOrigin(tuple(float(v) for v in origin))
    return image


def _features_on_crop(image_crop, mask_crop, ps: ParameterSet) -> dict[str, float]:
    """PyRadiomics' feature classes on the cropped image, in the order its extractor reports them."""
    from radiomics import getFeatureClasses

    classes = getFeatureClasses()
    kwargs = dict(ps.settings)
    kwargs["label"] = 1
    out: dict[str, float] = {}
    # The extractor computes shape first (computeShape), then the other classes in file order.
    ordered = [c for c in ps.feature_classes if c == "shape"] + [
        c for c in ps.feature_classes if not c.startswith("shape")
    ]
    if not ps.feature_classes:  # an empty featureClass block enables every class (not shape2D)
        ordered = ["shape"] + [c for c in classes if not c.startswith("shape")]
    for class_name in ordered:
        feature_class = classes[class_name](image_crop, mask_crop, **kwargs)
        for feature in ps.feature_classes.get(class_name) or []:
            feature_class.enableFeatureByName(feature)
        for feature, value in feature_class.execute().items():
            out[f"{class_name}_{feature}"] = value
    return out


def _features_with_extractor(image: Volume, roi: np.ndarray, box, ps: ParameterSet) -> dict[str, float]:
    """PyRadiomics' own extractor on the whole image (the reference; also the path for filters etc.).

    ``roi`` is the region within its bounding box ``box``."""
    from radiomics.featureextractor import RadiomicsFeatureExtractor

    with warnings.catch_warnings():  # its pykwalify check loads schema functions with a deprecated importer
        warnings.simplefilter("ignore", DeprecationWarning)
        extractor = RadiomicsFeatureExtractor(dict(ps.raw))
    extractor.settings["additionalInfo"] = False
    extractor.settings["label"] = 1
    sitk_image = image.to_sitk()
    full = np.zeros(image.array.shape, np.uint8)
    full[box] = roi
    sitk_mask = image.with_array(full).to_sitk()
    result = extractor.execute(sitk_image, sitk_mask, label=1)
    out = {}
    for key, value in result.items():
        if key.startswith("diagnostics_"):
            continue
        out[key[len("original_"):] if key.startswith("original_") else key] = value
    return out


def _finite_values(raw: dict, ps: ParameterSet) -> dict[str, float]:
    values: dict[str, float] = {}
    bad = []
    for name, value in raw.items():
        try:
            v = float(np.asarray(value).item())
        except (TypeError, ValueError):
            v = math.nan
        if not math.isfinite(v):
            bad.append(name)
        values[name] = v
    if bad:
        raise SpineAIError(
            f"PyRadiomics could not compute {', '.join(bad)} on this region with parameter set {ps.name!r} "
            "(non-finite value): check that the mask covers the lesion"
        )
    return values


def _provenance(image: Volume, label: int, n_voxels: int, box, ps: ParameterSet, method: str) -> dict:
    import radiomics

    import spineai

    return {
        "spineai_version": spineai.__version__,
        "pyradiomics_version": str(radiomics.__version__),
        "parameter_set": ps.name,
        "parameter_set_sha256": ps.sha256,
        "parameter_file": ps.path.name if ps.builtin else str(ps.path),
        "image_types": ";".join(ps.image_types),
        "bin_count": ps.bin_count,
        "bin_width": ps.bin_width,
        "resampling": ps.resampling if ps.resampling else "none",
        "distances": [int(d) for d in ps.settings.get("distances") or [1]],
        "label": int(label),
        "voxel_count": int(n_voxels),
        "roi_volume_mm3": round(n_voxels * float(np.prod(image.spacing)), 6),
        "roi_bbox_ijk": [box[2].start, box[2].stop - 1, box[1].start, box[1].stop - 1, box[0].start, box[0].stop - 1],
        "image_spacing": [round(s, 6) for s in image.spacing],
        "image_size": list(image.size_ijk),
        "computation": method,
    }


def extract_features(
    image: Volume,
    mask: Volume,
    label: int = 1,
    params: str | os.PathLike = DEFAULT_PARAMETER_SET,
) -> FeatureResult:
    """Radiomic features of the voxels of ``mask == label`` in ``image``.

    With the default set, ``values`` holds exactly ``spineai.featureset.FEATURES_31`` in that order.
    With a user's parameter file, the features it enables, named ``<class>_<feature>`` (filtered
    image types keep PyRadiomics' prefix, e.g. ``wavelet-LLH_glcm_Id``). The ``label`` argument
    decides the region; a ``label`` setting in the parameter file is not used.
    """
    ps = load_parameters(params)
    roi, box, n_voxels = _validated_roi(image, mask, label, ps)
    try:
        with _quiet_pyradiomics():
            if ps.crop_exact:
                image_crop = _cropped_sitk(image, np.ascontiguousarray(image.array[box]), box)
                mask_crop = _cropped_sitk(image, roi.astype(np.uint8), box)
                raw = _features_on_crop(image_crop, mask_crop, ps)
                method = "pyradiomics feature classes on the ROI bounding box"
            else:
                raw = _features_with_extractor(image, roi, box, ps)
                method = "pyradiomics RadiomicsFeatureExtractor on the whole image"
    except SpineAIError:
        raise
    except (ValueError, RuntimeError, LookupError) as exc:
        raise SpineAIError(f"PyRadiomics failed with parameter set {ps.name!r}: {exc}") from None
    values = _finite_values(raw, ps)
    if ps.builtin and ps.name == DEFAULT_PARAMETER_SET and tuple(values) != FEATURES_31:
        raise AssertionError(f"{ps.name} yields {list(values)}, not FEATURES_31")  # a bug, not user input
    return FeatureResult(values=values, provenance=_provenance(image, label, n_voxels, box, ps, method))


def extract_features_reference(
    image: Volume,
    mask: Volume,
    label: int = 1,
    params: str | os.PathLike = DEFAULT_PARAMETER_SET,
) -> dict[str, float]:
    """The same features from PyRadiomics' own ``RadiomicsFeatureExtractor`` on the whole image.

    Slower; the baseline that :func:`extract_features` is tested and benchmarked against.
    """
    ps = load_parameters(params)
    roi, box, _ = _validated_roi(image, mask, label, ps)
    with _quiet_pyradiomics():
        return _finite_values(_features_with_extractor(image, roi, box, ps), ps)


# ---- CSV ------------------------------------------------------------------------------------

def _cell(value) -> str:
    """Provenance cell: strings as they are, everything else as JSON (so lists read back)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (np.generic,)):
        value = value.item()
    return json.dumps(value)


def write_features_csv(
    results: Sequence[FeatureResult],
    path: str | os.PathLike,
    overwrite: bool = False,
    ids: Sequence[str] | None = None,
) -> Path:
    """One row per result: [id,] the features in order, then ``prov_...`` provenance columns.

    Refuses an existing ``path`` unless ``overwrite``; writes through a temporary file so a failure
    never leaves a partial CSV.
    """
    if isinstance(results, FeatureResult):
        results = [results]
    results = list(results)
    if not results:
        raise SpineAIError("no feature results to write")
    for r in results:
        if not isinstance(r, FeatureResult):
            raise SpineAIError(f"expected FeatureResult objects, got {type(r).__name__}")
    names = list(results[0].values)
    for n, r in enumerate(results[1:], start=2):
        if list(r.values) != names:
            raise SpineAIError(
                f"result {n} has different features from result 1 (another parameter set?): "
                "write them to separate CSV files"
            )
    if ids is not None:
        ids = [str(i) for i in ids]
        if len(ids) != len(results):
            raise SpineAIError(f"got {len(ids)} id(s) for {len(results)} result(s)")
    prov_keys: list[str] = []
    for r in results:
        prov_keys += [k for k in r.provenance if k not in prov_keys]
    header = ([ID_COLUMN] if ids is not None else []) + names + [PROVENANCE_PREFIX + k for k in prov_keys]

    path = check_output_path(path, overwrite)

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(header)
            for n, r in enumerate(results):
                row = [ids[n]] if ids is not None else []
                for name in names:
                    try:
                        value = float(r.values[name])
                    except (TypeError, ValueError):
                        raise SpineAIError(
                            f"feature {name} of result {n + 1} is not a number: {r.values[name]!r}"
                        ) from None
                    row.append(repr(value))  # repr: shortest text that reads back to the same float
                row += [_cell(r.provenance.get(k)) for k in prov_keys]
                writer.writerow(row)

    atomic_write(path, write, suffix=".csv", overwrite=overwrite)
    return path


def read_features_csv(path: str | os.PathLike) -> list[dict]:
    """Rows of a features CSV as flat dicts: ``id`` (str), features (float), ``prov_...`` (decoded)."""
    path = Path(path)
    if not path.is_file():
        raise SpineAIError(f"no such features CSV: {path}")
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames:
            raise SpineAIError(f"{path} is empty: expected a header row of feature names")
        rows = []
        for line, record in enumerate(reader, start=2):
            row: dict[str, object] = {}
            for key, text in record.items():
                if key == ID_COLUMN:
                    row[key] = text
                elif key.startswith(PROVENANCE_PREFIX):
                    if key.endswith(("sha256", "version")):  # hex digests and versions stay text
                        row[key] = text
                        continue
                    try:
                        row[key] = json.loads(text) if text else None
                    except json.JSONDecodeError:
                        row[key] = text
                else:
                    try:
                        row[key] = float(text)
                    except (TypeError, ValueError):
                        raise SpineAIError(f"{path} line {line}: feature {key} is not a number: {text!r}") from None
            rows.append(row)
    return rows
