"""SpineAIRadiomics logic end to end on a real MRML scene: volume node -> engine -> segmentation / table nodes."""

from __future__ import annotations

import csv
import sys

import numpy as np
import pytest

import slicer

from spineai.errors import SpineAIError
from spineai.featureset import FEATURES_31
from spineai.image import dice, seed_to_index

from SpineAICommon import mrml
from SpineAICommon.jobs import ProcessRunner
from SpineAIRadiomicsLib.logic import RadiomicsLogic

from scene_snapshot import scene_snapshot


@pytest.fixture
def loaded(scene):
    logic = RadiomicsLogic(scene)
    volume, points, vertebrae = logic.loadPhantom("MET", seed=5)
    return logic, volume, points, vertebrae


def test_sample_phantom_nodes(loaded, phantom_met):
    logic, volume, points, vertebrae = loaded
    assert np.array_equal(mrml.volume_from_node(volume).array, phantom_met.image.array)
    assert points.GetNumberOfControlPoints() == 1
    assert vertebrae.GetSegmentation().GetNumberOfSegments() == 5


def test_click_segments_the_lesion_at_that_point(loaded, phantom_met):
    logic, volume, points, vertebrae = loaded
    before = scene_snapshot(logic.scene)
    segmentation = logic.segment(volume, points, "lesion", boundingNode=vertebrae)
    (segment_id,) = mrml.segment_ids(segmentation)
    mask = mrml.mask_from_segment(segmentation, segment_id, phantom_met.image)
    clicked = seed_to_index(phantom_met.image, phantom_met.lesion_center_ras, "ras")
    i, j, k = clicked
    assert mask[k, j, i] == 1  # the segment holds the clicked voxel
    assert dice(mask, phantom_met.lesion_mask.array) > 0.6  # and it is that lesion
    # Inputs untouched: every node that existed is still there, same name, not modified.
    after = scene_snapshot(logic.scene)
    assert {k: v for k, v in after.items() if k in before} == before
    assert segmentation.GetID() not in before
    assert segmentation.GetSegmentation().GetSegment(segment_id).GetName() == "MET lesion L3"
    # A closed surface too, so the 3D view shows the lesion.
    assert segmentation.GetSegmentation().ContainsRepresentation("Closed surface")
    surface = segmentation.GetClosedSurfaceInternalRepresentation(segment_id)
    assert surface is not None and surface.GetNumberOfPoints() > 100


def test_bounding_segments_are_not_resampled_on_the_interface_thread(loaded, monkeypatch):
    logic, volume, points, vertebrae = loaded

    class NoResampling:
        @staticmethod
        def ResampleOrientedImageToReferenceOrientedImage(*args):
            raise AssertionError("resampled in the interface's thread")

    monkeypatch.setattr(slicer, "vtkOrientedImageDataResample", NoResampling)
    op = logic.startSegmentation(volume, points, "lesion", boundingNode=vertebrae)
    monkeypatch.undo()
    assert len(op.job.status.log) == 0 and op.poll().succeeded, op.poll().error
    node = logic.finish(op)
    assert len(mrml.segment_ids(node)) == 1


def test_several_points_give_several_segments_and_rows(loaded, phantom_met):
    from spineai.phantom import LABELS

    logic, volume, points, vertebrae = loaded
    # A second point in the middle of L1 (no lesion there), segmented as a vertebral body.
    body = np.argwhere(phantom_met.labels.array == LABELS["L1"])
    k, j, i = np.round(body.mean(axis=0)).astype(int)
    points.AddControlPoint(*phantom_met.image.ijk_to_ras((i, j, k)), "L1 body")
    segmentation = logic.segment(volume, points, "vertebral-body", boundingNode=vertebrae)
    ids = mrml.segment_ids(segmentation)
    names = [segmentation.GetSegmentation().GetSegment(s).GetName() for s in ids]
    assert names == ["MET lesion L3", "L1 body"]
    l1 = mrml.mask_from_segment(segmentation, ids[1], phantom_met.image)
    assert dice(l1, phantom_met.labels.array == LABELS["L1"]) > 0.7
    table = logic.extract(volume, segmentation)
    columns, rows = mrml.table_rows(table)
    assert [r["id"] for r in rows] == names
    assert columns[1:32] == list(FEATURES_31)
    assert "prov_parameter_set" in columns and rows[0]["prov_parameter_set"] == "spineai31-v1"


def test_table_values_are_the_engines(loaded, phantom_met):
    from spineai.radiomics import extract_features

    logic, volume, points, vertebrae = loaded
    segmentation = mrml.new_segmentation_node(logic.scene, "drawn", volume)
    mrml.add_mask_segment(segmentation, phantom_met.lesion_mask.array, phantom_met.image, "drawn lesion")
    table = logic.extract(volume, segmentation)
    _, (row,) = mrml.table_rows(table)
    expected = extract_features(phantom_met.image, phantom_met.lesion_mask).values
    assert row["id"] == "drawn lesion"
    for name in FEATURES_31:
        assert row[name] == pytest.approx(expected[name], rel=1e-12, abs=0)


def test_csv_export_is_the_engine_format_and_refuses_overwrite(loaded, phantom_met, tmp_path):
    from spineai.radiomics import read_features_csv

    logic, volume, points, vertebrae = loaded
    segmentation = logic.segment(volume, points)
    table = logic.extract(volume, segmentation)
    path = logic.exportTableToCsv(table, tmp_path / "features.csv")
    with open(path, newline="") as fh:
        header = next(csv.reader(fh))
    assert header[0] == "id" and header[1:32] == list(FEATURES_31)
    (row,) = read_features_csv(path)
    _, (table_row,) = mrml.table_rows(table)
    assert row["id"] == "MET lesion L3"
    assert all(row[n] == table_row[n] for n in FEATURES_31)
    assert row["prov_voxel_count"] == int(table_row["prov_voxel_count"])
    with pytest.raises(SpineAIError, match="already exists"):
        logic.exportTableToCsv(table, path)


