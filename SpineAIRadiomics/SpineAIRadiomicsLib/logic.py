"""SpineAIRadiomics logic: MRML nodes in, engine in the background, new nodes out.

Every public call validates its inputs in the main thread first (clear ``SpineAIError`` naming the
node at fault, before any work starts), then runs the engine through an injected runner, then
creates *new* nodes from the results. Input nodes are only read; output names never clash with a
node the user has (``name_1``, ``name_2``...). Nothing here touches a widget.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from spineai.errors import SpineAIError
from spineai.image import Volume, seed_to_index

from SpineAICommon import mrml
from SpineAICommon.jobs import JobLogic, Job, new_job_folder, write_job
from SpineAIRadiomicsLib import compute

LESION_COLORS = [(0.95, 0.75, 0.1), (0.2, 0.7, 0.95), (0.9, 0.3, 0.3), (0.4, 0.85, 0.4), (0.75, 0.45, 0.9)]


@dataclass
class Operation:
    """A started background job and what is needed to turn its results into nodes."""

    kind: str  # "segment" or "extract"
    job: Job
    volume_node: object
    reference: Volume
    names: list[str]
    source_name: str
    finish: Callable[["Operation"], object] = field(repr=False, default=None)
    target: object = None  # segmentation node refined in place, if any
    details: list = field(default_factory=list)  # per structure: method, device, seconds

    def poll(self):
        return self.job.poll()

    def cancel(self) -> None:
        self.job.cancel()
        self.job.cleanup()


class RadiomicsLogic(JobLogic):
    """``scene`` and ``runner``: see ``SpineAICommon.jobs.JobLogic``."""

    # ---- segment ---------------------------------------------------------------------------
    def startSegmentation(self, volumeNode, pointsNode, mode: str = "lesion", boundingNode=None, method: str = "auto",
                          forceCpu: bool = False, addPointsNode=None, removePointsNode=None, refineNode=None) -> Operation:
        """Segment around each point of ``pointsNode``. ``method``: 'auto' (learned for vertebral bodies
        when torch and the model are there), 'deep' or 'classic'. ``addPointsNode`` / ``removePointsNode``:
        corrective clicks (learned method), each given to the nearest point's structure. ``refineNode``:
        an earlier result whose segments of the same names are replaced in place."""
        from spineai.segment import METHODS, SEGMENTATION_MODES  # light module; the heavy imports are in segment()

        if mode not in SEGMENTATION_MODES:
            raise SpineAIError(f"segmentation mode must be one of {', '.join(SEGMENTATION_MODES)}, got {mode!r}")
        if method not in METHODS:
            raise SpineAIError(f"segmentation method must be one of {', '.join(METHODS)}, got {method!r}")
        volume = mrml.volume_from_node(volumeNode)
        points = mrml.control_points_ras(pointsNode)
        lesions = []
        for label, ras in points:
            lesions.append({"name": label, "seed_ijk": list(self._index(volume, volumeNode, pointsNode, label, ras)),
                            "ras": list(ras), "add_ijk": [], "remove_ijk": []})
        for node, key in ((addPointsNode, "add_ijk"), (removePointsNode, "remove_ijk")):
            for label, ras in (mrml.control_points_ras(node) if node is not None and node.GetNumberOfControlPoints() else []):
                nearest = min(lesions, key=lambda l: float(np.sum((np.asarray(l["ras"]) - ras) ** 2)))
                nearest[key].append(list(self._index(volume, volumeNode, node, label, ras)))
        if any(l["add_ijk"] or l["remove_ijk"] for l in lesions) and (mode != "vertebral-body" or method == "classic"):
            raise SpineAIError("add / remove points refine the learned vertebral-body segmentation: choose mode "
                               "vertebral-body and method auto or deep")
        # The bounding segments are only copied here; the job resamples them onto the volume's grid.
        layers, segments = mrml.segment_layers(boundingNode) if boundingNode is not None else ([], [])
        folder = new_job_folder()
        params = {"image": compute.save_volume(folder, "image", volume), "lesions": lesions,
                  "segment": True, "extract": False, "mode": mode, "method": method,
                  "device": "cpu" if forceCpu else "auto"}
        if boundingNode is not None:
            params["within_layers"] = [compute.save_volume(folder, f"within{n}", layer) for n, layer in enumerate(layers)]
            params["within_segments"] = segments
            params["within_name"] = boundingNode.GetName()
        write_job(folder, compute.TASK, params)
        job = self.runner.start(compute.TASK, params, folder)
        return Operation("segment", job, volumeNode, volume, [l["name"] for l in lesions],
                         f"{volumeNode.GetName()} SpineAI {'lesions' if mode == 'lesion' else 'vertebral bodies'}",
                         finish=self._finishSegmentation, target=refineNode)

    @staticmethod
    def _index(volume, volumeNode, pointsNode, label, ras):
        try:
            return seed_to_index(volume, ras, "ras")
        except SpineAIError as exc:
            raise SpineAIError(
                f"point '{label}' of '{pointsNode.GetName()}' is not inside the volume '{volumeNode.GetName()}': {exc}"
            ) from None

    def _finishSegmentation(self, op: Operation):
        masks = self._results(op)[0]
        op.details = json.loads((op.job.folder / "segment_details.json").read_text(encoding="utf-8"))
        node = op.target
        if node is not None and self.scene.IsNodePresent(node):
            # Refinement: the segments of these names are replaced, the rest of the node is kept.
            segmentation = node.GetSegmentation()
            for n, name in enumerate(op.names):
                old = segmentation.GetSegmentIdBySegmentName(name)
                color = segmentation.GetSegment(old).GetColor() if old else LESION_COLORS[n % len(LESION_COLORS)]
                if old:
                    segmentation.RemoveSegment(old)
                mrml.add_mask_segment(node, masks[n], op.reference, name, color)
        else:
            node = mrml.new_segmentation_node(self.scene, op.source_name, op.volume_node)
            for n, name in enumerate(op.names):
                mrml.add_mask_segment(node, masks[n], op.reference, name, LESION_COLORS[n % len(LESION_COLORS)])
            node.SetAttribute("SpineAI.source", "SpineAIRadiomics segment")
        node.CreateClosedSurfaceRepresentation()  # else the 3D view stays empty
        return node

    @staticmethod
    def describeSegmentation(op: Operation) -> str:
        """The status line: method, device and time of each structure."""
        parts = []
        for d in getattr(op, "details", []):
            how = d.get("method", "?")
            if d.get("device"):
                how += f" ({d.get('model', '')} on {d['device']})"
            parts.append(f"{d['name']}: {how}, {d.get('seconds', 0.0):.1f} s")
        return "; ".join(parts)

    # ---- extract ---------------------------------------------------------------------------
    def startExtraction(self, volumeNode, segmentationNode, params: str = "spineai31-v1") -> Operation:
        volume = mrml.volume_from_node(volumeNode)
        ids = mrml.require_segments(segmentationNode, "segmentation")
        masks, lesions = [], []
        for segment_id in ids:
            name = segmentationNode.GetSegmentation().GetSegment(segment_id).GetName()
            mask = mrml.mask_from_segment(segmentationNode, segment_id, volume)
            if not mask.any():
                raise SpineAIError(
                    f"segment '{name}' of '{segmentationNode.GetName()}' is empty on the grid of '{volumeNode.GetName()}' "
                    "(empty segment, or drawn on another volume that does not overlap it)"
                )
            lesions.append({"name": name, "mask_index": len(masks)})
            masks.append(mask)
        folder = new_job_folder()
        np.save(folder / "masks.npy", np.stack(masks), allow_pickle=False)
        job_params = {"image": compute.save_volume(folder, "image", volume), "lesions": lesions,
                      "segment": False, "extract": True, "params": params}
        write_job(folder, compute.TASK, job_params)
        job = self.runner.start(compute.TASK, job_params, folder)
        return Operation("extract", job, volumeNode, volume, [l["name"] for l in lesions],
                         f"{volumeNode.GetName()} SpineAI features", finish=self._finishExtraction)

    def _finishExtraction(self, op: Operation):
        from spineai.radiomics import ID_COLUMN, PROVENANCE_PREFIX

        features = self._results(op)[1]
        names = list(features[0]["values"])
        prov_keys: list[str] = []
        for f in features:
            prov_keys += [k for k in f["provenance"] if k not in prov_keys]
        columns = [ID_COLUMN] + names + [PROVENANCE_PREFIX + k for k in prov_keys]
        rows = []
        for f in features:
            row = {ID_COLUMN: f["name"], **f["values"]}
            row.update({PROVENANCE_PREFIX + k: f["provenance"].get(k) for k in prov_keys})
            rows.append(row)
        node = mrml.new_table_node(self.scene, op.source_name, columns, rows, numeric=set(names))
        node.SetAttribute("SpineAI.features", json.dumps(names))
        node.SetAttribute("SpineAI.volume", op.volume_node.GetName())
        return node

    # ---- shared ----------------------------------------------------------------------------
    def finish(self, op: Operation):
        """Turn a finished job into new nodes; raises the job's error, if any, as SpineAIError."""
        status = op.poll()
        try:
            if not status.finished:
                raise SpineAIError("the task is still running")
            if status.cancelled:
                raise SpineAIError("the task was cancelled; nothing was added to the scene")
            if status.error:
                raise SpineAIError(status.error)
            if not self.scene.IsNodePresent(op.volume_node):
                raise SpineAIError(f"the volume '{op.volume_node.GetName()}' was removed from the scene while the task ran")
            return op.finish(op)
        finally:
            op.job.cleanup()

    def run(self, op: Operation, timeout: float = 600.0):
        """Wait for an operation and return its node (headless / batch use)."""
        op.job.wait(timeout)
        return self.finish(op)

    def segment(self, volumeNode, pointsNode, mode: str = "lesion", boundingNode=None, **options):
        return self.run(self.startSegmentation(volumeNode, pointsNode, mode, boundingNode, **options))

    def extract(self, volumeNode, segmentationNode, params: str = "spineai31-v1"):
        return self.run(self.startExtraction(volumeNode, segmentationNode, params))

    @staticmethod
    def _results(op: Operation):
        folder = op.job.folder
        masks = np.load(folder / "masks_out.npy", allow_pickle=False)
        features = json.loads((folder / "features.json").read_text(encoding="utf-8"))
        return masks, features

    # ---- export ----------------------------------------------------------------------------
    def exportTableToCsv(self, tableNode, path, overwrite: bool = False) -> Path:
        """Write a SpineAIRadiomics table with the engine's CSV writer (same file as ``spineai features``)."""
        from spineai.radiomics import ID_COLUMN, PROVENANCE_PREFIX, FeatureResult, write_features_csv

        if tableNode is None:
            raise SpineAIError("no feature table selected")
        names = json.loads(tableNode.GetAttribute("SpineAI.features") or "null")
        if not names:
            raise SpineAIError(f"the table '{tableNode.GetName()}' was not made by SpineAIRadiomics (no feature list)")
        columns, rows = mrml.table_rows(tableNode)
        results, ids = [], []
        for row in rows:
            provenance = {}
            for key in columns:
                if key.startswith(PROVENANCE_PREFIX):
                    text = row[key]
                    try:
                        provenance[key[len(PROVENANCE_PREFIX):]] = json.loads(text) if text else None
                    except (json.JSONDecodeError, TypeError):
                        provenance[key[len(PROVENANCE_PREFIX):]] = text
            results.append(FeatureResult(values={n: float(row[n]) for n in names}, provenance=provenance))
            ids.append(str(row.get(ID_COLUMN, "")))
        return write_features_csv(results, path, overwrite=overwrite, ids=ids)

    # ---- sample data -----------------------------------------------------------------------
    def loadPhantom(self, kind: str = "MET", seed: int = 0):
        """A generated spine phantom: volume, a point on the lesion, and the vertebral bodies
        as a segmentation (to try bounding). Returns (volumeNode, pointsNode, vertebraeNode)."""
        from spineai.phantom import LABELS, LEVELS, make_spine_phantom

        phantom = make_spine_phantom(seed=seed, lesion_kind=kind)
        volume_node = mrml.add_volume_node(self.scene, phantom.image, f"SpineAI phantom {kind}")
        points = self.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", mrml.unique_name(self.scene, "Lesion points"))
        points.CreateDefaultDisplayNodes()
        points.AddControlPoint(*phantom.lesion_center_ras, f"{kind} lesion {phantom.lesion_level}")
        vertebrae = mrml.new_segmentation_node(self.scene, f"SpineAI phantom {kind} vertebrae", volume_node)
        for n, level in enumerate(LEVELS):
            body = phantom.labels.array == LABELS[level]
            mrml.add_mask_segment(vertebrae, body, phantom.image, level, (0.9, 0.85, 0.7 - 0.1 * n))
        return volume_node, points, vertebrae
