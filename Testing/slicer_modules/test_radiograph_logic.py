"""SpineAI radiograph logic on a real MRML scene: a one-slice film in; probability, threshold, Cobb
angle, the heat overlay on the film's geometry and the centre-line / end-vertebra markups out."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch", reason="the radiograph model needs torch")
pytest.importorskip("monai", reason="the radiograph model needs MONAI")

from spineai.errors import SpineAIError  # noqa: E402
from spineai.imaging.cobb import measure_cobb  # noqa: E402
from spineai.imaging.radiograph_classifier import DEMONSTRATION_NOTICE, MODEL_ID  # noqa: E402
from spineai.imaging.radiograph_synth import generate_radiograph  # noqa: E402

from SpineAICommon import mrml  # noqa: E402
from SpineAILib.radiograph_logic import RadiographLogic  # noqa: E402


def test_screen_a_film_shows_heatmap_and_draws_cobb_markups(scene):
    import vtk

    film = generate_radiograph(30, seed=12)
    node = mrml.add_volume_node(scene, film.volume(), "film")
    composite = scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")
    logic = RadiographLogic(scene)
    assert any(entry.startswith(MODEL_ID) for entry, _ in logic.listModels())
    screening, heat, curve, lines = logic.screenRadiograph(node, forceCpu=True)

    assert 0 <= screening.probability <= 1 and screening.scoliosis == (screening.probability >= screening.threshold)
    assert screening.threshold_rule in ("youden", "f1", "recall", "precision")
    assert screening.banners == [DEMONSTRATION_NOTICE] and DEMONSTRATION_NOTICE in screening.text()
    assert screening.cobb_deg == pytest.approx(measure_cobb(film.image).angle_deg)
    assert f"Cobb angle {screening.cobb_deg:.1f} deg" in screening.text()

    # the heat map lies exactly on the film
    a, b = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(a)
    heat.GetIJKToRASMatrix(b)
    assert all(a.GetElement(r, c) == pytest.approx(b.GetElement(r, c)) for r in range(4) for c in range(4))
    assert heat.GetImageData().GetDimensions() == node.GetImageData().GetDimensions()
    values = mrml.volume_from_node(heat, single_slice=True).array
    assert 0 <= values.min() and values.max() <= 1 and values.max() > 0
    assert composite.GetForegroundVolumeID() == heat.GetID() and composite.GetBackgroundVolumeID() == node.GetID()
    assert composite.GetForegroundOpacity() == pytest.approx(0.4)
    assert heat.GetDisplayNode().GetApplyThreshold()

    # the markups lie on the film's plane, along the spine
    volume = film.volume()
    pts = np.array([curve.GetNthControlPointPosition(i) for i in range(curve.GetNumberOfControlPoints())])
    assert curve.GetNumberOfControlPoints() >= 20
    ijk = np.array([volume.ras_to_ijk(p) for p in pts])
    assert np.allclose(ijk[:, 2], 0, atol=1e-6)
    cols_truth = np.interp(ijk[:, 1], film.vertebra_centres[:, 0], film.vertebra_centres[:, 1])
    inside = (ijk[:, 1] > film.vertebra_centres[0, 0]) & (ijk[:, 1] < film.vertebra_centres[-1, 0])
    assert np.abs(ijk[inside, 0] - cols_truth[inside]).max() < 6
    assert [n.GetNumberOfControlPoints() for n in lines] == [2, 2]
    assert "upper end vertebra" in lines[0].GetName() and "lower end vertebra" in lines[1].GetName()
    upper = np.array([volume.ras_to_ijk(lines[0].GetNthControlPointPosition(i)) for i in range(2)])
    assert upper[:, 1].mean() < np.array([volume.ras_to_ijk(lines[1].GetNthControlPointPosition(i))
                                          for i in range(2)])[:, 1].mean()
    assert float(curve.GetAttribute("SpineAI.cobb_angle_deg")) == pytest.approx(screening.cobb_deg, abs=0.01)


def test_a_volume_is_not_a_radiograph(scene, phantom_met):
    node = mrml.add_volume_node(scene, phantom_met.image, "mr")
    with pytest.raises(SpineAIError, match="must be a 2D image"):
        RadiographLogic(scene).screenRadiograph(node, forceCpu=True)
    with pytest.raises(SpineAIError, match="no radiograph selected"):
        RadiographLogic(scene).screenRadiograph(None)
