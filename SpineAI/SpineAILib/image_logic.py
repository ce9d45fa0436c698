"""SpineAI image-model logic: a lesion (segment or point) in, Grad-CAM heatmap node and probabilities out.

The lesion is checked in the main thread (clear errors naming the node), the engine runs in the
background through an injected runner (``image_task``), and only a finished job creates nodes: a
heatmap volume with the source's geometry, shown as the slice views' foreground in a heat colour
map with an opacity and a lower threshold. Nothing here touches a widget.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

import slicer

from spineai.errors import SpineAIError

from SpineAICommon import mrml
from SpineAICommon.jobs import JobLogic, new_job_folder, write_job
from SpineAILib import image_task

HEAT_COLOR_ID = "vtkMRMLPETProceduralColorNodePET-Heat"  # the PET "heat" table Slicer's Colors module adds


@dataclass
class ImageClassification:
    lesion: str
    model_id: str
    probabilities: dict
    predicted_class: str
    method: str
    banners: list = field(default_factory=list)  # the demonstration notice, shown on top

    def text(self) -> str:
        lines = [f"!! {b}" for b in self.banners]
        lines.append(f"{self.lesion}: {self.predicted_class} (image model {self.model_id}, {self.method} heatmap)")
        lines += [f"  {c}: {p:.1%}" for c, p in self.probabilities.items()]
        return "\n".join(lines)


def image_model_entries() -> list[tuple[str, str]]:
    """(id@version, label) of the registry's lesion image models."""
    from spineai.imaging.lesion import TASK
    from spineai.models import registry

    return registry.model_choices(TASK, registry.list_models())


class ImageClassifyLogic(JobLogic):
    """``scene`` and ``runner``: see ``SpineAICommon.jobs.JobLogic``."""

    @staticmethod
    def listModels() -> list[tuple[str, str]]:
        return image_model_entries()

    def startImageClassification(self, volumeNode, modelId: str, segmentationNode=None, pointsNode=None,
                                 method: str = "gradcam", forceCpu: bool = False):
        """Classify the lesion given by the first segment of ``segmentationNode`` or the first point of
        ``pointsNode`` (one of the two) in the background; returns the operation to poll."""
        from spineai.image import seed_to_index, write_volume
        from SpineAIRadiomicsLib.logic import Operation

        if not modelId:
            raise SpineAIError("no image model selected: choose one from the list")
        volume = mrml.volume_from_node(volumeNode)
        if (segmentationNode is None) == (pointsNode is None or not pointsNode.GetNumberOfControlPoints()):
            raise SpineAIError("give the lesion either as a segmentation or as a point (one of the two)")
        folder = new_job_folder()
        params = {"model": modelId, "method": method, "device": "cpu" if forceCpu else "auto", "mask": False}
        if segmentationNode is not None:
            segment_id = mrml.require_segments(segmentationNode, "segmentation")[0]
            name = segmentationNode.GetSegmentation().GetSegment(segment_id).GetName()
            mask = mrml.mask_from_segment(segmentationNode, segment_id, volume)
            if not mask.any():
                raise SpineAIError(f"segment '{name}' of '{segmentationNode.GetName()}' is empty on the grid of "
                                   f"'{volumeNode.GetName()}'")
            write_volume(volume.with_array(mask.astype(np.uint8)), folder / "mask.nii")
            params["mask"] = True
        else:
            name, ras = mrml.control_points_ras(pointsNode)[0]
            try:
                seed_to_index(volume, ras)
            except SpineAIError as exc:
                raise SpineAIError(f"point '{name}' of '{pointsNode.GetName()}': {exc}") from None
            params["seed_ras"] = [float(v) for v in ras]
        write_volume(volume, folder / "image.nii")
        write_job(folder, image_task.TASK, params)
        job = self.runner.start(image_task.TASK, params, folder)
        return Operation("image", job, volumeNode, volume, [name], f"{volumeNode.GetName()} {name} heatmap",
                         finish=self._finish)

    def _finish(self, op):
        folder = op.job.folder
        result = json.loads((folder / "result.json").read_text(encoding="utf-8"))
        heat = op.reference.with_array(np.load(folder / "heatmap.npy", allow_pickle=False))
        node = mrml.add_volume_node(self.scene, heat, op.source_name)
        node.SetAttribute("SpineAI.heatmap", json.dumps({k: result[k] for k in ("model", "heatmap_method", "demonstration")}))
        self.showHeatmap(node, op.volume_node)
        return node, ImageClassification(op.names[0], result["model"], result["probabilities"], result["predicted"],
                                         result["heatmap_method"], [result["notice"]] if result["notice"] else [])

    def finish(self, op):
        """(heatmap node, ImageClassification) of a finished job; its error as SpineAIError."""
        from SpineAIRadiomicsLib.logic import RadiomicsLogic

        return RadiomicsLogic(self.scene).finish(op)

    def classify(self, volumeNode, modelId: str, segmentationNode=None, pointsNode=None, **options):
        """Wait for the result (headless / batch use)."""
        op = self.startImageClassification(volumeNode, modelId, segmentationNode, pointsNode, **options)
        op.job.wait()
        return self.finish(op)

    # ---- display ---------------------------------------------------------------------------
    def heatColorNodeId(self) -> str:
        """The heat colour table's node id; made (as Slicer's Colors module makes it) when the scene lacks it."""
        if self.scene.GetNodeByID(HEAT_COLOR_ID) is None:
            color = slicer.vtkMRMLPETProceduralColorNode()
            color.SetTypeToHeat()
            color.SetSingletonTag(color.GetTypeAsString())
            self.scene.AddNode(color)
        node = self.scene.GetNodeByID(HEAT_COLOR_ID) or self.scene.GetFirstNodeByName("PET-Heat")
        return node.GetID()

    def showHeatmap(self, heatmapNode, sourceNode, opacity: float = 0.5, threshold: float = 0.2) -> None:
        """The heatmap over the source in every slice view, in the heat colours, 0-1 window, voxels
        below ``threshold`` hidden, at ``opacity``."""
        display = heatmapNode.GetDisplayNode()
        display.SetAndObserveColorNodeID(self.heatColorNodeId())
        display.SetAutoWindowLevel(0)
        display.SetWindowLevelMinMax(0.0, 1.0)
        self.setThreshold(heatmapNode, threshold)
        for composite in self._composites():
            composite.SetBackgroundVolumeID(sourceNode.GetID())
            composite.SetForegroundVolumeID(heatmapNode.GetID())
            composite.SetForegroundOpacity(float(opacity))

    def _composites(self) -> list:
        return [self.scene.GetNthNodeByClass(n, "vtkMRMLSliceCompositeNode")
                for n in range(self.scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode"))]

    def setOpacity(self, heatmapNode, opacity: float) -> None:
        for composite in self._composites():
            if composite.GetForegroundVolumeID() == heatmapNode.GetID():
                composite.SetForegroundOpacity(float(opacity))

    @staticmethod
    def setThreshold(heatmapNode, threshold: float) -> None:
        display = heatmapNode.GetDisplayNode()
        display.SetApplyThreshold(1)
        display.SetThreshold(float(threshold), 1.0)
