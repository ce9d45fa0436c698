"""SpineAI image-model logic on a real MRML scene: the heatmap node keeps the source's geometry and
gets the colour, threshold and slice-view composite settings."""

from __future__ import annotations

import json

import numpy as np
import pytest

import slicer

from spineai.errors import SpineAIError

from SpineAICommon import mrml

pytest.importorskip("torch", reason="the image model needs torch")
pytest.importorskip("monai", reason="the image model needs MONAI")

from SpineAILib.image_logic import HEAT_COLOR_ID, ImageClassifyLogic  # noqa: E402


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    from spineai.deep.bundle import save_torch_bundle
    from spineai.imaging.classifier import build_classifier, network_spec
    from spineai.imaging.lesion import TASK

    import torch

    torch.manual_seed(0)
    recipe = {"kind": "sagittal-slices", "shape": [32, 32], "spacing_mm": 3.0, "slices": 3, "slice_spacing_mm": 5.0}
    spec = network_spec("resnet-small", 2, 3, 3, recipe["shape"])
    card = {"id": "tiny-lesion", "version": "0.0.1", "task": TASK, "classes": ["SD", "MET", "STB"],
            "demonstration": True, "network": spec, "preprocessing": recipe}
    return str(save_torch_bundle(card, build_classifier(spec), tmp_path_factory.mktemp("b") / "tiny.zip"))


@pytest.fixture
def lesion_nodes(scene, phantom_met):
    volume = mrml.add_volume_node(scene, phantom_met.image, "T2 sag")
    seg = mrml.new_segmentation_node(scene, "lesion", volume)
    mrml.add_mask_segment(seg, phantom_met.lesion_mask.array > 0, phantom_met.image, "MET lesion")
    composites = []
    for name in ("Red", "Yellow", "Green"):  # what Slicer's layout makes: one composite node per slice view
        c = slicer.vtkMRMLSliceCompositeNode()
        c.SetLayoutName(name)
        composites.append(scene.AddNode(c))
    return volume, seg, composites


def _matrix(node):
    import vtk

    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])


def test_heatmap_node_has_the_source_geometry_colour_threshold_and_composite_settings(scene, lesion_nodes, tiny_bundle):
    volume, seg, composites = lesion_nodes
    logic = ImageClassifyLogic(scene)
    node, result = logic.classify(volume, tiny_bundle, segmentationNode=seg)
    assert node.GetImageData().GetDimensions() == volume.GetImageData().GetDimensions()
    np.testing.assert_allclose(_matrix(node), _matrix(volume), atol=1e-9)
    heat = mrml.volume_from_node(node, "heatmap")
    assert 0.0 <= heat.array.min() and 0.0 < heat.array.max() <= 1.0
    display = node.GetDisplayNode()
    assert display.GetColorNodeID() == HEAT_COLOR_ID and scene.GetNodeByID(HEAT_COLOR_ID).GetTypeAsString() == "PET-Heat"
    assert display.GetApplyThreshold() and display.GetLowerThreshold() == pytest.approx(0.2)
    assert (display.GetWindow(), display.GetLevel()) == pytest.approx((1.0, 0.5))
    for c in composites:
        assert c.GetForegroundVolumeID() == node.GetID() and c.GetBackgroundVolumeID() == volume.GetID()
        assert c.GetForegroundOpacity() == pytest.approx(0.5)
    logic.setOpacity(node, 0.8)
    logic.setThreshold(node, 0.4)
    assert composites[0].GetForegroundOpacity() == pytest.approx(0.8) and display.GetLowerThreshold() == pytest.approx(0.4)
    assert set(result.probabilities) == {"SD", "MET", "STB"} and result.banners and "DEMONSTRATION" in result.banners[0]
    assert result.text().startswith("!! DEMONSTRATION") and json.loads(node.GetAttribute("SpineAI.heatmap"))["demonstration"]


def test_a_point_works_and_bad_lesions_are_named(scene, lesion_nodes, tiny_bundle, phantom_met):
    volume, seg, _ = lesion_nodes
    logic = ImageClassifyLogic(scene)
    points = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "click")
    points.AddControlPoint(*phantom_met.lesion_center_ras)
    node, result = logic.classify(volume, tiny_bundle, pointsNode=points, method="gradcam++")
    assert result.method == "gradcam++" and node.GetName() != ""
    with pytest.raises(SpineAIError, match="either as a segmentation or as a point"):
        logic.startImageClassification(volume, tiny_bundle)
    outside = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "far")
    outside.AddControlPoint(900.0, 0.0, 0.0)
    with pytest.raises(SpineAIError, match="point 'far-1' of 'far': .*outside the image"):
        logic.startImageClassification(volume, tiny_bundle, pointsNode=outside)
    with pytest.raises(SpineAIError, match="no image model selected"):
        logic.startImageClassification(volume, "", segmentationNode=seg)
    n_volumes = scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")
    op = logic.startImageClassification(volume, "spineai-body-click", segmentationNode=seg)
    with pytest.raises(SpineAIError, match="not a 'lesion-image-classification' model"):
        logic.finish(op)
    assert scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == n_volumes  # a failed job adds nothing
