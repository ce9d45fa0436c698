"""Annotating a cohort from SpineAIRadiomics on a real MRML scene: open the database, step to the
next case, load it as nodes, save the reviewed segmentation and label back."""

from __future__ import annotations

import numpy as np
import pytest

from spineai.cli import main
from spineai.cohort import CohortDB
from spineai.cohort.synthetic import write_synthetic_cohort
from spineai.errors import SpineAIError

from SpineAICommon import mrml
from SpineAIRadiomicsLib.cohort import CohortAnnotationLogic


@pytest.fixture(scope="module")
def cohort_db(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cohort")
    manifest = write_synthetic_cohort(folder, 3, seed=4)
    db = folder / "r.sqlite"
    assert main(["cohort", str(manifest), "--steps", "segment,features", "--db", str(db), "--workers", "1"]) == 0
    return db


def test_open_step_load_edit_and_save_back(scene, cohort_db, tmp_path):
    import shutil

    db = tmp_path / "r.sqlite"
    shutil.copy(cohort_db, db)
    logic = CohortAnnotationLogic(scene)
    with pytest.raises(SpineAIError, match="open a cohort database first"):
        logic.nextCase()
    assert logic.openCohort(db) == {"to do": 1, "segmented": 2, "reviewed": 0}
    assert logic.nextCase() == "case000"
    volume_node, segmentation, points = logic.loadCase("case000")
    with CohortDB(db) as d:
        grown = d.mask("case000")
    assert np.array_equal(mrml.volume_from_node(volume_node).array, logic.volume.array)
    (segment_id,) = mrml.segment_ids(segmentation)
    assert np.array_equal(mrml.mask_from_segment(segmentation, segment_id, logic.volume), grown)
    assert points.GetNumberOfControlPoints() == 1
    # the reviewer trims the segmentation's first slice and sets the label
    edited = grown.copy()
    edited[np.flatnonzero(edited.any((1, 2)))[0]] = 0
    segmentation.GetSegmentation().RemoveSegment(segment_id)
    mrml.add_mask_segment(segmentation, edited, logic.volume, "lesion")
    with pytest.raises(SpineAIError, match="needs the reviewer's name"):
        logic.saveCase(segmentation, "SD", "")
    logic.saveCase(segmentation, "SD", "Dr Reviewer")
    assert logic.caseInfo() == {"case_id": "case000", "patient_id": "P000", "annotation_status": "reviewed",
                                "reviewer": "Dr Reviewer", "annotation_label": "SD", "outcome": "SD"}
    assert logic.nextCase() == "case001"
    # a case with a mask file loads that mask; saving only a label keeps its mask
    _, seg1, _ = logic.loadCase("case001")
    assert mrml.mask_from_segment(seg1, mrml.segment_ids(seg1)[0], logic.volume).any()
    logic.saveCase(None, "MET", "Dr Reviewer", status="segmented")
    logic.close()
    with CohortDB(db) as d:
        assert np.array_equal(d.mask("case000"), edited)
        assert d.mask("case001") is None and d.case_row("case001")["annotation_label"] == "MET"
        assert d.annotation_counts() == {"to do": 0, "segmented": 2, "reviewed": 1}
    with pytest.raises(SpineAIError, match="no cohort database at"):
        logic.openCohort(tmp_path / "none.sqlite")
