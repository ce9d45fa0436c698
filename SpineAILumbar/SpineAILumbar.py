"""SpineAILumbar: lumbar degeneration grading per level and condition (RSNA 2024 conditions).

Assign the loaded series to their roles (Detect series reads their DICOM series descriptions; any
role may stay empty), press Grade: the engine grades in a background process (progress, Cancel),
then the panel shows the probabilities per level and condition with the most likely grade
highlighted, point lists at the levels coloured by their worst grade, and a Grad-CAM heatmap per
series as the foreground layer. A demonstration model's results carry its banner everywhere.
Qt is imported inside the widget methods only, so the logic and test classes load in CI.
"""

import os
import sys

import vtk

import slicer
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.parameterNodeWrapper import parameterNodeWrapper
from slicer.util import VTKObservationMixin
from slicer import vtkMRMLMarkupsFiducialNode, vtkMRMLScalarVolumeNode


def _addSourceCheckoutPaths():
    # See SpineAIRadiomics.py: only a source checkout needs these folders added.
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)
    for path, marker in ((here, "SpineAILumbarLib"), (os.path.join(root, "src"), "spineai"), (os.path.join(root, "SpineAI"), "SpineAICommon")):
        if os.path.isdir(os.path.join(path, marker)) and path not in sys.path:
            sys.path.append(path)


_addSourceCheckoutPaths()

from spineai import RESEARCH_USE_NOTICE  # noqa: E402
from spineai.errors import SpineAIError  # noqa: E402
from SpineAILumbarLib.logic import LumbarLogic, results_html  # noqa: E402


class SpineAILumbar(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "SpineAI Lumbar"
        self.parent.categories = ["SpineAI"]
        self.parent.dependencies = []
        self.parent.contributors = ["SpineAI contributors"]
        self.parent.helpText = (
            "Lumbar degeneration grading (spinal canal, left/right neural foraminal and subarticular stenosis at "
            "L1/L2-L5/S1; Normal/Mild, Moderate, Severe) from sagittal T1, sagittal T2/STIR and axial T2 series, "
            "any of which may be missing. The shipped model is a DEMONSTRATION trained on synthetic studies."
            f"<br><br><b>{RESEARCH_USE_NOTICE}</b>"
        )
        self.parent.acknowledgementText = "Part of the SpineAI extension."


@parameterNodeWrapper
class SpineAILumbarParameterNode:
    sagittalT1: vtkMRMLScalarVolumeNode
    sagittalT2: vtkMRMLScalarVolumeNode
    axialT2: vtkMRMLScalarVolumeNode
    levelPoints: vtkMRMLMarkupsFiducialNode
    forceCpu: bool = False


class SpineAILumbarWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._operation = None
        self._installer = None

    def setup(self):
        import qt

        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SpineAILumbar.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        from SpineAICommon.jobs import ProcessRunner

        self.logic = SpineAILumbarLogic(runner=ProcessRunner())
        self.ui.disclaimerLabel.text = RESEARCH_USE_NOTICE
        self.ui.checkButton.connect("clicked(bool)", self.onCheck)
        self.ui.detectButton.connect("clicked(bool)", self.onDetect)
        self.ui.gradeButton.connect("clicked(bool)", self.onGrade)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.timer = qt.QTimer()
        self.timer.setInterval(100)
        self.timer.connect("timeout()", self._poll)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.initializeParameterNode()

    def cleanup(self):
        self.onCancel()
        self.removeObservers()

    def enter(self):
        self.initializeParameterNode()

    def exit(self):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)

    def onSceneStartClose(self, caller, event):
        self.onCancel()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())
        p = self._parameterNode
        if not (p.sagittalT1 or p.sagittalT2 or p.axialT2):
            self.onDetect()

    def setParameterNode(self, parameterNode):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)
        self._parameterNode = parameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)
            self._updateButtons()

    def _updateButtons(self, caller=None, event=None):
        p, busy = self._parameterNode, self._operation is not None
        self.ui.gradeButton.enabled = bool(p and (p.sagittalT1 or p.sagittalT2 or p.axialT2) and not busy)
        self.ui.cancelButton.enabled = busy
        self.ui.detectButton.enabled = not busy

    def _status(self, text, error=False):
        color = "#b00020" if error else "#202020"
        self.ui.statusLabel.text = f'<span style="color:{color}">{text}</span>'
        slicer.util.showStatusMessage(text, 5000)

    # ---- actions -----------------------------------------------------------------------------
    def onDetect(self):
        found = self.logic.detectRoles()
        p = self._parameterNode
        p.sagittalT1, p.sagittalT2, p.axialT2 = found["sagittalT1"], found["sagittalT2"], found["axialT2"]
        named = [n.GetName() for n in found.values() if n is not None]
        self._status(f"detected {len(named)} of 3 series from their descriptions" + (f": {', '.join(named)}" if named else ""))

    def onCheck(self):
        p = self._parameterNode
        report = self.logic.assessInputs(p.sagittalT1, p.sagittalT2, p.axialT2)
        self.ui.reportTextEdit.plainText = report.text()
        self.ui.statusLabel.text = f"{len(report.present)} of 3 series usable; grading uses the series present."

    def onGrade(self):
        from SpineAICommon.dependencies import slicer_dependency_installer

        p = self._parameterNode
        try:
            if self._installer is None:
                self._installer = slicer_dependency_installer(progress=self._showProgress)
            with slicer.util.WaitCursor():
                self._installer.ensure("segment", "deep")
            self._operation = self.logic.startGrading(p.sagittalT1, p.sagittalT2, p.axialT2, p.levelPoints,
                                                      forceCpu=p.forceCpu)
        except SpineAIError as exc:
            self._status(str(exc), error=True)
            return
        self._status("grading... (you can keep using Slicer; Cancel stops it)")
        self._updateButtons()
        self.timer.start()

    def _showProgress(self, done, total, message=""):
        self.ui.progressBar.maximum = max(int(total), 1)
        self.ui.progressBar.value = int(done)
        self.ui.progressBar.format = message or "%p%"

    def _poll(self):
        op = self._operation
        status = op.poll()
        self._showProgress(status.done, status.total, status.message)
        if not status.finished:
            return
        self.timer.stop()
        self._operation = None
        try:
            nodes = self.logic.finish(op)
        except SpineAIError as exc:
            self._status(str(exc), error=True)
        else:
            self.showResults(nodes)
        self._updateButtons()

    def showResults(self, nodes):
        self.ui.bannerLabel.text = nodes.banner
        self.ui.bannerLabel.visible = bool(nodes.banner)
        self.ui.resultsBrowser.html = results_html(nodes.result)
        self.ui.reportTextEdit.plainText = nodes.text()
        shown = nodes.heatmaps.get("sagittalT2") or next(iter(nodes.heatmaps.values()), None)
        if shown is not None:
            background = self.logic.seriesNode(shown)
            slicer.util.setSliceViewerLayers(background=background, foreground=shown, foregroundOpacity=0.4)
        self._status(f"graded: table '{nodes.table.GetName()}', {len(nodes.points)} point list(s), "
                     f"{len(nodes.heatmaps)} heatmap(s)")

    def onCancel(self):
        if self._operation is not None:
            self._operation.cancel()
            self._operation = None
            self.timer.stop()
            self._status("cancelled: nothing was added to the scene")
            self._updateButtons()


