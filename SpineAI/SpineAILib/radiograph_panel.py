"""The SpineAI panel's "Radiograph (scoliosis screening)" section: its controls, its background job
(the image classifier's runner, polled by its own timer) and its results. SpineAI.py creates it and
shares the status line, the progress bar and Cancel with it; the work is RadiographLogic's."""

from __future__ import annotations

from spineai.errors import SpineAIError


class RadiographSection:
    def __init__(self, widget):
        import qt

        self.widget, self.ui = widget, widget.ui
        self.operation = None
        self._logic = None
        self.timer = qt.QTimer()
        self.timer.setInterval(100)
        self.timer.connect("timeout()", self.poll)
        self.ui.radiographModelComboBox.connect("currentIndexChanged(int)", self.onModelChosen)
        self.ui.screenButton.connect("clicked(bool)", self.onScreen)

    def logic(self, runner=None):
        from SpineAILib.radiograph_logic import RadiographLogic

        if self._logic is None or runner is not None:
            self._logic = RadiographLogic(runner=runner)
        return self._logic

    def fillModels(self) -> None:
        """The registry's scoliosis models; the shipped demonstration unless the user chose another."""
        from spineai.imaging.radiograph_classifier import MODEL_ID, MODEL_VERSION

        combo, p = self.ui.radiographModelComboBox, self.widget._parameterNode
        combo.blockSignals(True)
        combo.clear()
        try:
            for model_id, label in self.logic().listModels():
                combo.addItem(label, model_id)
        except (SpineAIError, ImportError, AttributeError) as exc:
            self.widget._status(f"model registry unavailable: {exc}", error=True)
        combo.blockSignals(False)
        if p is not None:
            combo.setCurrentIndex(max(combo.findData(p.radiographModelId or f"{MODEL_ID}@{MODEL_VERSION}"), 0))
            self.onModelChosen(combo.currentIndex)

    def onModelChosen(self, index) -> None:
        self.widget._parameterNode.radiographModelId = self.ui.radiographModelComboBox.itemData(index) or ""

    def updateButtons(self, p) -> None:
        self.ui.screenButton.enabled = bool(p and p.radiographVolume and self.operation is None)

    def onScreen(self) -> None:
        from SpineAICommon.jobs import ProcessRunner

        p = self.widget._parameterNode
        try:
            self.widget._ensureDependencies("classify", "deep")
            self.operation = self.logic(ProcessRunner()).startScreening(
                p.radiographVolume, p.radiographModelId or None, forceCpu=p.forceCpu)
        except SpineAIError as exc:
            self.widget._status(str(exc), error=True)
            return
        self.widget._status("screening the radiograph in the background...")
        self.widget._updateButtons()
        self.timer.start()

    def poll(self) -> None:
        status = self.operation.poll()
        bar = self.ui.progressBar
        bar.maximum, bar.value = max(status.total, 1), status.done
        if not status.finished:
            return
        self.timer.stop()
        op, self.operation = self.operation, None
        try:
            screening, heat, curve, lines = self.logic().finish(op)
            self.ui.radiographBannerLabel.text = "\n".join(screening.banners)
            self.ui.radiographBannerLabel.visible = bool(screening.banners)
            self.ui.radiographResultTextEdit.plainText = screening.text()
            drawn = "; centre line and end-vertebra lines drawn" if curve is not None else "; no markups (no Cobb angle)"
            self.widget._status(f"heatmap '{heat.GetName()}' shown over the film{drawn}")
        except SpineAIError as exc:
            self.widget._status(str(exc), error=True)
        self.widget._updateButtons()

    def cancel(self) -> bool:
        """Stop a running screening (nothing is added to the scene); whether one was running."""
        if self.operation is None:
            return False
        self.operation.cancel()
        self.operation = None
        self.timer.stop()
        return True
