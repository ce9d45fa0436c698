"""SpineAI radiograph logic (scoliosis screening): a 2D radiograph volume in; the probability, the
model's chosen threshold, the decision and the Cobb angle out, with the Grad-CAM map as a heat
overlay and the spine's centre line and the two end-vertebra lines as markups.

A radiograph is one slice, read by Slicer as a volume (DICOM, PNG, NIfTI). One film takes a fraction
of a second on a CPU (benchmarks/bench_radiograph.py), so it runs in the main thread. Nothing here
touches a widget.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

import slicer

from spineai.errors import SpineAIError

from SpineAICommon import mrml

HEAT_COLOR_ID = "vtkMRMLPETProceduralColorNodePET-Heat"  # the PET "heat" table of Slicer's Colors module
CENTRE_LINE_POINTS = 24  # control points of the centre-line curve: enough to follow an S curve


@dataclass
class RadiographScreening:
    film: str
    model_id: str
    probability: float
    threshold: float
    threshold_rule: str
    scoliosis: bool
    cobb_deg: float | None
    cobb_error: str
    banners: list = field(default_factory=list)  # the demonstration notice, shown on top

    def text(self) -> str:
        lines = [f"!! {b}" for b in self.banners]
        verdict = "scoliosis" if self.scoliosis else "no scoliosis"
        lines.append(f"{self.film}: {verdict} (model {self.model_id})")
        lines.append(f"  P(scoliosis) {self.probability:.1%}, threshold {self.threshold:.1%} ({self.threshold_rule})")
        lines.append(f"  Cobb angle {self.cobb_deg:.1f} deg" if self.cobb_deg is not None else
                     f"  no Cobb angle: {self.cobb_error}")
        return "\n".join(lines)


def radiograph_model_entries() -> list[tuple[str, str]]:
    """(id@version, label) of the registry's scoliosis radiograph models."""
    from spineai.imaging.radiograph_classifier import TASK
    from spineai.models import registry

    out = []
    for e in registry.list_models():
        if e.get("task") == TASK:
            label = f"{e['id']} {e['version']}" + (" (demonstration)" if e.get("demonstration") else "")
            out.append((f"{e['id']}@{e['version']}", label))
    return out


class RadiographLogic:
    """``scene`` defaults to ``slicer.mrmlScene``."""

    def __init__(self, scene=None):
        self._scene = scene
        self._bundles = {}

    @property
    def scene(self):
        return self._scene if self._scene is not None else slicer.mrmlScene

    @staticmethod
    def listModels() -> list[tuple[str, str]]:
        return radiograph_model_entries()

    def loadModel(self, modelId: str | None, forceCpu: bool = False):
        from spineai.imaging.radiograph_classifier import load_radiograph_model

        key = (modelId or "", forceCpu)
        if key not in self._bundles:  # verified (sha256) once per session
            self._bundles[key] = load_radiograph_model(modelId or None, "cpu" if forceCpu else None)
        return self._bundles[key]

    def screenRadiograph(self, volumeNode, modelId: str | None = None, forceCpu: bool = False, method: str = "gradcam"):
        """(RadiographScreening, heatmap node, centre-line curve node or None, end-vertebra line nodes)."""
        from spineai.imaging.radiograph import radiograph_plane
        from spineai.imaging.radiograph_classifier import DEMONSTRATION_NOTICE, classify_radiograph

        volume = mrml.volume_from_node(volumeNode, "radiograph", single_slice=True)
        radiograph_plane(volume, f"radiograph '{volumeNode.GetName()}'")  # before loading a model
        bundle = self.loadModel(modelId, forceCpu)
        result = classify_radiograph(bundle, volume, method=method)
        name = volumeNode.GetName()
        heat = mrml.add_volume_node(self.scene, result.heatmap_volume, f"{name} Grad-CAM (scoliosis)")
        heat.SetAttribute("SpineAI.heatmap", json.dumps({"model": result.model, "heatmap_method": method,
                                                         "demonstration": result.demonstration}))
        self.showHeatmap(heat, volumeNode)
        curve, lines = None, []
        if result.cobb is not None:
            curve, lines = self.addCobbMarkups(volume, result.cobb, name)
        screening = RadiographScreening(name, result.model, result.probability, result.threshold, result.threshold_rule,
                                        result.decision, None if result.cobb is None else result.cobb.angle_deg,
                                        result.cobb_error, [DEMONSTRATION_NOTICE] if result.demonstration else [])
        return screening, heat, curve, lines

    def addCobbMarkups(self, volume, cobb, name: str):
        """The centre line as a curve and the end vertebrae as two lines, in RAS on the film's plane."""
        def ras(row_col):
            r, c = row_col
            return [float(v) for v in volume.ijk_to_ras((float(c), float(r), 0.0))]

        plane_kji = volume.array.shape
        if plane_kji[0] != 1:
            raise SpineAIError("the Cobb markups need the radiograph as one slice along k")
        line = cobb.centre_line
        curve = self.scene.AddNewNodeByClass("vtkMRMLMarkupsCurveNode", mrml.unique_name(self.scene, f"{name} spine centre line"))
        for idx in np.unique(np.linspace(0, len(line) - 1, CENTRE_LINE_POINTS).round().astype(int)):
            curve.AddControlPoint(*ras(line[idx]))
        curve.SetLocked(True)
        lines = []
        half = 0.08 * volume.array.shape[2]
        for label, seg in zip(("upper", "lower"), cobb.end_vertebra_lines(half)):
            node = self.scene.AddNewNodeByClass("vtkMRMLMarkupsLineNode", mrml.unique_name(self.scene, f"{name} {label} end vertebra"))
            node.AddControlPoint(*ras(seg[0]))
            node.AddControlPoint(*ras(seg[1]))
            node.SetLocked(True)
            lines.append(node)
        curve.SetAttribute("SpineAI.cobb_angle_deg", f"{cobb.angle_deg:.2f}")
        return curve, lines

    def showHeatmap(self, heatNode, backgroundNode, opacity: float = 0.4, lower: float = 0.2) -> None:
        """The map as every slice view's foreground over the film, in the heat colours, values below
        ``lower`` transparent."""
        display = heatNode.GetDisplayNode()
        if self.scene.GetNodeByID(HEAT_COLOR_ID) is not None:
            display.SetAndObserveColorNodeID(HEAT_COLOR_ID)
        display.SetAutoWindowLevel(False)
        display.SetWindowLevelMinMax(0.0, 1.0)
        display.SetApplyThreshold(True)
        display.SetLowerThreshold(lower)
        display.SetUpperThreshold(1.0)
        for composite in self._composites():
            composite.SetBackgroundVolumeID(backgroundNode.GetID())
            composite.SetForegroundVolumeID(heatNode.GetID())
            composite.SetForegroundOpacity(opacity)

    def _composites(self):
        nodes = self.scene.GetNodesByClass("vtkMRMLSliceCompositeNode")
        nodes.UnRegister(None)
        return [nodes.GetItemAsObject(i) for i in range(nodes.GetNumberOfItems())]
