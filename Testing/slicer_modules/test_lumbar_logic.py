"""SpineAILumbar logic over a real MRML scene: series roles from descriptions, the series check,
and grading in the background with its result nodes (table, point lists by worst grade, heatmaps)."""

from __future__ import annotations

import numpy as np
import pytest

from spineai.errors import SpineAIError
from spineai.image import Volume
from spineai.phantom import make_spine_phantom

from SpineAICommon import mrml
from SpineAILumbarLib.logic import LumbarLogic, results_html

from scene_snapshot import scene_snapshot

AXIAL = np.eye(3)  # LPS identity: slices stacked along superior-inferior


def test_all_missing_is_a_report_not_an_error(scene):
    report = LumbarLogic().assessInputs()
    assert report.present == [] and report.missing == ["sagittalT1", "sagittalT2", "axialT2"]
    assert report.text().splitlines()[:3] == ["Sagittal T1: missing", "Sagittal T2 / STIR: missing", "Axial T2: missing"]


def test_present_missing_and_planes(scene):
    phantom = make_spine_phantom(seed=4, lesion_kind=None)
    sagittal = mrml.add_volume_node(scene, phantom.image, "sag STIR")
    axial = mrml.add_volume_node(scene, Volume(np.zeros((20, 64, 64), np.int16), (0.7, 0.7, 4.0), (0, 0, 0), AXIAL), "ax T2")
    before = scene_snapshot(scene)
    report = LumbarLogic().assessInputs(sagittalT1=None, sagittalT2=sagittal, axialT2=axial)
    assert report.present == ["sagittalT2", "axialT2"] and report.missing == ["sagittalT1"]
    checks = {c.role: c for c in report.checks}
    assert checks["sagittalT2"].plane == "sagittal" and checks["axialT2"].plane == "axial"
    assert not checks["sagittalT2"].notes and not checks["axialT2"].notes
    assert scene_snapshot(scene) == before


def test_wrong_plane_and_duplicate_are_flagged(scene):
    phantom = make_spine_phantom(seed=4, lesion_kind=None)
    sagittal = mrml.add_volume_node(scene, phantom.image, "sag")
    report = LumbarLogic().assessInputs(sagittalT1=sagittal, sagittalT2=sagittal, axialT2=sagittal)
    checks = {c.role: c for c in report.checks}
    assert "acquired in the sagittal plane, expected axial" in checks["axialT2"].notes
    assert "same volume as Sagittal T1" in checks["sagittalT2"].notes


def test_unusable_series_is_reported_with_the_reason(scene):
    import vtk

    node = scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "rgb")
    image = vtk.vtkImageData()
    image.SetDimensions(4, 4, 4)
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 3)
    node.SetAndObserveImageData(image)
    check = LumbarLogic().checkSeries("axialT2", node)
    assert check.status == "unusable"
    assert "vector / RGB volume with 3 components" in check.notes[0]


def test_roles_are_detected_from_series_descriptions(scene):
    vol = Volume(np.zeros((4, 8, 8), np.int16))
    t2 = mrml.add_volume_node(scene, vol, "5: SAG T2 STIR")
    other = mrml.add_volume_node(scene, vol, "scout")
    other.SetAttribute("DICOM.SeriesDescription", "AX T2 FSE")  # the attribute wins over the name
    mrml.add_volume_node(scene, vol, "Coronal STIR")
    found = LumbarLogic().detectRoles()
    assert found == {"sagittalT1": None, "sagittalT2": t2, "axialT2": other}


@pytest.fixture(scope="module")
def synthetic_study(tmp_path_factory):
    pytest.importorskip("torch", reason="grading needs torch")
    from spineai.lumbar.study import open_rsna, read_rsna_study
    from spineai.lumbar.synthetic import generate_dataset

    root = generate_dataset(tmp_path_factory.mktemp("lumbar") / "rsna", 1, seed=4)
    return read_rsna_study(open_rsna(root), "1000")


