"""MRML <-> engine geometry: real slicer-core nodes, a phantom with a rotated direction and an offset origin."""

from __future__ import annotations

import numpy as np
import pytest
import vtk
from vtk.util import numpy_support

import slicer

from spineai.errors import SpineAIError
from spineai.image import Volume

from SpineAICommon import mrml


def test_phantom_geometry_is_not_trivial(phantom_met):
    # The round-trip tests below only mean something if the direction is not identity and the origin not 0.
    assert not np.allclose(phantom_met.image.direction, np.eye(3))
    assert np.linalg.norm(phantom_met.image.origin) > 10


def test_volume_round_trip_is_exact(scene, phantom_met):
    node = mrml.add_volume_node(scene, phantom_met.image, "phantom")
    back = mrml.volume_from_node(node)
    assert back.array.dtype == phantom_met.image.array.dtype
    assert np.array_equal(back.array, phantom_met.image.array)
    assert back.same_geometry(phantom_met.image, tol=1e-9)
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    ijk_to_ras = np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])
    assert np.allclose(ijk_to_ras, phantom_met.image.ijk_to_ras_matrix())


def test_mask_round_trip_is_voxel_identical_and_in_place(scene, phantom_met):
    image = phantom_met.image
    volume_node = mrml.add_volume_node(scene, image, "phantom")
    segmentation = mrml.new_segmentation_node(scene, "seg", volume_node)
    mask = phantom_met.lesion_mask.array
    segment_id = mrml.add_mask_segment(segmentation, mask, image, "lesion")
    back = mrml.mask_from_segment(segmentation, segment_id, image)
    assert back.dtype == np.uint8 and np.array_equal(back, mask)

    # In RAS: the segment's own labelmap, read through its image-to-world matrix, puts the lesion
    # where the engine's geometry says it is.
    labelmap = slicer.vtkOrientedImageData()
    segmentation.GetBinaryLabelmapRepresentation(segment_id, labelmap)
    to_world = vtk.vtkMatrix4x4()
    labelmap.GetImageToWorldMatrix(to_world)
    w = np.array([[to_world.GetElement(r, c) for c in range(4)] for r in range(4)])
    values = numpy_support.vtk_to_numpy(labelmap.GetPointData().GetScalars()).reshape(tuple(reversed(labelmap.GetDimensions())))
    e = labelmap.GetExtent()
    kji = np.argwhere(values > 0) + [e[4], e[2], e[0]]
    ras_from_slicer = (w @ np.c_[kji[:, ::-1], np.ones(len(kji))].T)[:3].T
    ras_from_engine = np.array([image.ijk_to_ras(p[::-1]) for p in np.argwhere(mask > 0)])
    assert np.allclose(np.sort(ras_from_slicer, axis=0), np.sort(ras_from_engine, axis=0), atol=1e-6)
    centre = np.asarray(phantom_met.lesion_center_ras)
    assert np.linalg.norm(ras_from_slicer.mean(axis=0) - centre) < 10.0  # mm: the lesion is where it was made


def test_segment_on_another_grid_is_resampled_onto_the_volume(scene, phantom_met):
    image = phantom_met.image
    # A segment drawn on a cropped copy of the volume (same spacing, shifted origin), as Segment
    # Editor does when the source geometry differs.
    k0, j0, i0 = 4, 60, 40
    crop_array = phantom_met.lesion_mask.array[k0:, j0:, i0:]
    crop_origin_ras = image.ijk_to_ras((i0, j0, k0))
    crop = Volume(crop_array, image.spacing, (-crop_origin_ras[0], -crop_origin_ras[1], crop_origin_ras[2]), image.direction)
    segmentation = mrml.new_segmentation_node(scene, "drawn elsewhere")
    segment_id = mrml.add_mask_segment(segmentation, crop_array, crop, "lesion")
    back = mrml.mask_from_segment(segmentation, segment_id, image)
    assert np.array_equal(back, phantom_met.lesion_mask.array)


def test_segmentation_file_round_trip(scene, phantom_met, tmp_path):
    image = phantom_met.image
    volume_node = mrml.add_volume_node(scene, image, "phantom")
    segmentation = mrml.new_segmentation_node(scene, "seg", volume_node)
    mrml.add_mask_segment(segmentation, phantom_met.lesion_mask.array, image, "lesion")
    storage = slicer.vtkMRMLSegmentationStorageNode()
    scene.AddNode(storage)
    storage.SetFileName(str(tmp_path / "lesion.seg.nrrd"))
    assert storage.WriteData(segmentation)
    loaded = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "loaded")
    reader = slicer.vtkMRMLSegmentationStorageNode()
    scene.AddNode(reader)
    reader.SetFileName(str(tmp_path / "lesion.seg.nrrd"))
    assert reader.ReadData(loaded)
    (segment_id,) = mrml.segment_ids(loaded)
    assert np.array_equal(mrml.mask_from_segment(loaded, segment_id, image), phantom_met.lesion_mask.array)


