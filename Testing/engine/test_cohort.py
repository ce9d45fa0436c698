"""Cohort feature extraction from a manifest."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from spineai.cli import main
from spineai.cohort import extract_cohort, read_manifest
from spineai.errors import SpineAIError
from spineai.featureset import FEATURES_31
from spineai.image import write_volume
from spineai.phantom import LABELS
from spineai.radiomics import extract_features


@pytest.fixture
def cohort_dir(tmp_path, phantom):
    write_volume(phantom.image, tmp_path / "img.nii.gz")
    write_volume(phantom.lesion_mask, tmp_path / "lesion.nii.gz")
    write_volume(phantom.labels, tmp_path / "labels.nii.gz")
    rows = [("lesion", "img.nii.gz", "lesion.nii.gz", ""), ("L1", "img.nii.gz", "labels.nii.gz", LABELS["L1"]),
            ("L5", "img.nii.gz", "labels.nii.gz", LABELS["L5"])]
    with (tmp_path / "cases.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "image", "mask", "label"])
        writer.writerows(rows)
    return tmp_path


def test_cohort_matches_single_extraction(cohort_dir, phantom):
    cases = read_manifest(cohort_dir / "cases.csv")
    assert [c.label for c in cases] == [1, LABELS["L1"], LABELS["L5"]]
    results, ids, failures = extract_cohort(cases)
    assert ids == ["lesion", "L1", "L5"] and not failures
    single = extract_features(phantom.image, phantom.lesion_mask)
    assert list(results[0].values) == list(FEATURES_31)
    np.testing.assert_allclose(list(results[0].values.values()), list(single.values.values()), rtol=1e-12)


def test_cohort_failures_stop_or_skip(cohort_dir, capsys):
    with (cohort_dir / "cases.csv").open("a") as fh:
        fh.write("ghost,img.nii.gz,labels.nii.gz,99\n")
    with pytest.raises(SpineAIError, match="case ghost: label 99 is absent"):
        extract_cohort(read_manifest(cohort_dir / "cases.csv"))
    out = cohort_dir / "features.csv"
    assert main(["cohort", str(cohort_dir / "cases.csv"), "--out", str(out)]) == 2
    assert not out.exists()
    assert main(["cohort", str(cohort_dir / "cases.csv"), "--skip-failures", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "skipped ghost: label 99 is absent" in captured.err
    assert [r["id"] for r in csv.DictReader(out.open())] == ["lesion", "L1", "L5"]


def test_manifest_errors(tmp_path):
    bad = tmp_path / "m.csv"
    bad.write_text("id,image\na,b.nii.gz\n")
    with pytest.raises(SpineAIError, match="lacks column\\(s\\) mask"):
        read_manifest(bad)
    bad.write_text("id,image,mask\na,x.nii.gz,y.nii.gz\na,x.nii.gz,z.nii.gz\n")
    with pytest.raises(SpineAIError, match="line 3: the id 'a' appears twice"):
        read_manifest(bad)
    bad.write_text("id,image,mask,label\na,x.nii.gz,y.nii.gz,two\n")
    with pytest.raises(SpineAIError, match="label must be an integer, got 'two'"):
        read_manifest(bad)
