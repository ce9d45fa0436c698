"""MRML nodes <-> engine values. The only place where Slicer geometry meets the engine's.

Slicer keeps volumes in RAS (IJKToRAS); the engine's ``Volume`` keeps ITK's LPS origin and direction.
Everything here uses MRML and VTK classes that the PyPI ``slicer-core`` package also has, and never
``slicer.app``, ``slicer.modules`` or ``slicer.mrmlScene``: the scene is always passed in, so the
same code runs inside Slicer and in the CI tests.

Nothing here changes a node it was given: functions either read a node or create a new one.
"""

from __future__ import annotations

import json

import numpy as np
import vtk
from vtk.util import numpy_support

import slicer

from spineai.errors import SpineAIError
from spineai.image import Volume

_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


# ---- names ---------------------------------------------------------------------------------

def unique_name(scene, base: str) -> str:
    """``base`` if no node has that name yet, else the scene's next free variant (``base_1``...)."""
    if scene.GetFirstNodeByName(base) is None:
        return base
    return scene.GenerateUniqueName(base)


def _matrix_to_numpy(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def _numpy_to_matrix(array: np.ndarray) -> vtk.vtkMatrix4x4:
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(array[r, c]))
    return matrix


def _require_untransformed(node, what: str) -> None:
    # A parent transform would move the node away from the voxel grid the engine sees.
    transform = node.GetParentTransformNode()
    if transform is not None:
        raise SpineAIError(
            f"the {what} '{node.GetName()}' is under the transform '{transform.GetName()}': harden the "
            "transform (Data module, right-click > Harden transform) or remove it first"
        )


# ---- volumes -------------------------------------------------------------------------------

def volume_from_node(node, what: str = "input volume", single_slice: bool = False) -> Volume:
    """A copy of a scalar volume node's voxels and geometry as an engine ``Volume``; with
    ``single_slice`` a 2D image (a radiograph: one slice) is accepted too."""
    if node is None:
        raise SpineAIError(f"no {what} selected: choose a volume first")
    if not node.IsA("vtkMRMLScalarVolumeNode") or node.IsA("vtkMRMLLabelMapVolumeNode"):
        raise SpineAIError(f"the {what} '{node.GetName()}' is a {node.GetClassName()}, not a grey-level volume")
    image = node.GetImageData()
    if image is None or image.GetNumberOfPoints() == 0:
        raise SpineAIError(f"the {what} '{node.GetName()}' holds no voxels (empty image)")
    components = image.GetNumberOfScalarComponents()
    if components != 1:
        frames = node.GetAttribute("MultiVolume.NumberOfFrames")
        if node.IsA("vtkMRMLMultiVolumeNode") or frames:
            kind = f"a 4D (multi-volume) series with {frames or components} frames"
            fix = "pick one frame (Sequences or MultiVolumeExplorer module) as a 3D volume first"
        else:
            kind = f"a vector / RGB volume with {components} components per voxel"
            fix = "convert it to a scalar volume first (Vector to Scalar Volume module)"
        raise SpineAIError(f"the {what} '{node.GetName()}' is {kind}; SpineAI needs a 3D scalar volume: {fix}")
    dims = image.GetDimensions()
    if min(dims) < 2 and not (single_slice and sorted(dims)[1] >= 2):
        raise SpineAIError(f"the {what} '{node.GetName()}' is a single slice ({dims} voxels): a 3D volume is needed")
    _require_untransformed(node, what)
    scalars = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    array = np.array(scalars.reshape(tuple(reversed(dims))), copy=True)
    directions = vtk.vtkMatrix4x4()
    node.GetIJKToRASDirectionMatrix(directions)
    dir_ras = _matrix_to_numpy(directions)[:3, :3]
    origin_ras = np.asarray(node.GetOrigin(), float)
    return Volume(
        array,
        spacing=tuple(node.GetSpacing()),
        origin=tuple(_RAS_TO_LPS @ origin_ras),
        direction=_RAS_TO_LPS @ dir_ras,
    )


def add_volume_node(scene, volume: Volume, name: str, class_name: str = "vtkMRMLScalarVolumeNode"):
    """A new volume node holding a copy of ``volume`` (voxels and geometry)."""
    node = scene.AddNewNodeByClass(class_name, unique_name(scene, name))
    array = np.ascontiguousarray(volume.array)
    image = vtk.vtkImageData()
    image.SetDimensions(*reversed(array.shape))
    vtk_array = numpy_support.numpy_to_vtk(array.ravel(), deep=True)
    image.GetPointData().SetScalars(vtk_array)
    node.SetAndObserveImageData(image)
    node.SetIJKToRASMatrix(_numpy_to_matrix(volume.ijk_to_ras_matrix()))
    node.CreateDefaultDisplayNodes()
    return node


