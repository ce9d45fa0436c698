"""spineai.radiomics: the 31 features, their equality with PyRadiomics' own extractor, parameter
sets, provenance, the CSV, and every bad input with its message."""

from __future__ import annotations

import csv
import hashlib
import math
import re

import numpy as np
import pytest

from spineai.errors import SpineAIError
from spineai.featureset import FEATURES_31
from spineai.image import Volume
from spineai.radiomics import (
    DEFAULT_PARAMETER_SET,
    PROVENANCE_PREFIX,
    FeatureResult,
    extract_features,
    extract_features_reference,
    load_parameters,
    parameter_sets,
    read_features_csv,
    write_features_csv,
)

RTOL = 1e-6


@pytest.fixture(scope="module")
def lesion_features(phantom):
    return extract_features(phantom.image, phantom.lesion_mask)


def _assert_close(ours: dict, reference: dict):
    assert list(ours) == list(reference)
    for name, value in ours.items():
        assert value == pytest.approx(reference[name], rel=RTOL, abs=1e-12), name


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


# ---- parameter sets -------------------------------------------------------------------------

def test_named_parameter_sets_are_shipped_and_hashed():
    sets = parameter_sets()
    assert DEFAULT_PARAMETER_SET == "spineai31-v1"
    assert {"spineai31-v1", "ibsi1-phantom-v1"} <= set(sets)
    ps = load_parameters()
    assert ps.name == "spineai31-v1" and ps.builtin
    assert ps.path == sets["spineai31-v1"]
    assert ps.sha256 == hashlib.sha256(ps.path.read_bytes()).hexdigest()
    # The documented decisions: fixed bin count, native grid, 3D, distance 1, only the 31 features.
    assert ps.bin_count == 32 and ps.bin_width is None
    assert ps.resampling is None and ps.settings["force2D"] is False and ps.settings["distances"] == [1]
    assert ps.image_types == {"Original": {}}
    enabled = tuple(f"{cls}_{f}" for cls, feats in ps.feature_classes.items() for f in feats)
    assert enabled == FEATURES_31
    assert ps.crop_exact


def test_shipped_parameter_sets_pass_pyradiomics_schema():
    # load_parameters skips the schema check for the shipped sets: this is where they get it.
    from spineai.radiomics import _parse_parameter_file, _validate_with_pyradiomics_schema

    for path in parameter_sets().values():
        _validate_with_pyradiomics_schema(path, _parse_parameter_file(path, path.read_bytes()))


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.float32, bool])
def test_label_box_is_the_labels_bounding_box(dtype):
    from spineai.radiomics import _label_box

    labels = np.zeros((9, 10, 11), dtype)
    labels[2:4, 5, 1:7] = 1
    if dtype is not bool:
        labels[7, 0, 0] = 3  # another label outside the box widens the non-zero slabs, not the box
    assert _label_box(labels, 1) == (slice(2, 4), slice(5, 6), slice(1, 7))
    assert _label_box(labels, 2) is None
    assert _label_box(np.asfortranarray(labels), 1) == (slice(2, 4), slice(5, 6), slice(1, 7))


def test_same_values_in_a_larger_label_map(phantom, lesion_features):
    # The lesion and its image embedded in a volume with other labels around it: the same values.
    image, mask = phantom.image.array, phantom.lesion_mask.array
    big_image = np.pad(image, ((3, 5), (7, 2), (4, 4)), mode="reflect")
    big_mask = np.pad(mask * 2, ((3, 5), (7, 2), (4, 4)))
    big_mask[0, 0, :5] = 1
    geom = dict(spacing=phantom.image.spacing, direction=phantom.image.direction)
    result = extract_features(Volume(big_image, **geom), Volume(big_mask, **geom), label=2)
    assert result.values == lesion_features.values


def test_user_parameter_file_by_path(tmp_path):
    path = _write(tmp_path, "mine.yaml", "featureClass:\n  glcm: [Contrast]\nsetting:\n  binWidth: 10\n")
    ps = load_parameters(path)
    assert (ps.name, ps.builtin, ps.bin_width, ps.bin_count) == ("mine", False, 10.0, None)
    assert load_parameters(str(path)).sha256 == ps.sha256


# ---- the 31 features on the synthetic lesion ------------------------------------------------

def test_31_features_in_order_finite_and_deterministic(phantom, lesion_features):
    assert tuple(lesion_features.values) == FEATURES_31
    assert all(isinstance(v, float) and math.isfinite(v) for v in lesion_features.values.values())
    again = extract_features(phantom.image, phantom.lesion_mask)
    assert again.values == lesion_features.values  # bit for bit
    # Sanity of a few values: probabilities and percentages lie in (0, 1].
    for name in ("glcm_Id", "glcm_JointEnergy", "glrlm_RunPercentage", "glszm_ZonePercentage"):
        assert 0 < lesion_features.values[name] <= 1, name


