"""SpineAI radiograph logic (scoliosis screening): a 2D radiograph volume in; the probability, the
model's chosen threshold, the decision and the Cobb angle out, with the Grad-CAM map as a heat
overlay and the spine's centre line and the two end-vertebra lines as markups.

A radiograph is one slice, read by Slicer as a volume (DICOM, PNG, NIfTI). The film is checked in the
main thread (clear errors naming the node); the model runs in the background through an injected
runner (``radiograph_task``, as the image classifier does), and only a finished job creates nodes.
Nothing here touches a widget.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from spineai.errors import SpineAIError

from SpineAICommon import mrml
from SpineAICommon.jobs import JobLogic, new_job_folder, write_job
from SpineAILib import radiograph_task

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

    return registry.model_choices(TASK, registry.list_models())


class RadiographLogic(JobLogic):
    """``scene`` and ``runner``: see ``SpineAICommon.jobs.JobLogic``."""

    @staticmethod
    def listModels() -> list[tuple[str, str]]:
        return radiograph_model_entries()

    def startScreening(self, volumeNode, modelId: str | None = None, forceCpu: bool = False, method: str = "gradcam"):
        """Screen the film in the background; returns the operation to poll. The film is checked
        here (a 3D volume is refused, naming the node) before any job starts."""
        from spineai.image import write_volume
        from spineai.imaging.radiograph import radiograph_plane
        from SpineAIRadiomicsLib.logic import Operation

        volume = mrml.volume_from_node(volumeNode, "radiograph", single_slice=True)
        radiograph_plane(volume, f"radiograph '{volumeNode.GetName()}'")
        folder = new_job_folder()
        params = {"model": modelId or "", "method": method, "device": "cpu" if forceCpu else "auto"}
        write_volume(volume, folder / "film.nii")
        write_job(folder, radiograph_task.TASK, params)
        job = self.runner.start(radiograph_task.TASK, params, folder)
        name = volumeNode.GetName()
        return Operation("radiograph", job, volumeNode, volume, [name], f"{name} Grad-CAM (scoliosis)",
                         finish=self._finish)

    def _finish(self, op):
        from spineai.imaging.cobb import CobbMeasurement

        folder, volume, name = op.job.folder, op.reference, op.names[0]
        result = json.loads((folder / "result.json").read_text(encoding="utf-8"))
        heat = mrml.add_volume_node(self.scene, volume.with_array(np.load(folder / "heatmap.npy", allow_pickle=False)),
                                    op.source_name)
        heat.SetAttribute("SpineAI.heatmap", json.dumps({k: result[k] for k in ("model", "heatmap_method", "demonstration")}))
        self.showHeatmap(heat, op.volume_node)
        curve, lines = None, []
        if result.get("cobb"):
            c = result["cobb"]
            cobb = CobbMeasurement(c["angle_deg"], np.asarray(c["centre_line"]), np.asarray(c["tilts_deg"]),
                                   c["upper_end"], c["lower_end"], c["strength"])
            curve, lines = self.addCobbMarkups(volume, cobb, name)
        screening = RadiographScreening(name, result["model"], result["probability_scoliosis"], result["threshold"],
                                        result["threshold_rule"], result["scoliosis"],
                                        result["cobb"]["angle_deg"] if result.get("cobb") else None,
                                        result.get("cobb_error", ""), [result["notice"]] if result.get("notice") else [])
        return screening, heat, curve, lines

    def finish(self, op):
        """(RadiographScreening, heatmap node, centre-line curve node or None, end-vertebra line nodes)
        of a finished job; its error as SpineAIError."""
        from SpineAIRadiomicsLib.logic import RadiomicsLogic

        return RadiomicsLogic(self.scene).finish(op)

    def screenRadiograph(self, volumeNode, modelId: str | None = None, forceCpu: bool = False, method: str = "gradcam"):
        """Wait for the result (headless / batch use); returns what ``finish`` returns."""
        op = self.startScreening(volumeNode, modelId, forceCpu, method)
        op.job.wait()
        return self.finish(op)

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
        """The map as every slice view's foreground over the film (the image classifier's overlay)."""
        from SpineAILib.image_logic import ImageClassifyLogic

        ImageClassifyLogic(self.scene).showHeatmap(heatNode, backgroundNode, opacity, lower)
