"""SpineAILumbar: lumbar degeneration grading, per level and condition (grader not shipped yet).

Today the module checks the three series a grader reads (sagittal T1, sagittal T2/STIR, axial T2)
and says plainly that grading is not available in this version: it shows no grade.
Qt is imported inside the widget methods only, so the logic and test classes load in CI.
"""

import os
import sys


import slicer
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.parameterNodeWrapper import parameterNodeWrapper
from slicer.util import VTKObservationMixin
from slicer import vtkMRMLScalarVolumeNode


def _addSourceCheckoutPaths():
    # See SpineAIRadiomics.py: only a source checkout needs these folders added.
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)
    for path, marker in ((here, "SpineAILumbarLib"), (os.path.join(root, "src"), "spineai"), (os.path.join(root, "SpineAI"), "SpineAICommon")):
        if os.path.isdir(os.path.join(path, marker)) and path not in sys.path:
            sys.path.append(path)


_addSourceCheckoutPaths()

from spineai import RESEARCH_USE_NOTICE  # noqa: E402
from SpineAILumbarLib.logic import GRADING_UNAVAILABLE, LumbarLogic  # noqa: E402


class SpineAILumbar(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "SpineAI Lumbar"
        self.parent.categories = ["SpineAI"]
        self.parent.dependencies = []
        self.parent.contributors = ["SpineAI contributors"]
        self.parent.helpText = (
            "Lumbar degeneration grading per level and condition from sagittal T1, sagittal T2/STIR and "
            f"axial T2 series, any of which may be missing.<br><br><b>{GRADING_UNAVAILABLE}</b><br><br>"
            f"<b>{RESEARCH_USE_NOTICE}</b>"
        )
        self.parent.acknowledgementText = "Part of the SpineAI extension."


@parameterNodeWrapper
class SpineAILumbarParameterNode:
    sagittalT1: vtkMRMLScalarVolumeNode
    sagittalT2: vtkMRMLScalarVolumeNode
    axialT2: vtkMRMLScalarVolumeNode


class SpineAILumbarWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SpineAILumbar.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = SpineAILumbarLogic()
        self.ui.disclaimerLabel.text = RESEARCH_USE_NOTICE
        self.ui.gradingNoteLabel.text = GRADING_UNAVAILABLE
        self.ui.checkButton.connect("clicked(bool)", self.onCheck)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.initializeParameterNode()

    def cleanup(self):
        self.removeObservers()

    def enter(self):
        self.initializeParameterNode()

    def exit(self):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None

    def onSceneStartClose(self, caller, event):
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())

    def setParameterNode(self, parameterNode):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
        self._parameterNode = parameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)

    def onCheck(self):
        p = self._parameterNode
        report = self.logic.assessInputs(p.sagittalT1, p.sagittalT2, p.axialT2)
        self.ui.reportTextEdit.plainText = report.text()
        present = len(report.present)
        self.ui.statusLabel.text = f"{present} of 3 series usable; grading not available in this version."


class SpineAILumbarLogic(ScriptedLoadableModuleLogic, LumbarLogic):
    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)

    def getParameterNode(self):
        return SpineAILumbarParameterNode(super().getParameterNode())


class SpineAILumbarTest(ScriptedLoadableModuleTest):
    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_report_with_missing_series()

    def test_report_with_missing_series(self):
        from spineai.phantom import make_spine_phantom

        from SpineAICommon import mrml

        phantom = make_spine_phantom(seed=2, lesion_kind=None)
        sagittal = mrml.add_volume_node(slicer.mrmlScene, phantom.image, "sag T2")
        report = SpineAILumbarLogic().assessInputs(sagittalT2=sagittal)
        self.assertEqual(report.present, ["sagittalT2"])
        self.assertEqual(report.missing, ["sagittalT1", "axialT2"])
        self.assertIn("not available in this version", report.text())
        self.delayDisplay("SpineAILumbar: series check passed")
