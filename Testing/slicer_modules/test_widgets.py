"""Widget code (setup, enter/exit, the polling timer, Cancel, failed installs) over Slicer's real
parameter node wrapper and GUI connectors, with the Qt widgets stood in (see slicer_harness.py)."""

from __future__ import annotations

import subprocess
import time

import pytest

import slicer

from SpineAICommon import mrml
from SpineAICommon.dependencies import slicer_dependency_installer

from scene_snapshot import scene_snapshot


@pytest.fixture
def make_widget():
    """``make_widget(module)``: the module's panel as Slicer creates it; cleaned up afterwards."""
    import qt

    made = []

    def make(mod, name):
        panel = qt.QWidget()  # the qSlicerScriptedLoadableModuleWidget Slicer passes as parent
        panel.isEntered = True
        widget = getattr(mod, f"{name}Widget")(panel)
        widget.setup()
        made.append(widget)
        return widget

    yield make
    for widget in made:
        widget.cleanup()  # what Slicer calls when the module is unloaded


@pytest.fixture
def radiomics(module_files, scene, make_widget):
    mod = module_files("SpineAIRadiomics")
    volume, points, vertebrae = mod.SpineAIRadiomicsLogic().loadPhantom("MET", seed=5)
    return make_widget(mod, "SpineAIRadiomics"), volume, points, vertebrae


def _run_timer(widget, timeout=120.0):
    end = time.monotonic() + timeout
    while widget.timer.isActive():
        assert time.monotonic() < end, "the job did not finish"
        widget.timer.fire()
        time.sleep(0.05)


def test_setup_binds_the_panel_to_the_parameter_node(radiomics):
    widget, volume, points, vertebrae = radiomics
    p, ui = widget._parameterNode, widget.ui
    assert p.inputVolume is volume and ui.inputVolumeSelector.currentNode() is volume
    assert [text for text, _ in ui.modeComboBox._items] == ["lesion", "vertebral-body"]
    assert not ui.segmentButton.enabled and not ui.cancelButton.enabled  # no points chosen yet
    ui.lesionPointsSelector.setCurrentNode(points)
    ui.lesionPointsSelector.currentNodeChanged.emit(points)  # the user picks the point list
    assert p.lesionPoints is points and ui.segmentButton.enabled
    ui.modeComboBox.currentIndex = 1
    ui.modeComboBox.currentIndexChanged.emit(1)
    assert p.mode == "vertebral-body"


def test_refine_needs_a_result_corrective_points_and_the_learned_method(radiomics, scene):
    widget, volume, points, vertebrae = radiomics
    p, ui = widget._parameterNode, widget.ui
    assert [text for text, _ in ui.methodComboBox._items] == ["auto", "deep", "classic"] and p.method == "auto"
    p.lesionPoints = points
    p.mode = "vertebral-body"
    p.outputSegmentation = vertebrae
    assert not ui.refineButton.enabled  # no corrective points yet
    add = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "Add")
    add.AddControlPoint(0.0, 0.0, 0.0, "missed")
    p.addPoints = add
    assert ui.refineButton.enabled
    p.method = "classic"
    assert not ui.refineButton.enabled  # the level set takes no corrective clicks
    p.method = "deep"
    p.mode = "lesion"
    assert not ui.refineButton.enabled
    p.forceCpu = True
    assert ui.forceCpuCheckBox.checked is True


def test_exit_disconnects_and_enter_reconnects(radiomics):
    widget, volume, points, vertebrae = radiomics
    p, ui = widget._parameterNode, widget.ui
    widget.exit()
    ui.useExistingSegmentationCheckBox.checked = True
    ui.useExistingSegmentationCheckBox.stateChanged.emit(2)
    assert p.useExistingSegmentation is False  # a hidden panel does not write the parameter node
    widget.enter()
    assert ui.useExistingSegmentationCheckBox.checked is False  # the panel shows the node again
    p.useExistingSegmentation = True
    assert ui.useExistingSegmentationCheckBox.checked is True and not ui.lesionPointsSelector.enabled


def test_segment_button_runs_in_the_background_and_adds_a_visible_segmentation(radiomics, scene):
    widget, volume, points, vertebrae = radiomics
    widget._parameterNode.lesionPoints = points
    widget._parameterNode.boundingSegmentation = vertebrae
    widget.ui.segmentButton.emit("clicked", True)
    assert widget.timer.isActive() and widget.ui.cancelButton.enabled and not widget.ui.segmentButton.enabled
    _run_timer(widget)
    node = widget._parameterNode.outputSegmentation
    assert node is not None and scene.IsNodePresent(node), widget.ui.statusLabel.text
    # The status line names the method and its time (lesions are always classic).
    assert "created segmentation 'SpineAI phantom MET SpineAI lesions' (MET lesion L3: classic, " in widget.ui.statusLabel.text
    assert node.GetSegmentation().ContainsRepresentation("Closed surface")
    assert widget.ui.segmentButton.enabled and not widget.ui.cancelButton.enabled