def test_equal_to_pyradiomics_extractor_on_whole_image(phantom, lesion_features):
    reference = extract_features_reference(phantom.image, phantom.lesion_mask)
    _assert_close(lesion_features.values, reference)


def test_equal_to_extractor_on_another_lesion_kind():
    from spineai.phantom import make_spine_phantom

    ph = make_spine_phantom(seed=11, lesion_kind="STB", lesion_level="L2")
    ours = extract_features(ph.image, ph.lesion_mask).values
    _assert_close(ours, extract_features_reference(ph.image, ph.lesion_mask))


def test_provenance(phantom, lesion_features):
    import radiomics

    import spineai

    prov = lesion_features.provenance
    ps = load_parameters()
    assert prov["spineai_version"] == spineai.__version__
    assert prov["pyradiomics_version"] == radiomics.__version__
    assert prov["parameter_set"] == "spineai31-v1" and prov["parameter_set_sha256"] == ps.sha256
    assert prov["bin_count"] == 32 and prov["bin_width"] is None and prov["resampling"] == "none"
    assert prov["label"] == 1
    assert prov["voxel_count"] == int(phantom.lesion_mask.array.sum())
    assert prov["image_spacing"] == list(phantom.image.spacing)
    assert prov["image_size"] == list(phantom.image.size_ijk)
    i0, i1, j0, j1, k0, k1 = prov["roi_bbox_ijk"]
    kk, jj, ii = np.nonzero(phantom.lesion_mask.array)
    assert (i0, i1, j0, j1, k0, k1) == (ii.min(), ii.max(), jj.min(), jj.max(), kk.min(), kk.max())


def test_label_selects_region_in_a_label_map(phantom, lesion_features):
    labels = phantom.labels.array.copy()
    labels[phantom.lesion_mask.array > 0] = 7  # lesion as label 7 beside the anatomy labels 1..21
    result = extract_features(phantom.image, phantom.image.with_array(labels), label=7)
    assert result.values == lesion_features.values
    assert result.provenance["label"] == 7
    as_bool = phantom.image.with_array(phantom.lesion_mask.array > 0)
    assert extract_features(phantom.image, as_bool).values == lesion_features.values


def test_pyradiomics_c_extension_is_used():
    # The speed of the texture matrices comes from PyRadiomics' compiled module, not Python loops.
    import radiomics

    assert radiomics.cMatrices is not None and radiomics.cMatrices.__name__ == "radiomics._cmatrices"


def test_bin_count_makes_features_invariant_to_mr_scaling(phantom, lesion_features):
    # MR units are arbitrary: a different gain and offset must not change any texture feature.
    scaled = phantom.image.with_array(phantom.image.array.astype(np.int32) * 3 + 250)
    values = extract_features(scaled, phantom.lesion_mask).values
    for name in FEATURES_31:
        assert values[name] == pytest.approx(lesion_features.values[name], rel=1e-9), name


def test_user_file_original_image_uses_pyradiomics_names(tmp_path, phantom):
    path = _write(
        tmp_path,
        "mine.yaml",
        "imageType:\n  Original: {}\nfeatureClass:\n  shape: [VoxelVolume]\n  firstorder: [Mean, Kurtosis]\n"
        "  glcm: [Contrast]\nsetting:\n  binWidth: 25\n",
    )
    result = extract_features(phantom.image, phantom.lesion_mask, params=path)
    assert list(result.values) == ["shape_VoxelVolume", "firstorder_Mean", "firstorder_Kurtosis", "glcm_Contrast"]
    assert result.provenance["bin_width"] == 25.0 and result.provenance["bin_count"] is None
    assert result.provenance["parameter_set"] == "mine"
    _assert_close(result.values, extract_features_reference(phantom.image, phantom.lesion_mask, params=path))
    voxel_mm3 = float(np.prod(phantom.image.spacing))
    assert result.values["shape_VoxelVolume"] == pytest.approx(phantom.lesion_mask.array.sum() * voxel_mm3)


def test_user_file_enabling_every_class_matches_extractor_order_and_values(tmp_path, phantom):
    # An empty featureClass block enables every class: shape first, then the rest, as the extractor does.
    path = _write(tmp_path, "all.yaml", "setting:\n  binCount: 16\n")
    result = extract_features(phantom.image, phantom.lesion_mask, params=path)
    assert len(result.values) > 100 and next(iter(result.values)).startswith("shape_")
    _assert_close(result.values, extract_features_reference(phantom.image, phantom.lesion_mask, params=path))


