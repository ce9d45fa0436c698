"""Annotating a cohort in Slicer: open a cohort database (``spineai cohort ... --db``), step to the
next case not yet reviewed, load its image with its current mask (a stored segmentation, else the
manifest's mask file) and seed point, and save the reviewed segmentation and label back.

The database does the bookkeeping (``spineai.cohort.CohortDB``); CohortAnnotationLogic only turns
its cases into MRML nodes and back, CohortAnnotationPanel is the panel's "Cohort annotation"
section. A saved segmentation replaces the case's mask, so the next ``spineai cohort`` run
recomputes that case's features and predictions, and no other case's.
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
        self.caseNodes: list = []  # the nodes loadCase added for the loaded case

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

    def nextCase(self, after: str | None = None) -> str | None:
        """The next case (after ``after``, default the loaded one, in manifest order) that is not
        reviewed, or None."""
        return self._require_db().next_to_annotate(after=after or self.case_id)

    def loadCase(self, caseId: str):
        """(volume node, segmentation node or None, seed markups node or None) of a case."""
        import json

        import numpy as np

        from spineai.image import read_volume

        db = self._require_db()
        case = db.case_row(caseId)
        volume = read_volume(case["image"])
        mask = db.mask(caseId)
        if mask is None and case["mask"]:
            mask = (read_volume(case["mask"]).array == case["mask_label"]).astype(np.uint8)
        added = []  # a case that fails to load leaves nothing in the scene
        try:
            volume_node = mrml.add_volume_node(self.scene, volume, caseId)
            added.append(volume_node)
            volume_node.SetAttribute("SpineAI.cohortCase", caseId)
            segmentation = None
            if mask is not None:
                segmentation = mrml.new_segmentation_node(self.scene, f"{caseId} segmentation", volume_node)
                added.append(segmentation)
                mrml.add_mask_segment(segmentation, mask, volume, SEGMENT_NAME)
            points = None
            if case["seed"]:
                points = self.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode",
                                                      mrml.unique_name(self.scene, f"{caseId} seed"))
                added.append(points)
                points.AddControlPoint(*json.loads(case["seed"]), "seed")
        except BaseException:
            for node in added:
                self.scene.RemoveNode(node)
            raise
        self.case_id, self.volume, self.caseNodes = caseId, volume, added
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

    def forgetCase(self) -> None:
        """No case is loaded any more (its nodes left the scene)."""
        self.case_id, self.volume, self.caseNodes = None, None, []

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
        self.db = None
        self.forgetCase()


REVIEWER_SETTING = "SpineAI/cohortReviewer"


class CohortAnnotationPanel:
    """The panel's "Cohort annotation" section: open a database, load the next case into the panel's
    own selectors (so Segment / Refine / the Segment Editor work on it), save it back as reviewed.
    Errors go to the widget's status line. Qt is imported in the methods (the logic loads without it)."""

    def __init__(self, widget):
        import qt

        import slicer

        self.widget, self.ui = widget, widget.ui
        self.logic = CohortAnnotationLogic(slicer.mrmlScene)
        self.failedCase = None  # a case that failed to load: Next goes on from it
        self.ui.cohortReviewerLineEdit.text = qt.QSettings().value(REVIEWER_SETTING, "") or ""
        self.ui.cohortOpenButton.connect("clicked(bool)", self.onOpen)
        self.ui.cohortNextButton.connect("clicked(bool)", self.onNext)
        self.ui.cohortSaveButton.connect("clicked(bool)", self.onSave)

    def updateButtons(self, busy: bool) -> None:
        self.ui.cohortNextButton.enabled = self.logic.db is not None and not busy
        self.ui.cohortSaveButton.enabled = self.logic.case_id is not None and not busy

    def _showCounts(self):
        counts = self.logic.db.annotation_counts()
        self.ui.cohortCountsLabel.text = ", ".join(f"{n} {status}" for status, n in counts.items())

    def onOpen(self):
        path = self.ui.cohortPathLineEdit.currentPath
        try:
            if not path:
                raise SpineAIError("choose a cohort database (made by spineai cohort MANIFEST --db RESULTS.sqlite)")
            self.logic.openCohort(path)
        except SpineAIError as exc:
            self.ui.cohortCountsLabel.text = "No cohort open."
            self.widget._status(str(exc), error=True)
        else:
            self.failedCase = None
            self._showCounts()
            self.widget._status(f"opened cohort {path}: press Next case")
        self.widget._updateButtons()

    def onNext(self):
        self.loadNext()

    def loadNext(self, saved: str = "") -> None:
        import slicer

        caseId = None
        try:
            # after a case that failed to load, go on from it (back to it when it is the last one left)
            caseId = self.logic.nextCase(after=self.failedCase) or self.failedCase
            if caseId is None:
                self.widget._status(f"{saved}every case of the cohort is reviewed")
                return
            with slicer.util.WaitCursor():
                volume, segmentation, points = self.logic.loadCase(caseId)
            self.failedCase = None
        except SpineAIError as exc:
            self.failedCase = caseId
            self.widget._status(f"{saved}case {caseId}: {exc}" if caseId else f"{saved}{exc}", error=True)
            return
        finally:
            self.widget._updateButtons()
        p = self.widget._parameterNode
        p.useExistingSegmentation = False
        p.inputVolume, p.lesionPoints, p.outputSegmentation = volume, points, segmentation
        slicer.util.setSliceViewerLayers(background=volume, fit=True)
        info = self.logic.caseInfo()
        self.ui.cohortLabelLineEdit.text = info["annotation_label"] or info["outcome"] or ""
        mask = "its segmentation" if segmentation is not None else "no segmentation yet"
        self.widget._status(f"{saved}loaded case {caseId} (patient {info['patient_id']}, "
                            f"{info['annotation_status']}): {mask}")

    def onSave(self):
        import qt

        p = self.widget._parameterNode
        segmentation = p.inputSegmentation if p.useExistingSegmentation else p.outputSegmentation
        reviewer = self.ui.cohortReviewerLineEdit.text.strip()
        caseId, loaded = self.logic.case_id, self.logic.caseNodes
        try:
            self.logic.saveCase(segmentation, self.ui.cohortLabelLineEdit.text.strip(), reviewer)
        except SpineAIError as exc:
            self.widget._status(str(exc), error=True)
            return
        qt.QSettings().setValue(REVIEWER_SETTING, reviewer)
        self._showCounts()
        # The case is in the database now: the nodes loaded for it leave the scene, so that a long
        # session does not hold every case in memory. Nodes the user made (a new segmentation) stay.
        for node in loaded:
            if self.logic.scene.IsNodePresent(node):
                self.logic.scene.RemoveNode(node)
        self.logic.forgetCase()
        self.loadNext(saved=f"saved case {caseId} as reviewed by {reviewer}; ")
