"""Annotating a cohort in Slicer: open a cohort database (``spineai cohort ... --db``), step to the
next case not yet reviewed, load its image with its current mask (a stored segmentation, else the
manifest's mask file) and seed point, and save the reviewed segmentation and label back.

The database does the bookkeeping (``spineai.cohort.CohortDB``); this class only turns its cases
into MRML nodes and back. A saved segmentation replaces the case's mask, so the next
``spineai cohort`` run recomputes that case's features and predictions, and no other case's.
"""

from __future__ import annotations

from pathlib import Path

from spineai.errors import SpineAIError

from SpineAICommon import mrml

SEGMENT_NAME = "lesion"


class CohortAnnotationLogic:
    def __init__(self, scene=None):
        import slicer

        self.scene = scene if scene is not None else slicer.mrmlScene
        self.db = None
        self.case_id: str | None = None
        self.volume = None  # the engine Volume of the loaded case: the grid a saved mask must match

    def openCohort(self, path) -> dict:
        """Open a cohort database; returns how many cases are to do / segmented / reviewed."""
        from spineai.cohort import CohortDB

        if not Path(path).is_file():
            raise SpineAIError(f"no cohort database at {path}: make one with spineai cohort MANIFEST --db {Path(path).name}")
        self.close()
        self.db = CohortDB(path)
        if not self.db.case_ids():
            self.close()
            raise SpineAIError(f"{path} holds no cases")
        return self.db.annotation_counts()

    def _require_db(self):
        if self.db is None:
            raise SpineAIError("open a cohort database first")
        return self.db

    def nextCase(self) -> str | None:
        """The next case (after the loaded one, in manifest order) that is not reviewed, or None."""
        return self._require_db().next_to_annotate(after=self.case_id)

    def loadCase(self, caseId: str):
        """(volume node, segmentation node or None, seed markups node or None) of a case."""
        import json

        import numpy as np

        from spineai.image import read_volume

        db = self._require_db()
        case = db.case_row(caseId)
        self.volume = read_volume(case["image"])
        volume_node = mrml.add_volume_node(self.scene, self.volume, caseId)
        volume_node.SetAttribute("SpineAI.cohortCase", caseId)
        mask = db.mask(caseId)
        if mask is None and case["mask"]:
            mask = (read_volume(case["mask"]).array == case["mask_label"]).astype(np.uint8)
        segmentation = None
        if mask is not None:
            segmentation = mrml.new_segmentation_node(self.scene, f"{caseId} segmentation", volume_node)
            mrml.add_mask_segment(segmentation, mask, self.volume, SEGMENT_NAME)
        points = None
        if case["seed"]:
            points = self.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode",
                                                  mrml.unique_name(self.scene, f"{caseId} seed"))
            points.AddControlPoint(*json.loads(case["seed"]), "seed")
        self.case_id = caseId
        return volume_node, segmentation, points

    def caseInfo(self, caseId: str | None = None) -> dict:
        """Status, reviewer, label and the manifest's outcome of a case (default the loaded one)."""
        row = self._require_db().case_row(caseId or self.case_id)
        return {k: row[k] for k in ("case_id", "patient_id", "annotation_status", "reviewer", "annotation_label",
                                    "outcome")}

    def saveCase(self, segmentationNode, label: str, reviewer: str, status: str = "reviewed") -> None:
        """Save the loaded case's segmentation (every segment together, on the case image's grid) and
        its label, with the reviewer's name."""
        import numpy as np

        db = self._require_db()
        if self.case_id is None:
            raise SpineAIError("load a case first")
        mask = None
        if segmentationNode is not None:
            ids = mrml.require_segments(segmentationNode, "segmentation")
            mask = np.zeros(self.volume.array.shape, np.uint8)
            for segment_id in ids:
                mask |= mrml.mask_from_segment(segmentationNode, segment_id, self.volume).astype(np.uint8)
        db.save_annotation(self.case_id, mask, label or None, reviewer, status)

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
        self.db, self.case_id, self.volume = None, None, None