class SpineAILumbarLogic(ScriptedLoadableModuleLogic, LumbarLogic):
    def __init__(self, scene=None, runner=None):
        ScriptedLoadableModuleLogic.__init__(self)
        LumbarLogic.__init__(self, scene, runner)

    def getParameterNode(self):
        return SpineAILumbarParameterNode(super().getParameterNode())


class SpineAILumbarTest(ScriptedLoadableModuleTest):
    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_grade_synthetic_study_without_axial()

    def test_grade_synthetic_study_without_axial(self):
        import tempfile

        from spineai.lumbar.study import open_rsna, read_rsna_study
        from spineai.lumbar.synthetic import generate_dataset

        from SpineAICommon import mrml

        root = generate_dataset(os.path.join(tempfile.mkdtemp(), "lumbar"), 1, seed=3)
        study = read_rsna_study(open_rsna(root), "1000")
        t1 = mrml.add_volume_node(slicer.mrmlScene, study.series["sagittal_t1"].volume, "Sagittal T1")
        t2 = mrml.add_volume_node(slicer.mrmlScene, study.series["sagittal_t2"].volume, "Sagittal T2/STIR")
        logic = SpineAILumbarLogic()
        found = logic.detectRoles()
        self.assertIs(found["sagittalT1"], t1)
        self.assertIsNone(found["axialT2"])
        from spineai.lumbar.preprocess import DISC_TO_CANAL_MM

        points = logic.levelPointsFromDiscs({lv: p - [0, DISC_TO_CANAL_MM, 0] for lv, p in study.levels.items()})
        nodes = logic.grade(t1, t2, None, levelPoints=points)
        self.assertEqual(nodes.table.GetNumberOfRows(), 25)
        self.assertIn("DEMONSTRATION", nodes.banner)
        self.delayDisplay("SpineAILumbar: grading without an axial series passed")