def test_poll_is_not_reentered_by_processing_events(radiomics, scene, monkeypatch):
    widget, volume, points, vertebrae = radiomics
    widget._parameterNode.lesionPoints = points
    # Qt delivers a pending timeout inside processEvents: if _poll processed events, it would re-enter.
    monkeypatch.setattr(slicer.app, "processEvents", lambda *a: widget.timer.fire())
    widget.onSegment()
    op, depth, deepest = widget._operation, [0], [0]
    poll = op.poll

    def counting_poll():
        depth[0] += 1
        deepest[0] = max(deepest[0], depth[0])
        try:
            return poll()
        finally:
            depth[0] -= 1

    op.poll = counting_poll
    before = {n for n in scene_snapshot(scene)}
    _run_timer(widget)
    assert deepest[0] == 1
    added = [scene.GetNodeByID(i) for i in scene_snapshot(scene) if i not in before]
    assert [n.GetClassName() for n in added if n.IsA("vtkMRMLSegmentationNode")] == ["vtkMRMLSegmentationNode"]


def test_cancel_stops_the_job_and_adds_nothing(radiomics, scene):
    widget, volume, points, vertebrae = radiomics
    widget._parameterNode.lesionPoints = points
    widget.onSegment()
    before = scene_snapshot(scene)
    folder = widget._operation.job.folder
    widget.ui.cancelButton.emit("clicked", True)
    assert widget._operation is None and not widget.timer.isActive()
    assert "cancelled: nothing was added to the scene" in widget.ui.statusLabel.text
    assert widget.ui.segmentButton.enabled and not widget.ui.cancelButton.enabled
    assert not folder.exists()
    assert scene_snapshot(scene) == before


def test_a_failed_install_shows_a_dialog_and_starts_nothing(radiomics, scene, monkeypatch):
    widget, volume, points, vertebrae = radiomics
    widget._parameterNode.lesionPoints = points
    dialogs = []

    def pip_install(requirement):
        raise subprocess.CalledProcessError(1, ["pip", "install", requirement], output="Could not find a version")

    monkeypatch.setattr(slicer.util, "pip_install", pip_install)
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay", lambda *a, **k: True)
    monkeypatch.setattr(slicer.util, "errorDisplay", lambda text, **k: dialogs.append((text, k)))
    widget._installer = slicer_dependency_installer(progress=widget._showInstallProgress)
    widget._installer.finder = lambda module: None if module == "scipy" else object()
    before = scene_snapshot(scene)
    widget.ui.segmentButton.emit("clicked", True)
    (text, options), = dialogs
    assert text.startswith("Installing scipy>=1.11 failed (CalledProcessError") and "What to do:" in text
    assert options["detailedText"] == "Could not find a version"
    assert "Installing scipy>=1.11 failed" in widget.ui.statusLabel.text
    assert widget._operation is None and not widget.timer.isActive()
    assert scene_snapshot(scene) == before


def test_classify_and_lumbar_panels_set_up_enter_and_exit(module_files, scene, make_widget):
    classify = make_widget(module_files("SpineAI"), "SpineAI")
    classify.enter()
    assert classify.ui.modelComboBox.itemData(0) == "" and not classify.ui.classifyButton.enabled
    classify._parameterNode.useTable = True
    assert classify.ui.useTableCheckBox.checked and classify.ui.tableRowSpinBox.enabled
    assert not classify.ui.inputVolumeSelector.enabled
    classify.exit()

    lumbar = make_widget(module_files("SpineAILumbar"), "SpineAILumbar")
    from spineai.phantom import make_spine_phantom

    sagittal = mrml.add_volume_node(scene, make_spine_phantom(seed=2, lesion_kind=None).image, "sag T2")
    lumbar._parameterNode.sagittalT2 = sagittal
    assert lumbar.ui.sagittalT2Selector.currentNode() is sagittal
    assert lumbar.ui.gradeButton.enabled and not lumbar.ui.cancelButton.enabled
    lumbar.ui.checkButton.emit("clicked", True)
    assert lumbar.ui.statusLabel.text == "1 of 3 series usable; grading uses the series present."
    assert "Sagittal T1: missing" in lumbar.ui.reportTextEdit.plainText
    lumbar._parameterNode.sagittalT2 = None
    assert not lumbar.ui.gradeButton.enabled
    lumbar.ui.detectButton.emit("clicked", True)  # the name "sag T2" says what the series is
    assert lumbar._parameterNode.sagittalT2 is sagittal and lumbar.ui.gradeButton.enabled
    assert "detected 1 of 3 series from their descriptions: sag T2" in lumbar.ui.statusLabel.text