@pytest.fixture(scope="module")
def grader(tmp_path_factory):
    """An untrained grading bundle, passed to the logic by path (the tests check plumbing, not grades)."""
    torch = pytest.importorskip("torch", reason="grading needs torch")
    from spineai.deep.bundle import build_network, save_torch_bundle
    from spineai.lumbar.grading import MODEL_ID, TASK
    from spineai.lumbar.training import NETWORK

    torch.manual_seed(0)
    card = {"id": MODEL_ID, "version": "0.0.0-test", "task": TASK, "demonstration": True, "network": NETWORK}
    return str(save_torch_bundle(card, build_network(NETWORK), tmp_path_factory.mktemp("b") / "model"))


def test_grading_without_an_axial_series_makes_the_result_nodes(scene, synthetic_study, grader):
    from spineai.lumbar.preprocess import DISC_TO_CANAL_MM

    logic = LumbarLogic()
    t1 = mrml.add_volume_node(scene, synthetic_study.series["sagittal_t1"].volume, "Sagittal T1")
    t2 = mrml.add_volume_node(scene, synthetic_study.series["sagittal_t2"].volume, "Sagittal T2/STIR")
    discs = {lv: p - np.array([0, DISC_TO_CANAL_MM, 0]) for lv, p in synthetic_study.levels.items()}
    points = logic.levelPointsFromDiscs(discs)
    inputs = scene_snapshot(scene)
    nodes = logic.grade(t1, t2, None, levelPoints=points, model=grader, forceCpu=True)
    assert nodes.table.GetNumberOfRows() == 25 and nodes.table.GetNumberOfColumns() == 6
    assert "DEMONSTRATION" in nodes.banner and "(DEMONSTRATION)" in nodes.table.GetName()
    total = sum(p.GetNumberOfControlPoints() for p in nodes.points)
    assert total == 5
    for p in nodes.points:  # the levels sit where the points were placed, moved into the canal
        for n in range(p.GetNumberOfControlPoints()):
            level = p.GetNthControlPointLabel(n)
            ras = p.GetNthControlPointPositionVector(n)
            lps = np.array([-ras[0], -ras[1], ras[2]])
            assert np.linalg.norm(lps - synthetic_study.levels[level]) < 0.01  # kept to 0.01 mm
    assert set(nodes.heatmaps) == {"sagittalT1", "sagittalT2"}
    heat = mrml.volume_from_node(nodes.heatmaps["sagittalT2"])
    assert heat.same_geometry(synthetic_study.series["sagittal_t2"].volume) and 0 < heat.array.max() <= 1
    assert logic.seriesNode(nodes.heatmaps["sagittalT2"]) is t2
    assert "no Axial T2 series" in nodes.text()
    html = results_html(nodes.result)
    assert html.count("<b>") == 25 + 1 and "DEMONSTRATION" in html
    after = scene_snapshot(scene)
    assert {k: v for k, v in after.items() if k in inputs} == inputs  # the inputs are untouched


def test_grading_refuses_bad_inputs_before_any_work(scene):
    logic = LumbarLogic()
    with pytest.raises(SpineAIError, match="no series selected"):
        logic.startGrading()
    vol = mrml.add_volume_node(scene, Volume(np.zeros((4, 8, 8), np.int16)), "sag")
    points = logic.levelPointsFromDiscs({"L9": (0, 0, 0)})
    with pytest.raises(SpineAIError, match="level point 'L9' is not named after a disc level"):
        logic.startGrading(sagittalT2=vol, levelPoints=points)


def test_cancel_leaves_the_scene_as_it_was(scene, synthetic_study, grader):
    from SpineAICommon.jobs import ProcessRunner

    logic = LumbarLogic(runner=ProcessRunner())
    t2 = mrml.add_volume_node(scene, synthetic_study.series["sagittal_t2"].volume, "sag")
    before = scene_snapshot(scene)
    op = logic.startGrading(sagittalT2=t2, model=grader, forceCpu=True)
    op.cancel()
    with pytest.raises(SpineAIError, match="cancelled; nothing was added"):
        logic.finish(op)
    assert scene_snapshot(scene) == before
