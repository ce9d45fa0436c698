"""Bad input: a clear message naming the problem, and the scene exactly as it was."""

from __future__ import annotations

import numpy as np
import pytest
import vtk
from vtk.util import numpy_support

from spineai.errors import SpineAIError

from SpineAICommon import mrml
from SpineAIRadiomicsLib.logic import RadiomicsLogic

from scene_snapshot import scene_snapshot


@pytest.fixture
def setup(scene):
    logic = RadiomicsLogic(scene)
    volume, points, vertebrae = logic.loadPhantom("STB", seed=2)
    return logic, volume, points, vertebrae


def _multicomponent(scene, cls, name, components):
    node = scene.AddNewNodeByClass(cls, name)
    image = vtk.vtkImageData()
    image.SetDimensions(8, 8, 8)
    image.AllocateScalars(vtk.VTK_FLOAT, components)
    numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())[:] = 1.0
    node.SetAndObserveImageData(image)
    return node


def _expect(logic, call, pattern):
    before = scene_snapshot(logic.scene)
    with pytest.raises(SpineAIError, match=pattern):
        call()
    assert scene_snapshot(logic.scene) == before  # nothing added, removed, renamed or modified


def test_no_volume_selected(setup):
    logic, volume, points, vertebrae = setup
    _expect(logic, lambda: logic.startSegmentation(None, points), "^no input volume selected: choose a volume first$")
    _expect(logic, lambda: logic.startExtraction(None, vertebrae), "^no input volume selected")


def test_no_points(setup):
    logic, volume, points, vertebrae = setup
    _expect(logic, lambda: logic.startSegmentation(volume, None), "^no lesion points selected")
    points.RemoveAllControlPoints()
    _expect(logic, lambda: logic.startSegmentation(volume, points), "has no placed points: click on each lesion first")


def test_point_outside_the_volume(setup):
    logic, volume, points, vertebrae = setup
    points.AddControlPoint(0.0, 900.0, 0.0, "stray click")
    _expect(logic, lambda: logic.startSegmentation(volume, points),
            r"^point 'stray click' of 'Lesion points' is not inside the volume 'SpineAI phantom STB': "
            r"the seed at RAS \(0\.0, 900\.0, 0\.0\) mm .* lies outside the image")


def test_segmentation_without_segments(setup):
    logic, volume, points, vertebrae = setup
    empty = logic.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "empty seg")
    _expect(logic, lambda: logic.startExtraction(volume, empty),
            "^the segmentation 'empty seg' has no segments: draw the lesion in Segment Editor")
    _expect(logic, lambda: logic.startSegmentation(volume, points, boundingNode=empty),
            "^the bounding segmentation 'empty seg' has no segments")
    _expect(logic, lambda: logic.startExtraction(volume, None), "^no segmentation selected$")


def test_segment_that_misses_the_volume(setup):
    logic, volume, points, vertebrae = setup
    far = mrml.new_segmentation_node(logic.scene, "elsewhere")
    image = mrml.volume_from_node(volume)
    from spineai.image import Volume

    shifted = Volume(np.ones((4, 4, 4), np.uint8), (1, 1, 1), (5000.0, 0.0, 0.0))
    mrml.add_mask_segment(far, shifted.array, shifted, "far lesion")
    assert image is not None
    _expect(logic, lambda: logic.startExtraction(volume, far), "^segment 'far lesion' of 'elsewhere' is empty on the grid")


def test_4d_volume(setup):
    logic, volume, points, vertebrae = setup
    four_d = _multicomponent(logic.scene, "vtkMRMLScalarVolumeNode", "dce", 5)
    four_d.SetAttribute("MultiVolume.NumberOfFrames", "5")
    _expect(logic, lambda: logic.startSegmentation(four_d, points),
            r"^the input volume 'dce' is a 4D \(multi-volume\) series with 5 frames; SpineAI needs a 3D scalar volume")


def test_vector_volume(setup):
    logic, volume, points, vertebrae = setup
    rgb = _multicomponent(logic.scene, "vtkMRMLVectorVolumeNode", "photo", 3)
    _expect(logic, lambda: logic.startExtraction(rgb, vertebrae),
            "^the input volume 'photo' is a vector / RGB volume with 3 components per voxel")


def test_label_map_is_not_a_grey_level_volume(setup):
    logic, volume, points, vertebrae = setup
    label = logic.scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "labels")
    _expect(logic, lambda: logic.startSegmentation(label, points),
            "^the input volume 'labels' is a vtkMRMLLabelMapVolumeNode, not a grey-level volume$")


def test_empty_volume_node(setup):
    logic, volume, points, vertebrae = setup
    hollow = logic.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "hollow")
    _expect(logic, lambda: logic.startSegmentation(hollow, points), r"^the input volume 'hollow' holds no voxels \(empty image\)$")


def test_unknown_mode(setup):
    logic, volume, points, vertebrae = setup
    _expect(logic, lambda: logic.startSegmentation(volume, points, mode="disc"), "^segmentation mode must be one of lesion, vertebral-body")


def test_export_of_a_foreign_table(setup, tmp_path):
    logic, volume, points, vertebrae = setup
    table = logic.scene.AddNewNodeByClass("vtkMRMLTableNode", "mine")
    _expect(logic, lambda: logic.exportTableToCsv(table, tmp_path / "x.csv"), "^the table 'mine' was not made by SpineAIRadiomics")
    assert not (tmp_path / "x.csv").exists()
