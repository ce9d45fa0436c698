"""IBSI chapter 1 digital phantom: the engine's 31 features (plus first-order mean and voxel volume)
against the IBSI consensus reference values.

The phantom is 5x4x4 voxels of 2 mm with grey levels 1, 3, 4, 6 in the 74-voxel ROI; IBSI computes
its reference values without discretisation, which ``ibsi1-phantom-v1`` reproduces with binWidth 1
(PyRadiomics bins from 0 with floor division, so grey level g lands in bin g and the empty levels
2 and 5 stay empty, as in IBSI's Ng = 6). Aggregation: PyRadiomics computes one GLCM / GLRLM per
each of the 13 3D directions, computes the feature on each and averages them, i.e. IBSI's
"3D, averaged" rows; GLSZM zones and NGTDM neighbourhoods are 26-connected 3D, i.e. IBSI's "3D".

A feature passes when it lies within the IBSI tolerance where the table gives one, otherwise when
it agrees with the reference to the reference's 3 significant digits (at most half a unit of the
third significant digit away). Features PyRadiomics cannot match by a documented definition
difference are listed in ``EXPECTED_DEVIATIONS`` with the reason; none of the 31 needs it (see
test_kurtosis_is_a_documented_deviation for how such a case is stated and checked).
"""

from __future__ import annotations

import csv
import math

import pytest

from spineai.featureset import FEATURES_31
from spineai.image import read_volume
from spineai.radiomics import extract_features, extract_features_reference

# engine name -> (IBSI feature name, IBSI code, aggregation in reference_values.csv)
IBSI_MAP: dict[str, tuple[str, str, str]] = {
    "shape_VoxelVolume": ("Volume (voxel counting)", "YEKZ", ""),
    "firstorder_Mean": ("Mean intensity", "Q4LE", ""),
    "glcm_Id": ("Inverse difference", "IB1Z", "3D, averaged"),
    "glcm_JointEnergy": ("Angular second moment", "8ZQL", "3D, averaged"),
    "glcm_Contrast": ("Contrast", "ACUI", "3D, averaged"),
    "glcm_Correlation": ("Correlation", "NI2N", "3D, averaged"),
    "glcm_JointEntropy": ("Joint entropy", "TU9B", "3D, averaged"),
    "glcm_DifferenceAverage": ("Difference average", "TF7R", "3D, averaged"),
    "glrlm_ShortRunEmphasis": ("Short runs emphasis", "22OV", "3D, averaged"),
    "glrlm_LongRunEmphasis": ("Long runs emphasis", "W4KF", "3D, averaged"),
    "glrlm_LowGrayLevelRunEmphasis": ("Low grey level run emphasis", "V3SW", "3D, averaged"),
    "glrlm_HighGrayLevelRunEmphasis": ("High grey level run emphasis", "G3QZ", "3D, averaged"),
    "glrlm_ShortRunLowGrayLevelEmphasis": ("Short run low grey level emphasis", "HTZT", "3D, averaged"),
    "glrlm_ShortRunHighGrayLevelEmphasis": ("Short run high grey level emphasis", "GD3A", "3D, averaged"),
    "glrlm_LongRunLowGrayLevelEmphasis": ("Long run low grey level emphasis", "IVPO", "3D, averaged"),
    "glrlm_LongRunHighGrayLevelEmphasis": ("Long run high grey level emphasis", "3KUM", "3D, averaged"),
    "glrlm_GrayLevelNonUniformity": ("Grey level non-uniformity", "R5YN", "3D, averaged"),
    "glrlm_RunLengthNonUniformity": ("Run length non-uniformity", "W92Y", "3D, averaged"),
    "glrlm_RunPercentage": ("Run percentage", "9ZK5", "3D, averaged"),
    "ngtdm_Coarseness": ("Coarseness", "QCDE", "3D"),
    "ngtdm_Contrast": ("Contrast", "65HE", "3D"),
    "ngtdm_Busyness": ("Busyness", "NQ30", "3D"),
    # The reference table has no code on this row (the manual's code is 5QRC); matched by name.
    "glszm_SmallAreaEmphasis": ("Small zone emphasis", "", "3D"),
    "glszm_LargeAreaEmphasis": ("Large zone emphasis", "48P8", "3D"),
    "glszm_LowGrayLevelZoneEmphasis": ("Low grey level zone emphasis", "XMSY", "3D"),
    "glszm_HighGrayLevelZoneEmphasis": ("High grey level zone emphasis", "5GN9", "3D"),
    "glszm_SmallAreaLowGrayLevelEmphasis": ("Small zone low grey level emphasis", "5RAI", "3D"),
    "glszm_SmallAreaHighGrayLevelEmphasis": ("Small zone high grey level emphasis", "HW1V", "3D"),
    "glszm_LargeAreaLowGrayLevelEmphasis": ("Large zone low grey level emphasis", "YH51", "3D"),
    "glszm_LargeAreaHighGrayLevelEmphasis": ("Large zone high grey level emphasis", "J17V", "3D"),
    "glszm_GrayLevelNonUniformity": ("Grey level non-uniformity", "JNSA", "3D"),
    "glszm_SizeZoneNonUniformity": ("Zone size non-uniformity", "4JP3", "3D"),
    "glszm_ZonePercentage": ("Zone percentage", "P30P", "3D"),
}

# engine name -> (documented reason, function mapping our value onto IBSI's definition). Empty:
# every one of the 31 texture features, the mean and the volume match IBSI as computed.
EXPECTED_DEVIATIONS: dict[str, tuple[str, object]] = {}