@pytest.fixture
def cohort_database(tmp_path):
    """A 3-case generated cohort registered in a database (no step run yet: every case to do)."""
    from spineai.cohort import CohortDB, read_manifest
    from spineai.cohort.synthetic import write_synthetic_cohort

    manifest = write_synthetic_cohort(tmp_path / "cohort", 3, seed=6)
    path = tmp_path / "cohort.sqlite"
    with CohortDB(path) as db:
        db.register(read_manifest(manifest))
    return path


def test_cohort_section_opens_steps_segments_and_saves_back(module_files, scene, make_widget, cohort_database):
    import qt
    import numpy as np

    from spineai.cohort import CohortDB

    widget = make_widget(module_files("SpineAIRadiomics"), "SpineAIRadiomics")
    p, ui = widget._parameterNode, widget.ui
    assert not ui.cohortNextButton.enabled and not ui.cohortSaveButton.enabled
    ui.cohortPathLineEdit.currentPath = ""
    ui.cohortOpenButton.emit("clicked", True)
    assert "choose a cohort database" in ui.statusLabel.text and not ui.cohortNextButton.enabled
    ui.cohortPathLineEdit.currentPath = str(cohort_database.with_name("absent.sqlite"))
    ui.cohortOpenButton.emit("clicked", True)
    assert "no cohort database at" in ui.statusLabel.text and ui.cohortCountsLabel.text == "No cohort open."

    ui.cohortPathLineEdit.currentPath = str(cohort_database)
    ui.cohortOpenButton.emit("clicked", True)
    assert ui.cohortCountsLabel.text == "3 to do, 0 segmented, 0 reviewed"
    assert ui.cohortNextButton.enabled and not ui.cohortSaveButton.enabled

    ui.cohortNextButton.emit("clicked", True)
    volume = p.inputVolume
    assert volume.GetName() == "case000" and ui.inputVolumeSelector.currentNode() is volume
    assert p.lesionPoints.GetNumberOfControlPoints() == 1 and p.outputSegmentation is None  # no mask yet
    assert ui.cohortLabelLineEdit.text == "SD"  # the manifest's label, for the reviewer to confirm
    assert "loaded case case000 (patient P000, to do): no segmentation yet" in ui.statusLabel.text
    assert ui.cohortSaveButton.enabled and ui.segmentButton.enabled

    ui.cohortReviewerLineEdit.text = ""
    ui.cohortSaveButton.emit("clicked", True)
    assert "a reviewed case needs the reviewer's name" in ui.statusLabel.text
    ui.segmentButton.emit("clicked", True)  # the panel's own Segment, on the cohort case
    assert not ui.cohortSaveButton.enabled and not ui.cohortNextButton.enabled  # not while a job runs
    _run_timer(widget)
    segmentation = p.outputSegmentation
    assert segmentation is not None, ui.statusLabel.text
    expected = mrml.mask_from_segment(segmentation, mrml.segment_ids(segmentation)[0], widget.cohortPanel.logic.volume)
    assert expected.any()
    ui.cohortLabelLineEdit.text, ui.cohortReviewerLineEdit.text = "MET", " Dr Reviewer "
    ui.cohortSaveButton.emit("clicked", True)
    assert "saved case case000 as reviewed by Dr Reviewer; loaded case case001 (patient P000, to do): its " \
           "segmentation" in ui.statusLabel.text
    assert ui.cohortCountsLabel.text == "2 to do, 0 segmented, 1 reviewed"
    with CohortDB(cohort_database) as db:
        row = db.case_row("case000")
        assert (row["annotation_status"], row["reviewer"], row["annotation_label"]) == \
            ("reviewed", "Dr Reviewer", "MET")
        assert np.array_equal(db.mask("case000"), expected)
    # the saved case's loaded nodes left the scene; the segmentation the user made stays
    assert not scene.IsNodePresent(volume) and scene.IsNodePresent(segmentation)
    assert p.inputVolume.GetName() == "case001" and p.outputSegmentation.GetName() == "case001 segmentation"
    assert qt.QSettings().value("SpineAI/cohortReviewer") == "Dr Reviewer"

    # case001 keeps its loaded mask; case002's image is gone: an error on the status line, nothing added
    with CohortDB(cohort_database) as db:
        image = db.case_row("case002")["image"]
    import os

    os.remove(image)
    ui.cohortSaveButton.emit("clicked", True)
    nodes = scene_snapshot(scene)
    assert "saved case case001 as reviewed by Dr Reviewer; case case002: " in ui.statusLabel.text
    assert "#b00020" in ui.statusLabel.text  # shown as an error
    assert ui.cohortCountsLabel.text == "1 to do, 0 segmented, 2 reviewed"
    assert not ui.cohortSaveButton.enabled and ui.cohortNextButton.enabled
    ui.cohortNextButton.emit("clicked", True)  # only case002 is left: it fails again, nothing added
    assert "case case002: " in ui.statusLabel.text and scene_snapshot(scene) == nodes
    with CohortDB(cohort_database) as db:
        assert db.case_row("case001")["annotation_label"] == "MET" and db.mask("case001").any()