def oriented_image_from_mask(mask: np.ndarray, reference: Volume):
    """A vtkOrientedImageData (uint8, 0/1) placed on the reference volume's voxel grid."""
    mask = np.ascontiguousarray(np.asarray(mask) != 0, dtype=np.uint8)
    if mask.shape != reference.array.shape:
        raise SpineAIError(f"mask shape {mask.shape} differs from the volume's {reference.array.shape}")
    image = slicer.vtkOrientedImageData()
    image.SetDimensions(*reversed(mask.shape))
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())[:] = mask.ravel()
    image.SetImageToWorldMatrix(_numpy_to_matrix(reference.ijk_to_ras_matrix()))
    return image


# ---- segmentations -------------------------------------------------------------------------

def new_segmentation_node(scene, name: str, reference_node=None):
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", unique_name(scene, name))
    node.CreateDefaultDisplayNodes()
    if reference_node is not None:
        node.SetReferenceImageGeometryParameterFromVolumeNode(reference_node)
    return node


def add_mask_segment(segmentation_node, mask: np.ndarray, reference: Volume, name: str, color=(1.0, 0.8, 0.0)) -> str:
    """Add ``mask`` (array[k, j, i] on ``reference``'s grid) as a new segment; returns its ID."""
    image = oriented_image_from_mask(mask, reference)
    return segmentation_node.AddSegmentFromBinaryLabelmapRepresentation(image, name, list(color))


def segment_ids(segmentation_node) -> list[str]:
    ids = vtk.vtkStringArray()
    segmentation_node.GetSegmentation().GetSegmentIDs(ids)
    return [ids.GetValue(n) for n in range(ids.GetNumberOfValues())]


def require_segments(segmentation_node, what: str = "segmentation") -> list[str]:
    if segmentation_node is None:
        raise SpineAIError(f"no {what} selected")
    ids = segment_ids(segmentation_node)
    if not ids:
        raise SpineAIError(
            f"the {what} '{segmentation_node.GetName()}' has no segments: draw the lesion in Segment Editor "
            "or place points and press Segment"
        )
    return ids


def mask_from_segment(segmentation_node, segment_id: str, reference: Volume, what: str = "segmentation") -> np.ndarray:
    """The segment's voxels resampled (nearest neighbour) onto ``reference``'s grid, uint8 array[k, j, i].

    Segments drawn in Segment Editor may live on another grid (cropped, oversampled, another
    source volume); resampling puts them on the grid of the volume the features are read from.
    """
    _require_untransformed(segmentation_node, what)
    segmentation = segmentation_node.GetSegmentation()
    segment = segmentation.GetSegment(segment_id)
    if segment is None:
        raise SpineAIError(f"the {what} '{segmentation_node.GetName()}' has no segment with ID {segment_id!r}")
    if not segmentation.ContainsRepresentation("Binary labelmap"):
        # Closed-surface-only segmentations (e.g. imported models) need a labelmap first.
        raise SpineAIError(
            f"the {what} '{segmentation_node.GetName()}' has no binary labelmap representation: create it in the "
            "Segmentations module (Representations > Binary labelmap > Create)"
        )
    labelmap = slicer.vtkOrientedImageData()
    segmentation_node.GetBinaryLabelmapRepresentation(segment_id, labelmap)
    grid = slicer.vtkOrientedImageData()
    grid.SetDimensions(*reversed(reference.array.shape))
    grid.SetImageToWorldMatrix(_numpy_to_matrix(reference.ijk_to_ras_matrix()))
    resampled = slicer.vtkOrientedImageData()
    empty_input = labelmap.GetPointData().GetScalars() is None or labelmap.GetNumberOfPoints() == 0
    if empty_input:
        return np.zeros(reference.array.shape, np.uint8)
    if not slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(
        labelmap, grid, resampled, False, True
    ):
        raise SpineAIError(f"could not resample segment '{segment.GetName()}' onto the volume's grid")
    dims = resampled.GetDimensions()
    extent = resampled.GetExtent()
    values = numpy_support.vtk_to_numpy(resampled.GetPointData().GetScalars()).reshape(tuple(reversed(dims)))
    out = np.zeros(reference.array.shape, np.uint8)
    # The resampled image may extend beyond the reference grid (padding keeps the whole segment):
    # copy the part that overlaps the grid, index by index.
    size = reference.array.shape[::-1]  # (i, j, k)
    src, dst = [], []
    for axis in range(3):
        lo, hi = max(extent[2 * axis], 0), min(extent[2 * axis + 1], size[axis] - 1)
        if lo > hi:
            return out  # no overlap at all
        src.append(slice(lo - extent[2 * axis], hi - extent[2 * axis] + 1))
        dst.append(slice(lo, hi + 1))
    out[dst[2], dst[1], dst[0]] = values[src[2], src[1], src[0]] != 0
    return out