def _reference_rows(path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _reference(rows, name, code, aggregation) -> tuple[float, float | None]:
    if code:
        hits = [r for r in rows if r["ibsi_code"] == code and r["aggregation"] == aggregation]
    else:
        hits = [r for r in rows if r["feature"] == name and r["aggregation"] == aggregation]
    assert len(hits) == 1, f"{name} ({code or 'no code'}, {aggregation!r}): {len(hits)} reference rows"
    assert hits[0]["feature"] == name, f"code {code} is {hits[0]['feature']!r} in the table, not {name!r}"
    tol = hits[0]["tolerance"].strip()
    return float(hits[0]["value"]), (float(tol) if tol not in ("", "—", "-") else None)


def three_digit_bound(reference: float) -> float:
    """Half a unit of the reference's third significant digit."""
    if reference == 0:
        return 5e-4
    return 0.5 * 10 ** (math.floor(math.log10(abs(reference))) - 2)


def matches(ours: float, reference: float, tolerance: float | None) -> bool:
    bound = max(tolerance or 0.0, three_digit_bound(reference))
    return abs(ours - reference) <= bound * (1 + 1e-9)


@pytest.fixture
def ibsi(shared_data):
    folder = shared_data("ibsi1-digital-phantom")
    image = read_volume(folder / "phantom.nii.gz")
    mask = read_volume(folder / "mask.nii.gz")
    rows = _reference_rows(folder / "reference_values.csv")
    result = extract_features(image, mask, params="ibsi1-phantom-v1")
    return image, mask, rows, result


def comparison_table(ibsi) -> list[tuple[str, str, float, float, float, bool]]:
    """(engine name, IBSI code, ours, reference, allowed difference, pass) for every checked feature."""
    _, _, rows, result = ibsi
    table = []
    for engine, (name, code, aggregation) in IBSI_MAP.items():
        reference, tolerance = _reference(rows, name, code, aggregation)
        ours = result.values[engine]
        if engine in EXPECTED_DEVIATIONS:
            ours = EXPECTED_DEVIATIONS[engine][1](ours)
        bound = max(tolerance or 0.0, three_digit_bound(reference))
        table.append((engine, code or "5QRC", ours, reference, bound, matches(ours, reference, tolerance)))
    return table


def test_phantom_is_as_described(ibsi):
    image, mask, _, result = ibsi
    assert image.size_ijk == (5, 4, 4) and image.spacing == (2.0, 2.0, 2.0)
    assert int((mask.array == 1).sum()) == 74 == result.provenance["voxel_count"]
    assert sorted(set(image.array[mask.array == 1].tolist())) == [1, 3, 4, 6]
    assert result.provenance["bin_width"] == 1.0 and result.provenance["bin_count"] is None


def test_map_covers_the_31_features_mean_and_volume(ibsi):
    assert set(IBSI_MAP) == set(FEATURES_31) | {"shape_VoxelVolume", "firstorder_Mean"}
    _, _, _, result = ibsi
    assert list(result.values) == ["shape_VoxelVolume", "firstorder_Mean", *FEATURES_31]


@pytest.mark.parametrize("engine", list(IBSI_MAP))
def test_feature_matches_ibsi_reference(ibsi, engine):
    row = next(r for r in comparison_table(ibsi) if r[0] == engine)
    _, code, ours, reference, bound, ok = row
    assert ok, f"{engine} ({code}): ours {ours:.6g}, IBSI {reference:g} +- {bound:g}"


def test_same_values_from_pyradiomics_extractor(ibsi):
    image, mask, _, result = ibsi
    reference = extract_features_reference(image, mask, params="ibsi1-phantom-v1")
    for name, value in result.values.items():
        assert value == pytest.approx(reference[name], rel=1e-9, abs=1e-12), name


def test_kurtosis_is_a_documented_deviation(ibsi, tmp_path):
    """The one deviation the dataset README names, stated and checked as such (not among the 31).

    PyRadiomics documents (firstorder.getKurtosisFeatureValue; FAQ "IBSI compliance") that it
    reports kurtosis, whereas IBSI (IPH6) reports excess kurtosis = kurtosis - 3.
    """
    image, mask, rows, _ = ibsi
    params = tmp_path / "kurtosis.yaml"
    params.write_text("featureClass:\n  firstorder: [Kurtosis]\nsetting:\n  binWidth: 1\n  minimumROIDimensions: 3\n")
    ours = extract_features(image, mask, params=params).values["firstorder_Kurtosis"]
    reference, tolerance = _reference(rows, "(Excess) intensity kurtosis", "IPH6", "")
    assert not matches(ours, reference, tolerance)
    assert matches(ours - 3.0, reference, tolerance)


if __name__ == "__main__":  # print the comparison table: SPINEAI_TEST_DATA=... python Testing/engine/test_ibsi.py
    import os
    from pathlib import Path

    folder = Path(os.environ.get("SPINEAI_TEST_DATA", "../shared/data")) / "ibsi1-digital-phantom"
    img, msk = read_volume(folder / "phantom.nii.gz"), read_volume(folder / "mask.nii.gz")
    data = (img, msk, _reference_rows(folder / "reference_values.csv"),
            extract_features(img, msk, params="ibsi1-phantom-v1"))
    print("| feature | IBSI code | ours | IBSI reference | allowed difference | pass |")
    print("| --- | --- | --- | --- | --- | --- |")
    for engine, code, ours, reference, bound, ok in comparison_table(data):
        print(f"| {engine} | {code} | {ours:.6g} | {reference:g} | {bound:g} | {'yes' if ok else 'NO'} |")
