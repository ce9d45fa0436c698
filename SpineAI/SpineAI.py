"""SpineAI: classify a spine lesion (SD / MET / STB) with a model bundle from the registry.

Thin adapter over SpineAILib.logic and the `spineai` engine. Qt is imported inside widget methods
only, so the logic and test classes also load in CI (slicer-core, no Qt).
"""

import os
import sys
from typing import Annotated

import vtk

import slicer
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.util import VTKObservationMixin
from slicer import vtkMRMLMarkupsFiducialNode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode, vtkMRMLTableNode


def _addSourceCheckoutPaths():
    # See SpineAIRadiomics.py: only a source checkout needs these folders added.
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)
    for path, marker in ((here, "SpineAILib"), (os.path.join(root, "src"), "spineai"), (os.path.join(root, "SpineAIRadiomics"), "SpineAIRadiomicsLib")):
        if os.path.isdir(os.path.join(path, marker)) and path not in sys.path:
            sys.path.append(path)


_addSourceCheckoutPaths()

from spineai import RESEARCH_USE_NOTICE  # noqa: E402
from spineai.errors import SpineAIError  # noqa: E402
from SpineAILib.logic import ClassifyLogic  # noqa: E402


class SpineAI(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "SpineAI"
        self.parent.categories = ["SpineAI"]
        self.parent.dependencies = []
        self.parent.contributors = ["SpineAI contributors"]
        self.parent.helpText = (
            "Classify a spine lesion as spondylodiscitis (SD), metastasis (MET) or tuberculous spondylitis "
            "(STB) from its 31 radiomic features, with a model from the registry or a bundle file. The panel "
            "shows the class probabilities, the features that weighed most, a banner when the model is a "
            "demonstration or was trained on other feature definitions, and whether the case lies outside "
            "the model's training data. An image model (SD / MET / STB from sagittal MR slices through the lesion, "
            "given by its segment or a point) runs beside it and shows a Grad-CAM heatmap over the image. A frontal "
            "radiograph (one-slice volume) is screened for scoliosis: probability, threshold, Cobb angle, heatmap, markups."
            f"<br><br><b>{RESEARCH_USE_NOTICE}</b>"
        )
        self.parent.acknowledgementText = "Part of the SpineAI extension."


@parameterNodeWrapper
class SpineAIParameterNode:
    useTable: bool = False
    inputVolume: vtkMRMLScalarVolumeNode
    inputSegmentation: vtkMRMLSegmentationNode
    inputTable: vtkMRMLTableNode
    tableRow: Annotated[int, WithinRange(1, 100000)] = 1
    modelId: str = ""
    forceCpu: bool = False
    inputPoints: vtkMRMLMarkupsFiducialNode
    imageModelId: str = ""
    heatmapMethod: Annotated[str, Choice(["gradcam", "gradcam++"])] = "gradcam"
    heatmapOpacity: Annotated[float, WithinRange(0.0, 1.0)] = 0.5
    heatmapThreshold: Annotated[float, WithinRange(0.0, 1.0)] = 0.2
    radiographVolume: vtkMRMLScalarVolumeNode
    radiographModelId: str = ""


class SpineAIWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._operation = None
        self._imageOperation = None
        self._heatmapNode = None
        self._installer = None

    def setup(self):
        import qt

        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SpineAI.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = SpineAILogic()
        self.ui.disclaimerLabel.text = RESEARCH_USE_NOTICE
        self.ui.classifyButton.connect("clicked(bool)", self.onClassify)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.ui.modelFileButton.connect("clicked(bool)", self.onModelFile)
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.onModelChosen)
        self.ui.imageModelComboBox.connect("currentIndexChanged(int)", self.onImageModelChosen)
        self.ui.classifyImageButton.connect("clicked(bool)", self.onClassifyImage)
        self.ui.heatmapOpacitySlider.connect("valueChanged(double)", self.onHeatmapDisplay)
        self.ui.heatmapThresholdSlider.connect("valueChanged(double)", self.onHeatmapDisplay)
        self.timer = qt.QTimer()
        self.timer.setInterval(100)
        self.timer.connect("timeout()", self._poll)
        from SpineAILib.radiograph_panel import RadiographSection

        self.radiograph = RadiographSection(self)  # the "Radiograph (scoliosis screening)" section
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.initializeParameterNode()

    def cleanup(self):
        self.onCancel()
        self.removeObservers()

    def enter(self):
        self.initializeParameterNode()
        self._fillModels()

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
        p, busy = self._parameterNode, any(op is not None for op in (self._operation, self._imageOperation, self.radiograph.operation))
        ready = bool(p and p.modelId and (p.inputTable if p.useTable else (p.inputVolume and p.inputSegmentation)))
        self.ui.classifyButton.enabled = ready and self._operation is None
        lesion = bool(p and p.inputVolume and (p.inputSegmentation or (p.inputPoints and p.inputPoints.GetNumberOfControlPoints())))
        self.ui.classifyImageButton.enabled = bool(p and p.imageModelId and lesion and self._imageOperation is None)
        self.radiograph.updateButtons(p)
        self.ui.cancelButton.enabled = busy
        for name in ("inputVolumeSelector", "inputSegmentationSelector"):
            getattr(self.ui, name).enabled = not (p and p.useTable)
        for name in ("inputTableSelector", "tableRowSpinBox"):
            getattr(self.ui, name).enabled = bool(p and p.useTable)

    def _status(self, text, error=False):
        color = "#b00020" if error else "#202020"
        self.ui.statusLabel.text = f'<span style="color:{color}">{text}</span>'

    def _ensureDependencies(self, *tasks):
        from SpineAICommon.dependencies import slicer_dependency_installer

        if self._installer is None:
            self._installer = slicer_dependency_installer()
        with slicer.util.WaitCursor():
            self._installer.ensure(*tasks)

    # ---- model choice ------------------------------------------------------------------------
    def _fillModels(self):
        combo = self.ui.modelComboBox
        combo.blockSignals(True)
        combo.clear()
        combo.addItem("(choose a model)", "")
        try:
            for model_id, label in self.logic.listModels():
                combo.addItem(label, model_id)
        except (SpineAIError, ImportError, AttributeError) as exc:
            self._status(f"model registry unavailable: {exc}", error=True)
        if self._parameterNode and self._parameterNode.modelId and combo.findData(self._parameterNode.modelId) < 0:
            combo.addItem(os.path.basename(self._parameterNode.modelId), self._parameterNode.modelId)
        combo.setCurrentIndex(max(combo.findData(self._parameterNode.modelId if self._parameterNode else ""), 0))
        combo.blockSignals(False)
        images = self.ui.imageModelComboBox
        images.blockSignals(True)
        images.clear()
        images.addItem("(choose an image model)", "")
        try:
            for model_id, label in self.logic.image().listModels():
                images.addItem(label, model_id)
        except (SpineAIError, ImportError, AttributeError) as exc:
            self._status(f"model registry unavailable: {exc}", error=True)
        images.setCurrentIndex(max(images.findData(self._parameterNode.imageModelId if self._parameterNode else ""), 0))
        images.blockSignals(False)
        self.radiograph.fillModels()

    def onImageModelChosen(self, index):
        self._parameterNode.imageModelId = self.ui.imageModelComboBox.itemData(index) or ""

    def onModelChosen(self, index):
        self._selectModel(self.ui.modelComboBox.itemData(index) or "")

    def onModelFile(self):
        import qt

        path = qt.QFileDialog.getOpenFileName(None, "Model bundle", "", "Model bundle (*.zip model.json)")
        if path:
            path = os.path.dirname(path) if os.path.basename(path) == "model.json" else path
            self._selectModel(path)
            self._fillModels()

    def _selectModel(self, model_id):
        self._parameterNode.modelId = model_id
        self.ui.modelCardLabel.text = "No model loaded."
        if not model_id:
            return
        try:
            self._ensureDependencies("classify")
            bundle = self.logic.loadModel(model_id)
        except SpineAIError as exc:
            self._status(str(exc), error=True)
            return
        card = bundle.card
        self.ui.modelCardLabel.text = (
            f"{bundle.id or model_id} {bundle.version}: classes {', '.join(bundle.classes)}; features "
            f"'{bundle.feature_definition}'; runs on {self.logic.device(bundle)}. "
            f"{card.get('intended_use', '')}")
        self._status(f"model loaded (sha256 verified): {bundle.source}")

    # ---- classify ----------------------------------------------------------------------------
    def onClassify(self):
        p = self._parameterNode
        self.logic.forceCpu = p.forceCpu
        try:
            self._ensureDependencies("classify", *(() if p.useTable else ("radiomics",)))
            bundle = self.logic.loadModel(p.modelId)
            if p.useTable:
                self._show([self.logic.classifyTableRow(bundle, p.inputTable, p.tableRow - 1)])
                return
            from SpineAICommon.jobs import ProcessRunner

            self._operation = self.logic.radiomics(ProcessRunner()).startExtraction(p.inputVolume, p.inputSegmentation)
        except SpineAIError as exc:
            self._status(str(exc), error=True)
            return
        self._status("extracting features in the background...")
        self._updateButtons()
        self.timer.start()

    # ---- image model and heatmap -------------------------------------------------------------
    def onClassifyImage(self):
        from SpineAICommon.jobs import ProcessRunner

        p = self._parameterNode
        try:
            self._ensureDependencies("classify", "deep")
            self._imageOperation = self.logic.image(ProcessRunner()).startImageClassification(
                p.inputVolume, p.imageModelId, segmentationNode=p.inputSegmentation,
                pointsNode=None if p.inputSegmentation else p.inputPoints, method=p.heatmapMethod, forceCpu=p.forceCpu)
        except SpineAIError as exc:
            self._status(str(exc), error=True)
            return
        self._status("classifying the image in the background...")
        self._updateButtons()
        self.timer.start()

    def _pollImage(self):
        status = self._imageOperation.poll()
        if not status.finished:
            return False
        op, self._imageOperation = self._imageOperation, None
        try:
            self._heatmapNode, result = self.logic.image().finish(op)
            p = self._parameterNode
            self.logic.image().showHeatmap(self._heatmapNode, op.volume_node, p.heatmapOpacity, p.heatmapThreshold)
            self.ui.imageBannerLabel.text = "\n".join(result.banners)
            self.ui.imageBannerLabel.visible = bool(result.banners)
            self.ui.imageResultTextEdit.plainText = result.text()
            self._status(f"heatmap '{self._heatmapNode.GetName()}' shown over the image")
        except SpineAIError as exc:
            self._status(str(exc), error=True)
        return True

    def onHeatmapDisplay(self, value=None):
        if self._heatmapNode is not None and self._parameterNode:
            self.logic.image().setOpacity(self._heatmapNode, self._parameterNode.heatmapOpacity)
            self.logic.image().setThreshold(self._heatmapNode, self._parameterNode.heatmapThreshold)

    def _poll(self):
        if self._imageOperation is not None and self._pollImage():
            self._updateButtons()
        if self._operation is None:
            if self._imageOperation is None:
                self.timer.stop()
            return
        status = self._operation.poll()
        self.ui.progressBar.maximum, self.ui.progressBar.value = max(status.total, 1), status.done
        if not status.finished:
            return
        if self._imageOperation is None:
            self.timer.stop()
        op, self._operation = self._operation, None
        try:
            table = self.logic.radiomics().finish(op)
            bundle = self.logic.loadModel(self._parameterNode.modelId)
            self._show([self.logic.classifyTableRow(bundle, table, row) for row in range(table.GetNumberOfRows())])
        except SpineAIError as exc:
            self._status(str(exc), error=True)
        self._updateButtons()

    def _show(self, results):
        banners = sorted({b for r in results for b in r.banners})
        self.ui.bannerLabel.text = "\n".join(banners)
        self.ui.bannerLabel.visible = bool(banners)
        outside = [r.case_id for r in results if not r.in_distribution]
        self.ui.oodLabel.text = (
            f'<span style="color:#b00020"><b>Outside the training data:</b> {", ".join(outside)}: do not trust these predictions</span>'
            if outside else "All cases lie inside the model's training data.")
        self.ui.resultTextEdit.plainText = "\n\n".join(r.text() for r in results)
        self._status(f"classified {len(results)} lesion(s)")

    def onCancel(self):
        if self.radiograph.cancel() | (self._operation is not None) | (self._imageOperation is not None):
            for op in (self._operation, self._imageOperation):
                if op is not None:
                    op.cancel()
            self._operation = self._imageOperation = None
            self.timer.stop()
            self._status("cancelled: nothing was added to the scene")
            self._updateButtons()


