"""SpineAILumbar: the series check is real, the grading is honestly absent."""

from __future__ import annotations

import numpy as np

from spineai.image import Volume
from spineai.phantom import make_spine_phantom

from SpineAICommon import mrml
from SpineAILumbarLib.logic import GRADING_UNAVAILABLE, LumbarLogic

from scene_snapshot import scene_snapshot

AXIAL = np.eye(3)  # LPS identity: slices stacked along superior-inferior


def test_all_missing_is_a_report_not_an_error(scene):
    report = LumbarLogic().assessInputs()
    assert report.present == [] and report.missing == ["sagittalT1", "sagittalT2", "axialT2"]
    assert report.text().splitlines()[:3] == ["Sagittal T1: missing", "Sagittal T2 / STIR: missing", "Axial T2: missing"]
    assert report.text().endswith(GRADING_UNAVAILABLE)


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