def test_name_clash_gives_new_nodes(loaded):
    logic, volume, points, vertebrae = loaded
    first = logic.segment(volume, points)
    second = logic.segment(volume, points)
    assert first.GetID() != second.GetID() and first.GetName() != second.GetName()
    assert len(mrml.segment_ids(first)) == 1  # the first result was not touched


def test_background_process_runs_and_reports_progress(loaded):
    logic, volume, points, vertebrae = loaded
    logic.runner = ProcessRunner(python=sys.executable)
    op = logic.startSegmentation(volume, points)
    status = op.job.wait(timeout=120)
    assert status.succeeded, status.error
    assert (status.done, status.total) == (1, 1)
    node = logic.finish(op)
    assert len(mrml.segment_ids(node)) == 1
    assert not op.job.folder.exists()  # temporary files removed


def test_cancel_adds_nothing(loaded):
    logic, volume, points, vertebrae = loaded
    logic.runner = ProcessRunner(python=sys.executable)
    before = scene_snapshot(logic.scene)
    op = logic.startExtraction(volume, vertebrae)
    op.cancel()
    assert op.poll().cancelled
    with pytest.raises(SpineAIError, match="cancelled; nothing was added"):
        logic.finish(op)
    assert scene_snapshot(logic.scene) == before


@pytest.mark.parametrize("in_process", [True, False])
def test_engine_error_in_the_job_names_the_lesion_and_adds_nothing(loaded, phantom_met, in_process):
    logic, volume, points, vertebrae = loaded
    if not in_process:
        logic.runner = ProcessRunner(python=sys.executable)
    # A 2-voxel segment: too small for texture features; the engine refuses it inside the job.
    tiny = np.zeros(phantom_met.image.array.shape, np.uint8)
    k, j, i = (np.asarray(phantom_met.lesion_center_ijk)[::-1]).tolist()
    tiny[k, j, i] = tiny[k, j, i + 1] = 1
    segmentation = mrml.new_segmentation_node(logic.scene, "tiny", volume)
    mrml.add_mask_segment(segmentation, tiny, phantom_met.image, "tiny lesion")
    before = scene_snapshot(logic.scene)
    with pytest.raises(SpineAIError, match=r"^tiny lesion: .*voxel"):
        logic.extract(volume, segmentation)
    assert scene_snapshot(logic.scene) == before


# ---- the learned vertebral-body method, and refinement in place ----------------------------------

@pytest.fixture
def lumbar_case(scene):
    """A real lumbar MR the shipped body model never trained on, as a volume node with a point."""
    pytest.importorskip("torch", reason="the learned method needs torch")
    from shared_data import shared_data_path

    from spineai.deep.bundle import load_torch_bundle
    from spineai.image import read_volume
    from spineai.segment.body_training import innermost_voxel
    from spineai.segment.deep import DEFAULT_MODEL

    name = load_torch_bundle(DEFAULT_MODEL).card["training"]["validation_cases"][0]
    folder = shared_data_path("spine-mr-bodies")
    image = read_volume(folder / f"{name}_img.nii.gz")
    labels = read_volume(folder / f"{name}_bodies.nii.gz").array
    body = labels == int(np.unique(labels)[3])
    logic = RadiomicsLogic(scene)
    volume = mrml.add_volume_node(scene, image, name)
    points = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "Body points")
    points.AddControlPoint(*image.ijk_to_ras(innermost_voxel(body)), "L3")
    return logic, volume, points, image, body


def test_learned_body_segmentation_then_refined_in_place(lumbar_case):
    logic, volume, points, image, body = lumbar_case
    op = logic.startSegmentation(volume, points, "vertebral-body", method="deep", forceCpu=True)
    segmentation = logic.run(op)
    assert op.details[0]["method"] == "deep" and op.details[0]["device"].startswith("cpu")
    assert "L3: deep (spineai-body-click" in logic.describeSegmentation(op)
    (sid,) = mrml.segment_ids(segmentation)
    first = mrml.mask_from_segment(segmentation, sid, image).astype(bool)
    assert dice(first, body) > 0.85
    # A remove point on the body itself: the refined segment no longer holds it, and it replaces the
    # old one in the same node (same name, no second segment, no new node).
    remove = logic.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "Remove")
    k, j, i = np.argwhere(first)[0]
    remove.AddControlPoint(*image.ijk_to_ras((int(i), int(j), int(k))), "not body")
    nodes = logic.scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode")
    op = logic.startSegmentation(volume, points, "vertebral-body", method="deep", forceCpu=True,
                                 removePointsNode=remove, refineNode=segmentation)
    refined = logic.run(op)
    assert refined is segmentation and logic.scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == nodes
    (sid2,) = mrml.segment_ids(segmentation)
    assert segmentation.GetSegmentation().GetSegment(sid2).GetName() == "L3"
    assert mrml.mask_from_segment(segmentation, sid2, image)[k, j, i] == 0
    with pytest.raises(SpineAIError, match="add / remove points refine the learned vertebral-body segmentation"):
        logic.startSegmentation(volume, points, "vertebral-body", method="classic", removePointsNode=remove)