def test_user_file_with_filter_keeps_prefix_and_uses_extractor(tmp_path, phantom):
    path = _write(
        tmp_path,
        "log.json",
        '{"imageType": {"Original": {}, "LoG": {"sigma": [2.0]}}, "featureClass": {"firstorder": ["Mean"]},'
        ' "setting": {"binWidth": 25}}',
    )
    result = extract_features(phantom.image, phantom.lesion_mask, params=path)
    assert list(result.values) == ["firstorder_Mean", "log-sigma-2-0-mm-3D_firstorder_Mean"]
    assert "RadiomicsFeatureExtractor" in result.provenance["computation"]
    assert not load_parameters(path).crop_exact


# ---- bad inputs -----------------------------------------------------------------------------

def _cube_mask(image: Volume, centre_kji, half=(1, 3, 3)) -> Volume:
    arr = np.zeros(image.array.shape, np.uint8)
    (k, j, i), (hk, hj, hi) = centre_kji, half
    arr[k - hk : k + hk + 1, j - hj : j + hj + 1, i - hi : i + hi + 1] = 1
    return image.with_array(arr)


def test_geometry_mismatch(phantom):
    m = phantom.lesion_mask
    shifted = Volume(m.array, m.spacing, tuple(np.add(m.origin, (5.0, 0, 0))), m.direction)
    with pytest.raises(SpineAIError, match="the mask does not have the image's geometry"):
        extract_features(phantom.image, shifted)
    cropped = Volume(m.array[:, :, :-1], m.spacing, m.origin, m.direction)
    with pytest.raises(SpineAIError, match="Resample the mask onto the image first"):
        extract_features(phantom.image, cropped)


def test_empty_mask(phantom):
    empty = phantom.image.with_array(np.zeros(phantom.image.array.shape, np.uint8))
    with pytest.raises(SpineAIError, match="the mask is empty: no voxel is non-zero"):
        extract_features(phantom.image, empty)


def test_label_absent(phantom):
    with pytest.raises(SpineAIError, match=re.escape("label 2 is absent from the mask; labels present: 1")):
        extract_features(phantom.image, phantom.lesion_mask, label=2)


@pytest.mark.parametrize("label", [0, -1, 1.5, "1", True])
def test_label_must_be_positive_integer(phantom, label):
    with pytest.raises(SpineAIError, match="the mask label must be a positive integer"):
        extract_features(phantom.image, phantom.lesion_mask, label=label)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_image(phantom, bad):
    arr = phantom.image.array.astype(np.float32)
    arr[3, 4, 5] = bad
    with pytest.raises(SpineAIError, match=re.escape("the image has 1 NaN or infinite voxel(s), the first at voxel (i, j, k) = (5, 4, 3)")):
        extract_features(phantom.image.with_array(arr), phantom.lesion_mask)


def test_not_a_volume(phantom):
    with pytest.raises(SpineAIError, match="the mask must be a spineai.image.Volume, got ndarray"):
        extract_features(phantom.image, phantom.lesion_mask.array)


def test_mask_too_small(phantom):
    k, j, i = (phantom.lesion_center_ijk[2], phantom.lesion_center_ijk[1], phantom.lesion_center_ijk[0])
    tiny = phantom.image.with_array(np.zeros(phantom.image.array.shape, np.uint8))
    tiny.array[k, j, i : i + 2] = 1
    tiny.array[k + 1, j, i : i + 3] = 1
    with pytest.raises(
        SpineAIError,
        match=re.escape("the mask's label 1 covers 5 voxel(s): too small for texture features, which need at "
                        "least 27 voxels with parameter set 'spineai31-v1'"),
    ):
        extract_features(phantom.image, tiny)


def test_single_slice_region_has_no_3d_texture(phantom):
    i, j, k = phantom.lesion_center_ijk
    flat = _cube_mask(phantom.image, (k, j, i), half=(0, 4, 4))  # 81 voxels, one slice
    with pytest.raises(
        SpineAIError,
        match=re.escape("spans 9 x 9 x 1 voxels (i x j x k): parameter set 'spineai31-v1' needs more than one "
                        "voxel along at least 3 axes (a single-slice region has no 3D texture)"),
    ):
        extract_features(phantom.image, flat)
    # Two slices are enough.
    two = _cube_mask(phantom.image, (k, j, i), half=(1, 4, 4))
    assert tuple(extract_features(phantom.image, two).values) == FEATURES_31


def test_unknown_parameter_set_lists_known_ones(phantom):
    with pytest.raises(
        SpineAIError,
        match=re.escape("unknown radiomics parameter set 'spineai99'; the named sets are: ibsi1-phantom-v1, "
                        "spineai31-v1"),
    ):
        extract_features(phantom.image, phantom.lesion_mask, params="spineai99")