def test_radiograph_section_screens_a_film_in_the_background_and_refuses_a_volume(module_files, scene, make_widget,
                                                                                  phantom_met):
    pytest.importorskip("torch", reason="the radiograph model needs torch")
    pytest.importorskip("monai", reason="the radiograph model needs MONAI")
    from spineai.imaging.radiograph_classifier import DEMONSTRATION_NOTICE, MODEL_ID, MODEL_VERSION
    from spineai.imaging.radiograph_synth import generate_radiograph

    widget = make_widget(module_files("SpineAI"), "SpineAI")
    widget.enter()
    p, ui = widget._parameterNode, widget.ui
    # the shipped demonstration is the default model
    assert p.radiographModelId == f"{MODEL_ID}@{MODEL_VERSION}"
    assert ui.radiographModelComboBox.itemData(ui.radiographModelComboBox.currentIndex) == p.radiographModelId
    assert not ui.screenButton.enabled  # no film yet

    # a 3D volume is refused with a message, and nothing starts
    mr = mrml.add_volume_node(scene, phantom_met.image, "sag MR")
    p.radiographVolume = mr
    assert ui.radiographVolumeSelector.currentNode() is mr and ui.screenButton.enabled
    before = scene_snapshot(scene)
    ui.screenButton.emit("clicked", True)
    assert "radiograph 'sag MR'" in ui.statusLabel.text and "must be a 2D image" in ui.statusLabel.text
    assert widget.radiograph.operation is None and not widget.radiograph.timer.isActive()
    assert scene_snapshot(scene) == before

    # a generated film as a one-slice volume: Screen runs in the background, Cancel is offered
    film = mrml.add_volume_node(scene, generate_radiograph(30, seed=12).volume(), "film")
    p.radiographVolume = film
    p.forceCpu = True
    ui.screenButton.emit("clicked", True)
    assert widget.radiograph.timer.isActive() and ui.cancelButton.enabled and not ui.screenButton.enabled
    _run_timer(widget.radiograph, timeout=600.0)
    assert ui.screenButton.enabled and not ui.cancelButton.enabled
    assert "shown over the film; centre line and end-vertebra lines drawn" in ui.statusLabel.text, ui.statusLabel.text
    assert ui.progressBar.value == ui.progressBar.maximum == 3
    text = ui.radiographResultTextEdit.plainText
    assert "DEMONSTRATION" in text and ui.radiographBannerLabel.text == DEMONSTRATION_NOTICE
    assert ui.radiographBannerLabel.visible
    assert "P(scoliosis) " in text and "threshold " in text and "Cobb angle " in text and " deg" in text
    assert text.splitlines()[1].startswith("film: ")
    heat = scene.GetFirstNodeByName("film Grad-CAM (scoliosis)")
    assert heat is not None and heat.GetImageData().GetDimensions() == film.GetImageData().GetDimensions()
    assert scene.GetFirstNodeByName("film spine centre line").IsA("vtkMRMLMarkupsCurveNode")
    for end in ("upper", "lower"):
        assert scene.GetFirstNodeByName(f"film {end} end vertebra").GetNumberOfControlPoints() == 2


def test_cancel_stops_the_screening_and_adds_nothing(module_files, scene, make_widget):
    pytest.importorskip("torch", reason="the radiograph model needs torch")
    from spineai.imaging.radiograph_synth import generate_radiograph

    widget = make_widget(module_files("SpineAI"), "SpineAI")
    widget.enter()
    widget._parameterNode.radiographVolume = mrml.add_volume_node(scene, generate_radiograph(0, seed=3).volume(), "film")
    widget.radiograph.onScreen()
    folder = widget.radiograph.operation.job.folder
    before = scene_snapshot(scene)
    widget.ui.cancelButton.emit("clicked", True)
    assert widget.radiograph.operation is None and not widget.radiograph.timer.isActive()
    assert "cancelled: nothing was added to the scene" in widget.ui.statusLabel.text
    assert widget.ui.screenButton.enabled and not folder.exists()
    assert scene_snapshot(scene) == before