def volume_from_oriented_image(image) -> Volume:
    """A copy of a vtkOrientedImageData (voxels, and geometry over its extent) as an engine Volume."""
    to_world = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(to_world)
    m = _matrix_to_numpy(to_world)
    spacing = np.linalg.norm(m[:3, :3], axis=0)
    extent = image.GetExtent()
    origin_ras = (m @ np.array([extent[0], extent[2], extent[4], 1.0]))[:3]
    dims = image.GetDimensions()
    array = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(tuple(reversed(dims))).copy()
    return Volume(array, tuple(spacing), tuple(_RAS_TO_LPS @ origin_ras), _RAS_TO_LPS @ (m[:3, :3] / spacing))


def segment_layers(segmentation_node, what: str = "bounding segmentation") -> tuple[list[Volume], list[tuple[str, int, int]]]:
    """The segmentation's labelmap layers on their own grids, and (name, layer, label value) per segment.

    Only copies: resampling onto the input volume's grid is left to the background job (25 vertebrae
    on a 512x512x300 volume took 7 s here, freezing Slicer). Segments sharing a layer share its copy.
    """
    _require_untransformed(segmentation_node, what)
    ids = require_segments(segmentation_node, what)
    segmentation = segmentation_node.GetSegmentation()
    if not segmentation.ContainsRepresentation("Binary labelmap"):
        raise SpineAIError(
            f"the {what} '{segmentation_node.GetName()}' has no binary labelmap representation: create it in the "
            "Segmentations module (Representations > Binary labelmap > Create)"
        )
    layers, layer_of, segments = [], {}, []
    for segment_id in ids:
        segment = segmentation.GetSegment(segment_id)
        index = segmentation.GetLayerIndex(segment_id, "Binary labelmap")
        if index not in layer_of:
            image = segment.GetRepresentation("Binary labelmap")
            if image is None or image.GetPointData().GetScalars() is None or image.GetNumberOfPoints() == 0:
                continue  # an empty segment bounds nothing
            layer_of[index] = len(layers)
            layers.append(volume_from_oriented_image(image))
        segments.append((segment.GetName(), layer_of[index], int(segment.GetLabelValue())))
    return layers, segments


# ---- markups -------------------------------------------------------------------------------

def control_points_ras(markups_node, what: str = "lesion points") -> list[tuple[str, tuple[float, float, float]]]:
    """(label, RAS position in world coordinates) of each placed control point."""
    if markups_node is None:
        raise SpineAIError(f"no {what} selected: place a point on each lesion (Markups point list)")
    points = []
    for n in range(markups_node.GetNumberOfControlPoints()):
        if markups_node.GetNthControlPointPositionStatus(n) != slicer.vtkMRMLMarkupsNode.PositionDefined:
            continue  # a point still being placed
        position = [0.0, 0.0, 0.0]
        markups_node.GetNthControlPointPositionWorld(n, position)
        label = markups_node.GetNthControlPointLabel(n) or f"point {n + 1}"
        points.append((label, tuple(float(v) for v in position)))
    if not points:
        raise SpineAIError(f"the point list '{markups_node.GetName()}' has no placed points: click on each lesion first")
    return points


# ---- tables --------------------------------------------------------------------------------

def new_table_node(scene, name: str, columns: list[str], rows: list[dict], numeric: set[str]):
    """A new table node with ``columns`` (numeric ones as double arrays, the rest as strings)."""
    node = scene.AddNewNodeByClass("vtkMRMLTableNode", unique_name(scene, name))
    table = node.GetTable()
    for column in columns:
        array = vtk.vtkDoubleArray() if column in numeric else vtk.vtkStringArray()
        array.SetName(column)
        table.AddColumn(array)
    table.SetNumberOfRows(len(rows))
    for r, row in enumerate(rows):
        for c, column in enumerate(columns):
            value = row.get(column)
            if column in numeric:
                table.GetColumn(c).SetValue(r, float("nan") if value is None else float(value))
            else:
                text = value if isinstance(value, str) else json.dumps(value) if value is not None else ""
                table.GetColumn(c).SetValue(r, text)
    node.Modified()
    return node


def table_rows(table_node, what: str = "table") -> tuple[list[str], list[dict]]:
    """Column names and rows (numbers as float, text as str) of a table node."""
    if table_node is None:
        raise SpineAIError(f"no {what} selected")
    table = table_node.GetTable()
    columns = [table.GetColumnName(c) for c in range(table.GetNumberOfColumns())]
    rows = []
    for r in range(table.GetNumberOfRows()):
        row = {}
        for c, name in enumerate(columns):
            array = table.GetColumn(c)
            if isinstance(array, vtk.vtkStringArray):
                row[name] = array.GetValue(r)
            else:
                row[name] = float(array.GetValue(r))
        rows.append(row)
    return columns, rows