class SpineAILogic(ScriptedLoadableModuleLogic, ClassifyLogic):
    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        ClassifyLogic.__init__(self)
        self._radiomics = None
        self._image = None

    def getParameterNode(self):
        return SpineAIParameterNode(super().getParameterNode())

    def radiomics(self, runner=None):
        """SpineAIRadiomics' logic, for lesions given as segmentations."""
        from SpineAIRadiomicsLib.logic import RadiomicsLogic

        if self._radiomics is None or runner is not None:
            self._radiomics = RadiomicsLogic(runner=runner)
        return self._radiomics

    def image(self, runner=None):
        """The image-model logic (Grad-CAM heatmap nodes)."""
        from SpineAILib.image_logic import ImageClassifyLogic

        if self._image is None or runner is not None:
            self._image = ImageClassifyLogic(runner=runner)
        return self._image


class SpineAITest(ScriptedLoadableModuleTest):
    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_table_row_features_refuse_a_missing_row()

    def test_table_row_features_refuse_a_missing_row(self):
        from SpineAICommon import mrml
        from SpineAILib.logic import table_row_features

        table = mrml.new_table_node(slicer.mrmlScene, "t", ["id", "glcm_Id"], [{"id": "a", "glcm_Id": 0.5}], {"glcm_Id"})
        case, features, definition = table_row_features(table, 0)
        self.assertEqual((case, features, definition), ("a", {"glcm_Id": 0.5}, None))
        with self.assertRaisesRegex(SpineAIError, r"row 3 does not exist in 't' \(it has 1 row\(s\)\)"):
            table_row_features(table, 2)
        self.delayDisplay("SpineAI: table row test passed")