def test_missing_parameter_file(tmp_path):
    with pytest.raises(SpineAIError, match="the radiomics parameter file .*nope.yaml does not exist"):
        load_parameters(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("broken.yaml", "setting: {binCount: 32\n", "cannot parse the radiomics parameter file .*broken.yaml as YAML"),
        ("broken.json", '{"setting": ', "cannot parse the radiomics parameter file .*broken.json as JSON"),
        ("list.yaml", "- binCount\n", "must hold a mapping with imageType / featureClass / setting blocks, got list"),
        ("typo.yaml", "setting:\n  binCont: 32\n", "invalid PyRadiomics parameter file .*typo.yaml: .*binCont"),
        ("neg.yaml", "setting:\n  binCount: -4\n", "invalid PyRadiomics parameter file .*neg.yaml: .*binCount"),
        ("feat.yaml", "featureClass:\n  glcm: [Contrast, Contrat]\n", "invalid PyRadiomics parameter file .*Contrat"),
        ("cls.yaml", "featureClass:\n  glcmm: []\n", "invalid PyRadiomics parameter file .*glcmm is not recognized"),
    ],
)
def test_invalid_parameter_file(tmp_path, phantom, name, text, message):
    path = _write(tmp_path, name, text)
    with pytest.raises(SpineAIError, match=message):
        extract_features(phantom.image, phantom.lesion_mask, params=path)


# ---- CSV ------------------------------------------------------------------------------------

def test_csv_round_trip(tmp_path, lesion_features):
    path = write_features_csv([lesion_features, lesion_features], tmp_path / "f.csv", ids=["a", "b"])
    with open(path, newline="") as fh:
        header = next(csv.reader(fh))
    n_prov = len(lesion_features.provenance)
    assert header[0] == "id" and tuple(header[1:32]) == FEATURES_31
    assert header[32:] == [PROVENANCE_PREFIX + k for k in lesion_features.provenance] and len(header) == 32 + n_prov
    rows = read_features_csv(path)
    assert [r["id"] for r in rows] == ["a", "b"]
    for name, value in lesion_features.values.items():
        assert rows[0][name] == value  # exact: floats are written with repr
    prov = {k[len(PROVENANCE_PREFIX):]: v for k, v in rows[1].items() if k.startswith(PROVENANCE_PREFIX)}
    assert prov == lesion_features.provenance


def test_csv_without_ids(tmp_path, lesion_features):
    path = write_features_csv([lesion_features], tmp_path / "sub" / "f.csv")
    rows = read_features_csv(path)
    assert len(rows) == 1 and "id" not in rows[0] and list(rows[0])[:31] == list(FEATURES_31)


def test_csv_refuses_existing_path_unless_overwrite(tmp_path, lesion_features):
    path = tmp_path / "f.csv"
    path.write_text("precious\n")
    with pytest.raises(SpineAIError, match="f.csv already exists; pass --overwrite"):
        write_features_csv([lesion_features], path)
    assert path.read_text() == "precious\n"
    write_features_csv([lesion_features], path, overwrite=True)
    assert read_features_csv(path)[0]["glcm_Id"] == lesion_features.values["glcm_Id"]


def test_csv_failure_leaves_no_partial_file(tmp_path, lesion_features):
    bad = FeatureResult(values=dict(lesion_features.values), provenance=dict(lesion_features.provenance))
    bad.values["glszm_ZonePercentage"] = "n/a"
    path = tmp_path / "f.csv"
    with pytest.raises(SpineAIError, match="feature glszm_ZonePercentage of result 2 is not a number: 'n/a'"):
        write_features_csv([lesion_features, bad], path)
    assert list(tmp_path.iterdir()) == []  # neither the CSV nor a temporary file
    # With overwrite, a failure keeps the old file whole.
    path.write_text("old\n")
    with pytest.raises(SpineAIError):
        write_features_csv([lesion_features, bad], path, overwrite=True)
    assert path.read_text() == "old\n" and list(tmp_path.iterdir()) == [path]


def test_csv_bad_requests(tmp_path, lesion_features):
    with pytest.raises(SpineAIError, match="no feature results to write"):
        write_features_csv([], tmp_path / "f.csv")
    with pytest.raises(SpineAIError, match=re.escape("got 1 id(s) for 2 result(s)")):
        write_features_csv([lesion_features] * 2, tmp_path / "f.csv", ids=["x"])
    other = FeatureResult(values={"glcm_Id": 0.5}, provenance={})
    with pytest.raises(SpineAIError, match="result 2 has different features from result 1"):
        write_features_csv([lesion_features, other], tmp_path / "f.csv")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(SpineAIError, match="no such features CSV"):
        read_features_csv(tmp_path / "missing.csv")