def test_bounding_segmentation_becomes_labels(scene, phantom_met):
    from spineai.phantom import LABELS, LEVELS

    from SpineAIRadiomicsLib.compute import labels_on_grid

    image = phantom_met.image
    segmentation = mrml.new_segmentation_node(scene, "vertebrae")
    for level in LEVELS:
        mrml.add_mask_segment(segmentation, phantom_met.labels.array == LABELS[level], image, level)
    layers, segments = mrml.segment_layers(segmentation)
    assert [name for name, _, _ in segments] == list(LEVELS)
    labels = labels_on_grid(image, layers, segments)
    for n, level in enumerate(LEVELS, start=1):
        assert np.array_equal(labels.array == n, phantom_met.labels.array == LABELS[level])


def test_bounding_segments_on_another_grid_are_resampled_in_the_job(scene, phantom_met):
    from spineai.phantom import LABELS

    from SpineAIRadiomicsLib.compute import labels_on_grid

    image = phantom_met.image
    # Drawn on a cropped copy (shifted origin), as Segment Editor does; shared layer of two segments.
    k0, j0, i0 = 3, 40, 30
    crop_origin_ras = image.ijk_to_ras((i0, j0, k0))
    crop_labels = phantom_met.labels.array[k0:, j0:, i0:]
    crop = Volume(crop_labels, image.spacing, (-crop_origin_ras[0], -crop_origin_ras[1], crop_origin_ras[2]), image.direction)
    segmentation = mrml.new_segmentation_node(scene, "drawn elsewhere")
    first = mrml.add_mask_segment(segmentation, crop_labels == LABELS["L3"], crop, "L3")
    second = mrml.add_mask_segment(segmentation, crop_labels == LABELS["L4"], crop, "L4")
    segmentation.GetSegmentation().CollapseBinaryLabelmaps(False)  # one layer, label values 1 and 2
    layers, segments = mrml.segment_layers(segmentation)
    assert len(layers) == 1 and [(n, l) for n, l, _ in segments] == [("L3", 0), ("L4", 0)]
    assert layers[0].array.shape != image.array.shape  # not resampled in the interface's thread
    labels = labels_on_grid(image, layers, segments).array
    expected = np.zeros_like(phantom_met.labels.array)
    expected[k0:, j0:, i0:] = crop_labels
    assert np.array_equal(labels == 1, expected == LABELS["L3"]) and np.array_equal(labels == 2, expected == LABELS["L4"])
    assert first != second


def test_markups_points_are_world_ras(scene):
    points = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "P")
    points.AddControlPoint(1.5, -2.0, 30.0, "a")
    points.AddControlPoint(0.0, 0.0, 0.0)
    got = mrml.control_points_ras(points)
    assert got[0] == ("a", (1.5, -2.0, 30.0))
    assert got[1][1] == (0.0, 0.0, 0.0) and got[1][0]  # unlabeled points get a name


def test_unique_names_never_reuse_a_users_node(scene):
    scene.AddNewNodeByClass("vtkMRMLTableNode", "features")
    assert mrml.unique_name(scene, "features") != "features"
    assert mrml.unique_name(scene, "other") == "other"


def test_table_round_trip(scene):
    rows = [{"id": "L3", "a": 1.25, "b": "x"}, {"id": "L4", "a": float("nan"), "b": [1, 2]}]
    node = mrml.new_table_node(scene, "t", ["id", "a", "b"], rows, numeric={"a"})
    columns, back = mrml.table_rows(node)
    assert columns == ["id", "a", "b"]
    assert back[0] == {"id": "L3", "a": 1.25, "b": "x"}
    assert np.isnan(back[1]["a"]) and back[1]["b"] == "[1, 2]"


def test_transformed_volume_is_refused(scene, phantom_met):
    node = mrml.add_volume_node(scene, phantom_met.image, "phantom")
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "T")
    node.SetAndObserveTransformNodeID(transform.GetID())
    with pytest.raises(SpineAIError, match="under the transform 'T': harden the transform"):
        mrml.volume_from_node(node)
